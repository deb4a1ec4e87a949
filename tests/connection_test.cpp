// Pipe and Connection: values and bytes, EOF, type checks, fds, large
// messages, signals, and CPython's framing.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/uio.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"

using namespace std::chrono_literals;
extern char** environ;

namespace conn_targets {

// Receives values and sends each back, until it gets -1.
void echo_ints(mpxx::Connection c) {
  for (;;) {
    int v = c.recv<int>();
    c.send(v);
    if (v < 0) return;
  }
}

void send_big(mpxx::Connection c, std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 7);
  c.send(v);
}

// A large value, then a small one: what a receiver expecting the wrong
// type for the first still gets right for the second.
void send_big_then_seven(mpxx::Connection c) {
  c.send(std::vector<std::uint8_t>(8u << 20, 3));
  c.send(7);
}

// A value whose decoding fails half way through a large message.
struct HalfReadable {
  std::vector<std::uint32_t> a, b;
  template <class Ar>
  void save(Ar& ar) const {
    ar(a, b);
  }
  template <class Ar>
  void load(Ar& ar) {
    ar(a);
    throw std::runtime_error("refusing the second half");
  }
};

void send_half_readable_then_seven(mpxx::Connection c) {
  c.send(HalfReadable{std::vector<std::uint32_t>(2u << 20, 1), std::vector<std::uint32_t>(2u << 20, 2)});
  c.send(7);
}

// Many small parts, several MiB in all.
void send_many_strings(mpxx::Connection c) {
  std::vector<std::string> v;
  for (int i = 0; i < 100000; ++i) v.push_back(std::string(static_cast<std::size_t>(i % 61), 'a' + i % 26));
  c.send(v);
}

void bump_received_value(mpxx::Connection c) {
  auto v = c.recv<mpxx::Value<int>>();
  v.value() += 41;
  c.send(std::string("done"));
}

void send_after(mpxx::Connection c, int ms, std::string text) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  c.send(text);
}

void close_without_sending(mpxx::Connection c) { c.close(); }

void sleep_then_close(mpxx::Connection c, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  c.close();
}

// Sends (producer, i) for i in [0, n) on a write end it shares with others.
void send_numbered(mpxx::Connection c, int producer, int n) {
  for (int i = 0; i < n; ++i) c.send(std::pair<int, int>(producer, i));
}

// A pause from a fixed pattern: none, a few microseconds, past the
// receiver's spin, or long enough for it to be asleep.
void pause_for(int i) {
  static constexpr int kMicros[] = {0, 0, 3, 0, 80, 0, 0, 700, 0, 10, 0, 2000};
  int us = kMicros[i % std::size(kMicros)];
  if (us) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

// The ring cases below run in a child, so that a bug that blocks forever
// fails the test (the parent's join times out) instead of hanging it.

// Sends a batch, then reads it, in one thread: the ring's ~8 KiB must not
// make a send wait for a reader where a socket would have taken the data.
void batch_then_read() {
  auto [a, b] = mpxx::Pipe();
  for (int i = 0; i < 60; ++i) a.send_bytes(std::string(1000, static_cast<char>('a' + i % 26)));
  for (int i = 0; i < 60; ++i)
    if (b.recv_bytes() != std::string(1000, static_cast<char>('a' + i % 26)))
      throw std::runtime_error("wrong message");
}

// A send that fails on the socket (too many fds) must not leave its marker
// in the ring for the reader to wait behind.
void failed_send_then_more() {
  auto [a, b] = mpxx::Pipe();
  std::vector<mpxx::Connection> many;
  for (int i = 0; i < 130; ++i) {
    auto [x, y] = mpxx::Pipe();
    many.push_back(x);
    many.push_back(y);
  }
  bool refused = false;
  try {
    a.send(many);
  } catch (const mpxx::ValueError&) {
    refused = true;
  }
  if (!refused) throw std::runtime_error("260 fds in one message were not refused");
  // What follows, through the ring and through the socket, keeps its order.
  a.send(42);
  a.send(std::string(100 << 10, 'y'));
  a.send(43);
  if (b.recv<int>() != 42 || b.recv<std::string>() != std::string(100 << 10, 'y') || b.recv<int>() != 43)
    throw std::runtime_error("wrong message");
}

// One thread sleeps in recv while another polls the same end: the poller
// must not swallow the bell that wakes the receiver.
void poll_while_another_thread_receives() {
  constexpr int kN = 8000;
  auto [a, b] = mpxx::Pipe();
  std::atomic<int> received{0};
  std::atomic<bool> stop{false};
  std::thread receiver([&, b = b]() mutable {
    for (int i = 0; i < kN; ++i) {
      b.recv<int>();
      received.fetch_add(1);
    }
  });
  std::thread poller([&, b = b]() mutable {
    while (!stop) b.poll(0s);
  });
  for (int i = 0; i < kN; ++i) {
    std::this_thread::sleep_for(150us);
    a.send(i);
    auto t0 = std::chrono::steady_clock::now();
    while (received.load() != i + 1) {
      if (std::chrono::steady_clock::now() - t0 > 5s) {
        std::fprintf(stderr, "message %d was never received\n", i);
        std::_Exit(3);
      }
      std::this_thread::yield();
    }
  }
  stop = true;
  poller.join();
  receiver.join();
}

// One thread receives messages that take the socket while another polls
// the same end: the poller must take none of their bytes for bells,
// however the two interleave (payloads full of 0x80, a bell's value, too).
void poll_while_another_thread_receives_large() {
  constexpr int kN = 400;
  auto message = [](int i) {
    return i % 20 == 0 ? std::string(512 << 10, '\x80') : std::string(3000, static_cast<char>('a' + i % 26));
  };
  auto [a, b] = mpxx::Pipe();
  std::atomic<bool> stop{false};
  std::thread poller([&stop, b = b]() mutable {
    while (!stop) b.poll(0s);
  });
  std::thread writer([&message, a = a]() mutable {
    for (int i = 0; i < kN; ++i) {
      std::this_thread::sleep_for(60us);
      a.send_bytes(message(i));
    }
  });
  for (int i = 0; i < kN; ++i) {
    if (b.recv_bytes() != message(i)) {
      std::fprintf(stderr, "message %d arrived wrong\n", i);
      std::_Exit(3);
    }
  }
  stop = true;
  poller.join();
  writer.join();
}

// Echoes strings after uneven pauses, until an empty one.
void echo_with_pauses(mpxx::Connection c) {
  for (int i = 0;; ++i) {
    auto v = c.recv<std::string>();
    pause_for(i * 7 + 3);
    c.send(v);
    if (v.empty()) return;
  }
}


// A large value of several fields (28 MiB: the receiver reads it from the
// sender's memory with two threads, a half each).
struct Blocks {
  std::vector<std::uint32_t> a;
  std::string s;
  int mid = 0;
  std::vector<double> d;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(a, s, mid, d);
  }
  static Blocks make() {
    Blocks b;
    b.a.resize((20u << 20) / 4 + 3);
    for (std::size_t i = 0; i < b.a.size(); ++i) b.a[i] = static_cast<std::uint32_t>(i * 2654435761u);
    b.s.assign((3u << 20) + 5, 'q');
    for (std::size_t i = 0; i < b.s.size(); i += 4099) b.s[i] = static_cast<char>('a' + i % 26);
    b.mid = 1234567;
    b.d.resize((5u << 20) / 8 + 1);
    for (std::size_t i = 0; i < b.d.size(); ++i) b.d[i] = static_cast<double>(i) * 0.5;
    return b;
  }
  bool operator==(const Blocks&) const = default;
};

void send_blocks(mpxx::Connection c) { c.send(Blocks::make()); }

// Receives Blocks with process_vm_readv refused by a seccomp filter (as in
// a container that forbids it): the sender must push the payload instead.
void recv_blocks_without_peer_reads(mpxx::Connection c) {
  if (!mpxx_test::refuse_peer_reads(EPERM, false)) return c.send(std::string("seccomp: ") + std::strerror(errno));
  iovec none{nullptr, 0};
  if (::process_vm_readv(::getppid(), &none, 1, &none, 1, 0) != -1 || errno != EPERM)
    return c.send(std::string("the filter did not refuse process_vm_readv"));
  c.send(std::string("ready"));
  const Blocks got = c.recv<Blocks>();
  c.send(std::string(got == Blocks::make() ? "same" : "different"));
}

// Takes the first part of a large vector, then fails to read the rest.
void recv_vector_failing_half_way(mpxx::Connection c) {
  if (!mpxx_test::refuse_peer_reads(EFAULT, true)) return c.send(std::string("seccomp: ") + std::strerror(errno));
  c.send(std::string("ready"));
  try {
    c.recv<std::vector<std::uint8_t>>();
    c.send(std::string("received"));
  } catch (const mpxx::OSError& e) {
    c.send(std::string(e.code() == EFAULT ? "EFAULT" : e.what()));
  }
}

// Receives a Connection together with a large vector, and answers on it.
void recv_connection_with_vector(mpxx::Connection c) {
  auto [back, v] = c.recv<std::pair<mpxx::Connection, std::vector<std::uint8_t>>>();
  back.send(v.size() == (6u << 20) && v[12345] == 9 ? std::string("whole") : std::string("broken"));
}

// Starts a child that filters its own system calls and answers "ready",
// or why it cannot.
std::string start_filtered(mpxx::Process& p, mpxx::Connection& a, mpxx::Connection& b) {
  p.start();
  b.close();
  return a.recv<std::string>();
}

// A writer of a shared end killed at random (PipeDeath.RandomWriterKills...):
// messages of 2-65 words (the ring), 1-60k words (the socket, in pieces) or
// 256k-1M words (read from the writer's memory), words following from
// (id, seq).
using Words = std::vector<std::uint32_t>;

void send_numbered_forever(mpxx::Connection c, std::uint32_t id) {
  std::mt19937 rng(id);
  for (std::uint32_t seq = 0;; ++seq) {
    const unsigned kind = rng() % 10;
    const std::size_t n = kind < 6 ? 2 + rng() % 64 : kind < 9 ? 1024 + rng() % 60000 : (256u << 10) + rng() % (768u << 10);
    Words v(n);
    for (std::size_t i = 2; i < n; ++i) v[i] = mpxx_test::numbered_word(id, seq, i);
    v[0] = id;
    v[1] = seq;
    c.send(v);
    if (rng() % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
  }
}

}  // namespace conn_targets

namespace {
using namespace conn_targets;

struct Point {
  double x, y;
  bool operator==(const Point&) const = default;
};

class ConnTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(ConnTest);

TEST(Pipe, ValuesBothWays) {
  auto [a, b] = mpxx::Pipe();
  a.send(42);
  a.send(std::string("hello"));
  a.send(Point{1, 2});
  b.send(std::map<std::string, std::vector<int>>{{"k", {1, 2}}});
  EXPECT_EQ(b.recv<int>(), 42);
  EXPECT_EQ(b.recv<std::string>(), "hello");
  EXPECT_EQ(b.recv<Point>(), (Point{1, 2}));
  auto m = a.recv<std::map<std::string, std::vector<int>>>();
  EXPECT_EQ(m.at("k"), (std::vector<int>{1, 2}));
  EXPECT_TRUE(a.readable() && a.writable());
}

TEST(Pipe, TypeMismatchIsAnErrorNotGarbage) {
  auto [a, b] = mpxx::Pipe();
  a.send(42);
  a.send(7);
  EXPECT_THROW(b.recv<std::string>(), mpxx::ProtocolError);
  EXPECT_EQ(b.recv<int>(), 7);  // the stream is still in step
}

TEST(Pipe, BytesOffsetSizeAndRecvInto) {
  auto [a, b] = mpxx::Pipe();
  a.send_bytes("hello world");
  std::string s = "0123456789";
  a.send_bytes(std::as_bytes(std::span(s.data(), s.size())), 2, 3);
  a.send_bytes("");
  EXPECT_EQ(b.recv_bytes(), "hello world");
  EXPECT_EQ(b.recv_bytes(), "234");
  EXPECT_EQ(b.recv_bytes(), "");
  EXPECT_THROW(a.send_bytes("abc", 0, 5), mpxx::ValueError);

  a.send_bytes("abcdef");
  std::array<std::byte, 10> buf{};
  EXPECT_EQ(b.recv_bytes_into(buf, 4), 6u);
  EXPECT_EQ(buf[4], std::byte{'a'});
  a.send_bytes("too long for it");
  try {
    b.recv_bytes_into(buf, 0);
    FAIL();
  } catch (const mpxx::BufferTooShort& e) {
    EXPECT_EQ(e.message(), "too long for it");
  }
  a.send_bytes("raw");
  EXPECT_THROW(b.recv<std::string>(), mpxx::ProtocolError);  // not sent with send()
}

TEST(Pipe, MaxlengthClosesTheConnection) {
  auto [a, b] = mpxx::Pipe();
  a.send_bytes("0123456789");
  EXPECT_THROW(b.recv_bytes(5), mpxx::OSError);
  EXPECT_TRUE(b.closed());
}

TEST(Pipe, EofAndClosedEnds) {
  auto [a, b] = mpxx::Pipe();
  a.send(1);
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_THROW(a.send(2), mpxx::OSError);
  EXPECT_EQ(b.recv<int>(), 1);  // what was sent before the close still arrives
  EXPECT_THROW(b.recv<int>(), mpxx::EOFError);
  EXPECT_THROW(b.send(3), mpxx::OSError);  // EPIPE
}

TEST(Pipe, OneWay) {
  auto [r, w] = mpxx::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  EXPECT_THROW(r.send(1), mpxx::OSError);
  EXPECT_THROW(w.recv<int>(), mpxx::OSError);
  w.send(5);
  EXPECT_EQ(r.recv<int>(), 5);
}

TEST(Pipe, PollAndWaitWithANegativeTimeoutReturnAtOnce) {
  auto [a, b] = mpxx::Pipe();
  double t = mpxx_test::seconds([&] {
    EXPECT_FALSE(b.poll(-1s));
    EXPECT_FALSE(b.poll(std::chrono::duration<double>(-0.25)));
    EXPECT_TRUE(mpxx::wait(std::vector<mpxx::Connection>{b}, -1s).empty());
  });
  EXPECT_LT(t, 1.0);
  a.send(7);
  EXPECT_TRUE(b.poll(-1s));  // what is there is still seen
  EXPECT_EQ(mpxx::wait(std::vector<mpxx::Connection>{b}, -1s).size(), 1u);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(Pipe, PollWithAnEnormousTimeoutWaitsForAMessage) {
  // hours::max() overflows a count of nanoseconds: it must mean "forever".
  if (!mpxx_test::syscalls_visible()) GTEST_SKIP() << "/proc/<pid>/syscall is not readable here";
  auto [a, b] = mpxx::Pipe();
  std::thread sender([&a] {
    mpxx_test::wait_asleep_in(::getpid(), SYS_poll);
    a.send(1);
  });
  EXPECT_TRUE(b.poll(std::chrono::hours::max()));
  sender.join();
  EXPECT_EQ(b.recv<int>(), 1);
}

TEST(Connection, ANegativeHandleIsAValueError) {
  try {
    mpxx::Connection c(-1, true, true, false);
    FAIL() << "Connection(-1) was accepted";
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid handle"), std::string::npos) << e.what();
  }
  auto [a, b] = mpxx::Pipe();
  int fd = ::dup(a.fileno());
  EXPECT_THROW(mpxx::Connection(fd, false, false, false), mpxx::ValueError);
  ::close(fd);  // refused, so still the caller's
}

TEST(Pipe, Poll) {
  auto [a, b] = mpxx::Pipe();
  EXPECT_FALSE(b.poll());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(b.poll(200ms));
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  a.send(1);
  EXPECT_TRUE(b.poll());
  EXPECT_GE(b.fileno(), 0);
}

TEST(Pipe, ConnectionsTravelThroughConnections) {
  auto [a, b] = mpxx::Pipe();
  auto [x, y] = mpxx::Pipe();
  a.send(y);
  auto y2 = b.recv<mpxx::Connection>();
  x.send(std::string("via the passed end"));
  EXPECT_EQ(y2.recv<std::string>(), "via the passed end");
}

TEST_P(ConnTest, EchoWithAChild) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(opts(), echo_ints, b);
  p.start();
  b.close();  // the child holds its own end
  for (int i = 0; i < 100; ++i) {
    a.send(i);
    EXPECT_EQ(a.recv<int>(), i);
  }
  a.send(-1);
  EXPECT_EQ(a.recv<int>(), -1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(ConnTest, SharedObjectsCrossAPipe) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(opts(), bump_received_value, b);
  p.start();
  mpxx::Value<int> v(1);
  a.send(v);
  EXPECT_EQ(a.recv<std::string>(), "done");
  EXPECT_EQ(v.value(), 42);
  p.join();
}

TEST_P(ConnTest, HundredMiBMessage) {
  constexpr std::size_t kSize = 100u << 20;
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(opts(), send_big, b, kSize);
  p.start();
  auto v = a.recv<std::vector<std::uint8_t>>();
  p.join();
  ASSERT_EQ(v.size(), kSize);
  bool ok = true;
  for (std::size_t i = 0; i < kSize; i += 4093) ok = ok && v[i] == static_cast<std::uint8_t>(i * 7);
  EXPECT_TRUE(ok);
}

// A large value is read straight into its own memory as it is decoded; a
// receiver that finds the wrong type still reads the rest of it, so the
// sender completes and the next message is intact.
TEST(PipeProcesses, AFailedDecodeOfALargeValueLeavesTheStreamIntact) {
  // The wrong type (found at once), then a decoder that fails half way.
  auto case_of = [](auto sender, auto failing_recv) {
    auto [a, b] = mpxx::Pipe();
    mpxx::Process p(sender, b);
    p.start();
    b.close();
    failing_recv(a);
    EXPECT_EQ(a.recv<int>(), 7);
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  };
  case_of(send_big_then_seven,
          [](mpxx::Connection& a) { EXPECT_THROW(a.recv<std::string>(), mpxx::ProtocolError); });
  case_of(send_half_readable_then_seven,
          [](mpxx::Connection& a) { EXPECT_THROW(a.recv<HalfReadable>(), std::runtime_error); });
}

// Trivially copyable, but encoded by a free save() that writes a large
// temporary: its bytes must be copied when encoded, never referenced.
struct Expanded {
  int seed = 0;
};
template <class Ar>
void save(Ar& ar, const Expanded& e) {
  ar(std::string(2u << 20, static_cast<char>('a' + e.seed)));
}
template <class Ar>
void load(Ar& ar, Expanded& e) {
  std::string s;
  ar(s);
  if (s.size() != (2u << 20) || s.find_first_not_of(s.front()) != std::string::npos)
    throw std::runtime_error("a temporary arrived corrupted");
  e.seed = s.front() - 'a';
}

TEST(Pipe, ValuesEncodedFromTemporariesArriveIntact) {
  auto [a, b] = mpxx::Pipe();
  std::vector<Expanded> sent{{1}, {2}, {3}};
  std::thread t([&, a = a]() mutable { a.send(sent); });
  auto got = b.recv<std::vector<Expanded>>();
  t.join();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].seed, 3);
}

// A large vector is sent from its own memory; once send() returns, the
// caller may change it without changing what was sent.
TEST(Pipe, ALargeValueMayChangeOnceSendReturns) {
  for (bool shm : {true, false}) {
    auto [a, b] = mpxx::Pipe(true, {.shared_memory = shm});
    std::vector<std::uint64_t> sent(3u << 20, 5);
    std::thread t([&, a = a]() mutable {
      a.send(sent);
      std::fill(sent.begin(), sent.end(), 6);
      a.send(std::string("after"));
    });
    auto got = b.recv<std::vector<std::uint64_t>>();
    EXPECT_EQ(b.recv<std::string>(), "after");
    t.join();
    ASSERT_EQ(got.size(), sent.size());
    EXPECT_EQ(std::count(got.begin(), got.end(), 5u), static_cast<long>(got.size())) << "shm " << shm;
  }
}

TEST(PipeProcesses, ALargeValueOfManySmallParts) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_many_strings, b);
  p.start();
  b.close();
  auto v = a.recv<std::vector<std::string>>();
  p.join();
  ASSERT_EQ(v.size(), 100000u);
  for (int i = 0; i < 100000; i += 997)
    ASSERT_EQ(v[static_cast<std::size_t>(i)], std::string(static_cast<std::size_t>(i % 61), 'a' + i % 26));
}

TEST(PipeProcesses, PeerExitGivesEof) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(close_without_sending, b);
  p.start();
  b.close();
  EXPECT_THROW(a.recv<int>(), mpxx::EOFError);
  p.join();
}

// Large values stream through a pipe of their own, so a send waits for its
// reader as in CPython. A reader that goes away must turn into an OSError in
// the sender, never a SIGPIPE that kills it; a writer that dies half way
// must turn into an EOFError in the reader.
TEST(PipeProcesses, LargeSendToAReaderThatLeavesRaises) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(sleep_then_close, b, 200);
  p.start();
  b.close();
  std::vector<std::uint8_t> big(16u << 20, 1);
  try {
    a.send(big);
    ADD_FAILURE() << "send to a reader that left did not raise";
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), EPIPE) << e.what();
  }
  sigset_t pending;
  ::sigpending(&pending);
  EXPECT_FALSE(::sigismember(&pending, SIGPIPE)) << "a SIGPIPE was left pending";
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Two processes write to one end, one of them SIGKILLed and replaced every
// 20-150 ms for 3 s, in the middle of whatever it sends (a ring record, a
// message in pieces on the socket, a value read from its memory). Every
// message received is whole and comes once, each writer's in order; a
// value whose writer died while it was read is an EOFError for that recv
// only, and reading goes on.
TEST(PipeDeath, RandomWriterKillsNeverCorruptAMessage) {
  using Clock = std::chrono::steady_clock;
  auto [a, b] = mpxx::Pipe();
  std::mt19937 rng(20261201);
  std::uint32_t next_id = 1;
  std::vector<std::unique_ptr<mpxx::Process>> writers;
  struct Killed {  // whatever leaves the test
    std::vector<std::unique_ptr<mpxx::Process>>& writers;
    ~Killed() {
      for (auto& w : writers) {
        if (w->is_alive()) w->kill();
        w->join();
      }
    }
  } killed{writers};
  auto new_writer = [&] { return std::make_unique<mpxx::Process>(send_numbered_forever, b, next_id++); };
  for (int i = 0; i < 2; ++i) {
    writers.push_back(new_writer());
    writers.back()->start();
  }
  std::set<std::uint64_t> seen;
  std::map<std::uint32_t, std::int64_t> last;  // per writer: the last seq received
  long received = 0, corrupt = 0, twice = 0, out_of_order = 0, lost = 0, kills = 0;
  auto receive_one = [&] {  // false on an EOFError
    Words v;
    try {
      v = a.recv<Words>();
    } catch (const mpxx::EOFError&) {
      ++lost;
      return false;
    }
    ++received;
    bool whole = v.size() >= 2;
    for (std::size_t i = 2; whole && i < v.size(); ++i) whole = v[i] == mpxx_test::numbered_word(v[0], v[1], i);
    if (!whole) {
      ++corrupt;
      return true;
    }
    twice += !seen.insert(std::uint64_t{v[0]} << 32 | v[1]).second;
    auto [it, first] = last.try_emplace(v[0], -1);
    out_of_order += static_cast<std::int64_t>(v[1]) <= it->second;
    it->second = v[1];
    return true;
  };
  auto next_kill = Clock::now() + 50ms;
  for (const auto until = Clock::now() + 3s; Clock::now() < until;) {
    if (a.poll(5ms)) receive_one();
    if (Clock::now() < next_kill) continue;
    auto& victim = writers[rng() % 2];
    victim->kill();
    victim->join();
    ++kills;
    victim = new_writer();
    victim->start();
    next_kill = Clock::now() + std::chrono::milliseconds(20 + rng() % 130);
  }
  for (auto& w : writers) {
    w->kill();
    w->join();
  }
  b.close();  // the end of the stream, once what was sent is read
  while (a.poll(10s) && receive_one()) {
  }
  EXPECT_EQ(corrupt, 0);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(out_of_order, 0);
  EXPECT_GT(kills, 10);
  EXPECT_GT(received, 100);
  EXPECT_LT(lost, received);
}

TEST(PipeProcesses, LargeSenderKilledHalfWayGivesEof) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_big, b, std::size_t{64} << 20);
  p.start();
  b.close();
  // The frame announcing the value arrives first; the sender then blocks
  // until its payload is read. Kill it there.
  ASSERT_TRUE(a.poll(10s));
  std::this_thread::sleep_for(100ms);
  p.kill();
  p.join();
  EXPECT_THROW(a.recv<std::vector<std::uint8_t>>(), mpxx::EOFError);
}

// The sender killed once the receiver has taken its peer-read grant and is filling
// the value (its memory has grown by a quarter of the value: in resize()'s
// fill or in the copy out of the sender's memory): the receiver gets an
// EOFError, never a value made partly of whatever the sender's memory
// became, and the connection then reports its end.
TEST(PipeProcesses, ASenderKilledWhileItsValueIsReceivedGivesEof) {
  constexpr std::size_t kSize = std::size_t{128} << 20;
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_big, b, kSize);
  p.start();
  b.close();
  std::atomic<bool> killed_mid_receive{false};
  std::thread killer([&] {
    killed_mid_receive = mpxx_test::wait_rss_growth(::getpid(), kSize / 4, 30000ms);
    p.kill();
  });
  EXPECT_THROW(a.recv<std::vector<std::uint8_t>>(), mpxx::EOFError);
  killer.join();
  p.join();
  EXPECT_TRUE(killed_mid_receive) << "the receiver never filled the value";
  EXPECT_THROW(a.recv<int>(), mpxx::EOFError);
}

TEST(PipeProcesses, ALargeValueOfSeveralFieldsIsReadWhole) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_blocks, b);
  p.start();
  b.close();
  const Blocks got = a.recv<Blocks>();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_TRUE(got == Blocks::make());
}

TEST(PipeProcesses, AReceiverThatMayNotReadTheSendersMemoryHasTheValuePushed) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(recv_blocks_without_peer_reads, b);
  if (const std::string why = start_filtered(p, a, b); why != "ready") {
    p.join();
    GTEST_SKIP() << why;
  }
  a.send(Blocks::make());
  EXPECT_EQ(a.recv<std::string>(), "same");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Between the ends of a Pipe, a large value is read from the sender's
// memory, not through a pipe: the receiver read()s almost nothing.
TEST(PipeProcesses, ALargeValueIsReadFromTheSendersMemory) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(send_big, b, std::size_t{64} << 20);
  p.start();
  b.close();
  ASSERT_TRUE(a.poll(10s));
  const long long before = mpxx_test::bytes_read_so_far();
  if (before < 0) GTEST_SKIP() << "no /proc/self/io here";
  const auto v = a.recv<std::vector<std::uint8_t>>();
  const long long read = mpxx_test::bytes_read_so_far() - before;
  p.join();
  ASSERT_EQ(v.size(), std::size_t{64} << 20);
  EXPECT_EQ(v[(32u << 20) + 5], static_cast<std::uint8_t>(((32u << 20) + 5) * 7));
  EXPECT_LT(read, 1 << 20) << "the value came through read()";
}

// A receiver that fails to read the value does not tell the sender it is
// done: the sender's send() raises, as when a reader leaves half way.
TEST(PipeProcesses, ASendRaisesWhenTheReceiverFailsToReadTheValue) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(recv_vector_failing_half_way, b);
  if (const std::string why = start_filtered(p, a, b); why != "ready") {
    p.join();
    GTEST_SKIP() << why;
  }
  try {
    a.send(std::vector<std::uint8_t>(8u << 20, 1));
    ADD_FAILURE() << "send returned although the receiver failed";
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), EPIPE) << e.what();
  }
  EXPECT_EQ(a.recv<std::string>(), "EFAULT");
  p.join();
}

TEST(PipeProcesses, ALargeValueCarriesConnectionsToo) {
  auto [a, b] = mpxx::Pipe();
  auto [back_here, back_there] = mpxx::Pipe();
  mpxx::Process p(recv_connection_with_vector, b);
  p.start();
  b.close();
  std::vector<std::uint8_t> v(6u << 20, 9);
  a.send(std::pair<mpxx::Connection, std::vector<std::uint8_t>>(back_there, v));
  back_there.close();
  EXPECT_EQ(back_here.recv<std::string>(), "whole");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Pipe, LargeValueBetweenThreads) {
  auto [a, b] = mpxx::Pipe();
  std::vector<std::uint32_t> sent(3u << 20);
  for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<std::uint32_t>(i * 2654435761u);
  std::thread t([&, a = a] () mutable { a.send(sent); a.send(std::string(5u << 20, 'z')); });
  auto got = b.recv<std::vector<std::uint32_t>>();
  auto text = b.recv<std::string>();
  t.join();
  EXPECT_EQ(got, sent);
  EXPECT_EQ(text, std::string(5u << 20, 'z'));
}

TEST(PipeProcesses, SignalsDoNotDisturbABlockedRecv) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  struct sigaction old {};
  ::sigaction(SIGUSR1, &sa, &old);
  auto [a, b] = mpxx::Pipe();
  std::string big(3 << 20, 'x');  // large enough to need many reads
  mpxx::Process p(send_after, b, 300, big);
  p.start();
  pthread_t self = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread pester([&] {
    while (!done) {
      std::this_thread::sleep_for(5ms);
      ::pthread_kill(self, SIGUSR1);
    }
  });
  std::string got = a.recv<std::string>();
  done = true;
  pester.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  p.join();
  EXPECT_EQ(got, big);
}

// A Pipe's small messages go through shared memory and its receivers sleep
// on the socket, woken by a bell; a lost bell would hang one side forever.
// Both sides pause unevenly, so each recv finds the other side busy,
// spinning or asleep, and every fifth message is too large for shared
// memory (it takes the socket, behind the bells). Every wait is bounded, so
// a lost wakeup fails instead of hanging.
TEST(PipeProcesses, NoWakeupIsLostWhateverTheTiming) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(echo_with_pauses, b);
  p.start();
  b.close();
  for (int i = 0; i < 1500; ++i) {
    pause_for(i);
    std::string m = std::to_string(i) + std::string(i % 5 == 0 ? 20000 : 0, '.');
    a.send(m);
    ASSERT_TRUE(a.poll(10s)) << "no reply to message " << i;
    ASSERT_EQ(a.recv<std::string>(), m);
  }
  a.send(std::string());
  EXPECT_EQ(a.recv<std::string>(), "");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Writers in several processes share one end (the pattern of many
// tutorials): every message arrives whole and once, in each writer's order,
// although the ring fills and writers wait for room.
TEST(PipeProcesses, WritersInSeveralProcessesShareOneEnd) {
  constexpr int kProducers = 4, kEach = 5000;
  auto [r, w] = mpxx::Pipe(false);
  std::vector<mpxx::Process> ps;
  for (int k = 0; k < kProducers; ++k) ps.emplace_back(send_numbered, w, k, kEach);
  for (auto& p : ps) p.start();
  w.close();
  std::vector<int> next(kProducers, 0);
  for (int n = 0; n < kProducers * kEach; ++n) {
    ASSERT_TRUE(r.poll(30s)) << "stalled after " << n << " messages";
    auto [k, i] = r.recv<std::pair<int, int>>();
    ASSERT_GE(k, 0);
    ASSERT_LT(k, kProducers);
    ASSERT_EQ(i, next[k]) << "producer " << k << " out of order";
    ++next[k];
  }
  for (auto& p : ps) p.join();
  EXPECT_THROW(r.recv<int>(), mpxx::EOFError);  // every writer has gone
}

// Small messages take shared memory, others the socket (fds, large ones) or
// a pipe of their own (over 1 MiB): they still arrive in the order sent.
TEST(Pipe, MessagesOfEveryPathKeepTheirOrder) {
  auto [a, b] = mpxx::Pipe();
  std::thread t([a = a]() mutable {
    for (int round = 0; round < 3; ++round) {
      a.send(round);
      a.send(std::string(100 << 10, static_cast<char>('a' + round)));  // socket
      a.send_bytes(std::string(10, 'k'));
      a.send(mpxx::Value<int>(round));  // carries an fd
      a.send(std::vector<std::uint8_t>(2 << 20, static_cast<std::uint8_t>(round)));  // own pipe
      a.send(-round);
    }
  });
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(b.recv<int>(), round);
    EXPECT_EQ(b.recv<std::string>(), std::string(100 << 10, static_cast<char>('a' + round)));
    EXPECT_EQ(b.recv_bytes(), std::string(10, 'k'));
    EXPECT_EQ(b.recv<mpxx::Value<int>>().value(), round);
    auto big = b.recv<std::vector<std::uint8_t>>();
    EXPECT_EQ(big.size(), 2u << 20);
    EXPECT_EQ(big.back(), static_cast<std::uint8_t>(round));
    EXPECT_EQ(b.recv<int>(), -round);
  }
  t.join();
}

// A message that a recv left behind in shared memory counts for poll() and
// mpxx::wait, though no byte is waiting on the socket for it.
TEST(Pipe, AMessageLeftInSharedMemoryIsSeenByPollAndWait) {
  auto [a, b] = mpxx::Pipe();
  a.send(1);
  a.send(2);
  EXPECT_EQ(b.recv<int>(), 1);
  EXPECT_TRUE(b.poll());
  auto ready = mpxx::wait(std::vector<mpxx::Connection>{b}, 0s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(b.recv<int>(), 2);
  EXPECT_FALSE(b.poll());
  EXPECT_TRUE(mpxx::wait(std::vector<mpxx::Connection>{b}, 0s).empty());
}

// A small message to an idle reader is a record in shared memory plus one
// bell byte on the socket, not the message itself.
TEST(Pipe, SmallMessagesGoThroughSharedMemory) {
  auto [a, b] = mpxx::Pipe();
  a.send(7);
  unsigned char buf[64];
  ssize_t r = ::recv(b.fileno(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  ASSERT_EQ(r, 1);
  EXPECT_EQ(buf[0], 0x80);
  EXPECT_EQ(b.recv<int>(), 7);
  auto [c, d] = mpxx::Pipe(true, {.shared_memory = false});
  c.send(7);
  EXPECT_GT(::recv(d.fileno(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT), 4);  // the message
}

void expect_finishes(void (*scenario)(), const char* what) {
  mpxx::Process p(scenario);
  p.start();
  p.join(30s);
  if (p.is_alive()) {
    p.kill();
    p.join();
    ADD_FAILURE() << what << ": still blocked after 30 s";
    return;
  }
  EXPECT_EQ(p.exitcode(), 0) << what;
}

TEST(PipeProcesses, ABatchSentBeforeReadingNeverBlocks) {
  expect_finishes(batch_then_read, "60 sends of 1000 bytes before the first recv");
}

TEST(PipeProcesses, AFailedSendLeavesNothingToWaitFor) {
  expect_finishes(failed_send_then_more, "a send after a refused one");
}

TEST(PipeProcesses, APollingThreadNeverSwallowsAReceiversWakeup) {
  expect_finishes(poll_while_another_thread_receives, "recv in one thread, poll in another");
}

TEST(PipeProcesses, APollingThreadNeverTakesBytesOfAMessageBeingReceived) {
  expect_finishes(poll_while_another_thread_receives_large,
                  "recv of socket messages in one thread, poll in another");
}

// A writer blocked on a full ring notices that its reader has gone.
TEST(PipeProcesses, AFullPipeWhoseReaderLeavesRaises) {
  auto [a, b] = mpxx::Pipe();
  mpxx::Process p(sleep_then_close, b, 200);
  p.start();
  b.close();
  std::string item(1000, 'q');
  auto t0 = std::chrono::steady_clock::now();
  try {
    for (int i = 0; i < 1000000; ++i) a.send_bytes(item);
    ADD_FAILURE() << "sending to a reader that left never raised";
  } catch (const mpxx::OSError& e) {
    EXPECT_EQ(e.code(), EPIPE) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  p.join();
}

// CPython's multiprocessing.connection.Connection on the other end of our
// socket: it must understand our framing, and we its.
TEST(CPythonInterop, BytesBothWays) {
  if (::system("python3 -c 'import multiprocessing' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 is not available: CPython interop not tested";
  auto [a, b] = mpxx::Pipe(true, {.shared_memory = false});  // b's fd goes to python3
  int fd = b.fileno();
  std::string script =
      "from multiprocessing.connection import Connection\n"
      "c = Connection(" + std::to_string(fd) + ")\n"
      "for _ in range(3):\n"
      "    m = c.recv_bytes()\n"
      "    c.send_bytes(m[::-1] + b'!' * (len(m) > 100000))\n";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd, fd);  // clears close-on-exec for the child
  const char* argv[] = {"python3", "-c", script.c_str(), nullptr};
  pid_t pid;
  ASSERT_EQ(::posix_spawnp(&pid, "python3", &fa, nullptr, const_cast<char**>(argv), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  b.close();
  a.send_bytes("hello");
  EXPECT_EQ(a.recv_bytes(), "olleh");
  a.send_bytes("");
  EXPECT_EQ(a.recv_bytes(), "");
  std::string big(300000, 'y');
  big[0] = 'z';
  a.send_bytes(big);
  std::string back = a.recv_bytes();
  ASSERT_EQ(back.size(), big.size() + 1);
  EXPECT_EQ(back[big.size() - 1], 'z');
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

}  // namespace

namespace {

void sleep_then_exit(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST(Wait, ConnectionsProcessesAndTimeouts) {
  auto [a1, b1] = mpxx::Pipe();
  auto [a2, b2] = mpxx::Pipe();
  std::vector<mpxx::Connection> readers{a1, a2};
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(mpxx::wait(readers, 200ms).empty());
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  b2.send(7);
  auto ready = mpxx::wait(readers);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].fileno(), a2.fileno());
  EXPECT_EQ(ready[0].recv<int>(), 7);

  mpxx::Process p(sleep_then_exit, 50);
  p.start();
  using Any = std::variant<mpxx::Connection, mpxx::ProcessHandle, int>;
  std::vector<Any> mixed{a1, mpxx::ProcessHandle(p)};
  auto done = mpxx::wait(mixed, 10s);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<mpxx::ProcessHandle>(done[0]));
  p.join();
  b1.close();  // a closed peer counts as ready
  EXPECT_EQ(mpxx::wait(std::vector<mpxx::Connection>{a1}, 1s).size(), 1u);
}

}  // namespace
