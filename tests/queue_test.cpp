// Queue, SimpleQueue, JoinableQueue: Python's semantics, many producers and
// consumers in several processes, and processes dying mid-put or mid-get.
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string_view>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace queue_targets {

struct Item {
  int producer;
  int seq;
};

void produce(mpxx::Queue<Item> q, int producer, int n) {
  for (int i = 0; i < n; ++i) q.put(Item{producer, i});
}

// Takes items until it gets a sentinel (producer -1); reports what it got.
void consume(mpxx::Queue<Item> q, mpxx::Queue<std::vector<Item>> out) {
  std::vector<Item> got;
  for (;;) {
    Item it = q.get();
    if (it.producer < 0) break;
    got.push_back(it);
  }
  out.put(got);
}

// Bursts of 1-5 items after pauses of 0-180 us: the consumer is sometimes
// spinning, sometimes asleep, sometimes woken and not yet back when the rest
// of a burst arrives.
void put_in_bursts(mpxx::Queue<int> q, int bursts) {
  int next = 0;
  for (int b = 0; b < bursts; ++b) {
    if (b % 7) std::this_thread::sleep_for(std::chrono::microseconds((b % 7) * 30));
    for (int k = 0; k <= b % 5; ++k) q.put(next++);
  }
  q.put(-1);
}

void put_many_and_exit(mpxx::Queue<int> q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

void put_big_forever(mpxx::Queue<std::vector<std::uint32_t>> q, mpxx::Event first) {
  for (std::uint32_t k = 0;; ++k) {
    std::vector<std::uint32_t> v(8u << 20, k);  // 32 MiB, every word = k
    q.put(v);
    first.set();
  }
}

void get_big(mpxx::Queue<std::vector<std::uint32_t>> q, mpxx::Event about_to_get) {
  about_to_get.set();
  auto v = q.get();
  std::exit(v.empty() ? 1 : 0);
}

void joinable_worker(mpxx::JoinableQueue<int> q, mpxx::RawValue<long> sum) {
  for (;;) {
    int v = q.get();
    sum.value() += v;
    q.task_done();
  }
}

void simple_echo(mpxx::SimpleQueue<std::string> in, mpxx::SimpleQueue<std::string> out) {
  out.put("echo: " + in.get());
}

void send_huge(mpxx::Queue<std::string> q) { q.put(std::string(100u << 20, 'q')); }

// Large values of a type copied into the message (strings in a vector) and
// of types put from their own memory (a vector of numbers, a string),
// between small ones. The vector is changed as soon as put() returns.
void put_large_mix(mpxx::Queue<std::vector<std::string>> strings,
                   mpxx::Queue<std::vector<double>> numbers, mpxx::Queue<std::string> text) {
  std::vector<std::string> many;
  for (int i = 0; i < 20000; ++i) many.push_back(std::to_string(i) + std::string(100, 's'));
  strings.put(many);             // ~2.1 MiB, element by element
  strings.put({"small"});
  std::vector<double> v(400000);  // 3.2 MiB
  std::iota(v.begin(), v.end(), 0.5);
  numbers.put(v);
  std::fill(v.begin(), v.end(), -1.0);  // the queue holds its own copy
  numbers.put({1.0, 2.0});
  text.put(std::string((2u << 20) + 5, 't'));
}

// Large messages handed straight to a waiting consumer (the producer's
// memory is read, not the ring's).

// Builds n bytes, says so, then puts them `ms` later (by then the test
// waits in get, however long building took on a loaded machine).
template <class Q>
void put_big_after(Q q, int ms, std::size_t n, mpxx::Event built) {
  const std::vector<std::uint8_t> v(n, 5);
  built.set();
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  q.put(v);
}

// Whether a thread of `pid` waits on a futex in a queue's header.
std::function<bool(const std::vector<std::uint64_t>&)> waits_on_a_queue(pid_t pid) {
  return [pid](const std::vector<std::uint64_t>& args) {
    for (const auto& range : mpxx_test::mappings_named(pid, "mpxx:queue"))
      if (args[0] >= range.first && args[0] < range.first + 4096) return true;
    return false;
  };
}

// Gets a large message with process_vm_readv refused (a seccomp filter):
// the producer must put it into the ring after all.
void get_big_without_peer_reads(mpxx::Queue<std::vector<std::uint8_t>> q,
                                  mpxx::Queue<std::string> report, mpxx::Event waiting) {
  if (!mpxx_test::refuse_peer_reads(EPERM, false)) {
    report.put(std::string("seccomp: ") + std::strerror(errno));
    return;
  }
  report.put(std::string("ready"));
  waiting.set();
  auto v = q.get(30s);
  report.put(v.size() == (8u << 20) && v[4321] == 5 ? std::string("whole") : std::string("broken"));
}

void get_one(mpxx::JoinableQueue<std::vector<std::uint8_t>> q) { q.get(); }
// A large test value of n bytes: byte i is (131 i + n / 4093) % 251, so
// that a byte out of place, or from a value of another size, shows. It
// repeats every 251 bytes (compared a period at a time: fast in a debug
// build too).
std::vector<std::uint8_t> pattern_period(std::size_t n) {
  std::vector<std::uint8_t> period(251);
  for (std::size_t i = 0; i < period.size(); ++i) period[i] = static_cast<std::uint8_t>((i * 131 + n / 4093) % 251);
  return period;
}

std::vector<std::uint8_t> patterned(std::size_t n) {
  const auto period = pattern_period(n);
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; i += period.size())
    std::memcpy(v.data() + i, period.data(), std::min(period.size(), n - i));
  return v;
}

bool patterned_whole(const std::vector<std::uint8_t>& v, std::size_t n) {
  if (v.size() != n) return false;
  const auto period = pattern_period(n);
  for (std::size_t i = 0; i < n; i += period.size())
    if (std::memcmp(v.data() + i, period.data(), std::min(period.size(), n - i)) != 0) return false;
  return true;
}

// Puts patterned values of each size in turn, once `go` is set.
template <class Q>
void put_patterned(Q q, std::vector<std::size_t> sizes, mpxx::Event go) {
  std::vector<std::vector<std::uint8_t>> values;
  for (std::size_t n : sizes) values.push_back(patterned(n));
  go.wait();
  for (const auto& v : values) q.put(v);
}


// Reports what it got ("<first byte>:<size>", or "broken" if the bytes
// differ), then marks it done.
void get_and_report(mpxx::JoinableQueue<std::vector<std::uint8_t>> q, mpxx::Queue<std::string> report) {
  const auto v = q.get(60s);
  const bool whole = std::all_of(v.begin(), v.end(), [&](std::uint8_t x) { return x == v.front(); });
  report.put(whole && !v.empty() ? std::to_string(v.front()) + ":" + std::to_string(v.size())
                                 : std::string("broken"));
  q.task_done();
}

// Gets with timeouts of under 2 ms until an empty message, reporting each
// message's first byte (-1 if it is not whole), plus 1000 if it came by an
// hand-over (it was then not read with read()-like calls), and after a timeout
// often stays away for a little while.
void get_impatiently(mpxx::Queue<std::vector<std::uint8_t>> q, mpxx::Queue<int> got, int salt) {
  for (int i = 0;; ++i) {
    std::vector<std::uint8_t> v;
    const long long before = mpxx_test::bytes_read_so_far();
    try {
      v = q.get(std::chrono::microseconds(200 + 400 * ((i + salt) % 4)));
    } catch (const mpxx::Empty&) {
      std::this_thread::sleep_for(std::chrono::microseconds(500 * ((i + salt) % 3)));
      continue;
    }
    if (v.empty()) return;
    const bool whole = v.size() == (std::size_t{3} << 19) && v[v.size() / 2] == v.front() && v.back() == v.front();
    const bool by_handover = before >= 0 && mpxx_test::bytes_read_so_far() - before < (1 << 20);
    got.put(whole ? v.front() + (by_handover ? 1000 : 0) : -1);
  }
}

// Random processes killed at random moments (QueueDeath.RandomKills...):
// messages of 2-65 words or 1-4 MiB whose words follow from (id, seq).
using Words = std::vector<std::uint32_t>;

void put_numbered_forever(mpxx::JoinableQueue<Words> q, std::uint32_t id) {
  std::mt19937 rng(id);
  for (std::uint32_t seq = 0;; ++seq) {
    const std::size_t n = rng() % 10 < 7 ? 2 + rng() % 64 : (256u << 10) + rng() % (768u << 10);
    Words v(n);
    for (std::size_t i = 2; i < n; ++i) v[i] = mpxx_test::numbered_word(id, seq, i);
    v[0] = id;
    v[1] = seq;
    try {
      if (rng() % 4 == 0)
        q.put(v, std::chrono::milliseconds(rng() % 20));
      else
        q.put(v);
    } catch (const mpxx::Full&) {
    }
    if (rng() % 3 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  }
}

// Reports each message as id << 32 | seq, or ~0 if its words are wrong.
void get_numbered_forever(mpxx::JoinableQueue<Words> q, mpxx::Queue<std::uint64_t> out, std::uint32_t seed) {
  std::mt19937 rng(seed);
  for (;;) {
    Words v;
    try {
      switch (rng() % 3) {
        case 0: v = q.get(); break;
        case 1: v = q.get_nowait(); break;
        default: v = q.get(std::chrono::microseconds(100 + rng() % 20000));
      }
    } catch (const mpxx::Empty&) {
      continue;
    }
    bool whole = v.size() >= 2;
    for (std::size_t i = 2; whole && i < v.size(); ++i) whole = v[i] == mpxx_test::numbered_word(v[0], v[1], i);
    out.put(whole ? std::uint64_t{v[0]} << 32 | v[1] : ~std::uint64_t{0});
    q.task_done();
  }
}

}  // namespace queue_targets

namespace {
using namespace queue_targets;

class QueueTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(QueueTest);

using mpxx_test::seconds;

TEST(Queue, FifoAndSizes) {
  mpxx::Queue<std::string> q;
  EXPECT_TRUE(q.empty());
  for (int i = 0; i < 1000; ++i) q.put("item " + std::to_string(i));
  EXPECT_EQ(q.qsize(), 1000);
  EXPECT_FALSE(q.full());  // unbounded
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(q.get(), "item " + std::to_string(i));
  EXPECT_TRUE(q.empty());
}

TEST(Queue, FullAndEmptyWithTimeouts) {
  mpxx::Queue<int> q(2);
  q.put(1);
  q.put(2);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(3), mpxx::Full);
  double t = seconds([&] { EXPECT_THROW(q.put(3, 200ms), mpxx::Full); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  EXPECT_EQ(q.get(), 1);
  q.put(3, 200ms);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get_nowait(), 3);
  EXPECT_THROW(q.get_nowait(), mpxx::Empty);
  t = seconds([&] { EXPECT_THROW(q.get(200ms), mpxx::Empty); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
}

// A timeout of millennia means "wait": it must not overflow into a
// negative count of nanoseconds (which would make it an immediate Empty).
TEST(Queue, AVeryLongTimeoutWaits) {
  mpxx::Queue<int> q;
  std::thread later([q]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    q.put(7);
  });
  int got = -1;
  try {
    got = q.get(std::chrono::years(1000));
  } catch (const mpxx::Empty&) {
  }
  later.join();
  EXPECT_EQ(got, 7);
  mpxx::JoinableQueue<int> jq;
  jq.put(1);
  std::thread done([jq]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    jq.get();
    jq.task_done();
  });
  EXPECT_TRUE(jq.join(std::chrono::years(1000)));
  done.join();
}

TEST(Queue, WrapsAroundTheRingManyTimes) {
  mpxx::Queue<std::vector<char>> q;
  // ~3 GiB through a 1 GiB ring, in messages of awkward sizes (2 GiB under
  // the sanitizers, whose memcpy alone would take most of the time limit).
#ifdef MPXX_TEST_SANITIZED
  constexpr int kRounds = 2;
#else
  constexpr int kRounds = 3;
#endif
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < 40; ++i) q.put(std::vector<char>((25u << 20) + 13 * i, static_cast<char>(i)));
    for (int i = 0; i < 40; ++i) {
      auto v = q.get();
      ASSERT_EQ(v.size(), (25u << 20) + 13 * i);
      ASSERT_EQ(v[v.size() / 2], static_cast<char>(i));
    }
  }
}

void put_kib_items(mpxx::Queue<std::vector<std::uint32_t>> q, int n) {
  for (int i = 0; i < n; ++i) q.put(std::vector<std::uint32_t>(256, static_cast<std::uint32_t>(i)));
}

// A producer running far ahead of its consumer goes back to the ring's warm
// start and into blocks the consumer has just released: every item must
// arrive whole and in order (a block released while the next lap was
// already being written there once zeroed live messages).
TEST(Queue, AProducerFarAheadOfItsConsumerLosesNothing) {
  mpxx::Queue<std::vector<std::uint32_t>> q;
  constexpr int kItems = 120000;  // ~120 MiB, many passes over the warm start
  mpxx::Process p(put_kib_items, q, kItems);
  p.start();
  for (int i = 0; i < kItems; ++i) {
    auto v = q.get(std::chrono::seconds(30));
    ASSERT_EQ(v.size(), 256u) << "item " << i;
    ASSERT_EQ(v.front(), static_cast<std::uint32_t>(i));
    ASSERT_EQ(v.back(), static_cast<std::uint32_t>(i));
  }
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Bytes of shared memory the queue rings of this process hold (summed over
// every "mpxx:queue" memfd it has open).
long resident_queue_bytes() {
  long total = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) {
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    char link[256];
    const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = '\0';
    struct stat st {};
    if (std::string_view(link).find("memfd:mpxx:queue") != std::string_view::npos &&
        ::stat(path.c_str(), &st) == 0)
      total += static_cast<long>(st.st_blocks) * 512;
  }
  ::closedir(d);
  return total;
}

// A consumer that keeps up keeps the ring to its first few MiB: a lap ends
// at the ring's start as soon as there is room there, instead of faulting
// in fresh pages up to the 16 MiB warm part (each first touch of a shared
// page costs a fault and a zeroing, which on a VM dominated a Pool's first
// maps).
TEST(Queue, AConsumerThatKeepsUpKeepsTheRingSmall) {
  mpxx::Queue<std::vector<char>> q;
  const long before = resident_queue_bytes();
  ASSERT_GE(before, 0);
  for (int i = 0; i < 1024; ++i) {  // 64 MiB in 64 KiB messages
    q.put(std::vector<char>(64u << 10, static_cast<char>(i)));
    auto v = q.get();
    ASSERT_EQ(v.size(), 64u << 10);
    ASSERT_EQ(v.back(), static_cast<char>(i));
  }
  const long grown = resident_queue_bytes() - before;
  EXPECT_GT(grown, 4l << 20) << "the ring should have been used up to the short lap";
  EXPECT_LE(grown, 6l << 20) << "the ring kept " << grown << " bytes resident";
}

// A producer skips the wake-up of a consumer it has already woken and that
// has not looked again yet; no item may wait for a later put because of it
// (a get would then sleep until its timeout).
TEST(Queue, NoItemWaitsForTheNextPutWhateverTheTiming) {
  mpxx::Queue<int> q;
  constexpr int kBursts = 3000;
  mpxx::Process p(put_in_bursts, q, kBursts);
  p.start();
  int expect = 0;
  Clock::duration longest{};
  for (;;) {
    const auto t0 = Clock::now();
    const int v = q.get(5s);
    longest = std::max(longest, Clock::now() - t0);
    if (v < 0) break;
    ASSERT_EQ(v, expect++);
  }
  EXPECT_EQ(expect, kBursts / 5 * 15 + (kBursts % 5) * (kBursts % 5 + 1) / 2);
  // The producer never pauses for more than 180 us.
  EXPECT_LT(longest, 2s) << "an item waited for a wake-up that did not come";
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Items left unread never shrink the room for the next producer to nothing.
TEST(Queue, ItemsLeftUnreadLeaveRoomForMore) {
  mpxx::Queue<std::string> q;
  q.put("first");
  EXPECT_EQ(q.get(), "first");
  q.put("left unread");
  for (int i = 0; i < 1000; ++i) q.put(std::string(1000, 'x'), std::chrono::seconds(1));
  EXPECT_EQ(q.qsize(), 1001);
  EXPECT_EQ(q.get(), "left unread");
}

struct Unencodable {
  template <class A>
  void serialize(A&) {
    throw std::runtime_error("cannot encode this one");
  }
};

TEST(Queue, AFailedEncodeTakesNoSlot) {
  mpxx::Queue<Unencodable> q(1);
  EXPECT_THROW(q.put(Unencodable{}), std::runtime_error);
  EXPECT_EQ(q.qsize(), 0);
  EXPECT_THROW(q.get_nowait(), mpxx::Empty);
}

TEST(Queue, TypeMismatchIsAnError) {
  mpxx::Queue<int> q;
  q.put(1);
  // The same shared queue seen as another type (as a buggy program might).
  mpxx::detail::wire::Writer w;
  mpxx::detail::wire::encode(w, q);
  std::vector<int> fds;
  for (int fd : w.fds()) fds.push_back(::dup(fd));
  mpxx::detail::wire::Reader r(w.bytes());
  r.set_fds(fds);
  auto wrong = mpxx::detail::wire::decode<mpxx::Queue<std::string>>(r);
  EXPECT_THROW(wrong.get(), mpxx::ProtocolError);
  EXPECT_EQ(q.qsize(), 0);  // the bad message was consumed, the queue goes on
  q.put(2);
  EXPECT_EQ(q.get(), 2);
}

TEST(Queue, ValuesWithFileDescriptorsAreRefused) {
  mpxx::Queue<mpxx::Lock> q;
  EXPECT_THROW(q.put(mpxx::Lock{}), mpxx::ValueError);
  EXPECT_EQ(q.qsize(), 0);
}

TEST(Queue, GetAndPutOnAQueueThisProcessClosedAreValueErrors) {
  mpxx::Queue<int> q;
  q.put(1);
  q.close();
  EXPECT_THROW(q.put(2), mpxx::ValueError);
  // At once, not after waiting out the timeout, and never Empty.
  double t = seconds([&] {
    try {
      q.get(10s);
      FAIL() << "get() on a closed queue returned";
    } catch (const mpxx::ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("closed"), std::string::npos) << e.what();
    }
  });
  EXPECT_LT(t, 5.0);
  EXPECT_THROW(q.get_nowait(), mpxx::ValueError);
  EXPECT_EQ(q.qsize(), 1);  // the item stays for the processes that did not close
  mpxx::JoinableQueue<int> j;
  j.close();
  EXPECT_THROW(j.put(1), mpxx::ValueError);
  EXPECT_THROW(j.get(false), mpxx::ValueError);
}

TEST(SimpleQueue, PutGetAndEmptyAfterCloseAreOSErrors) {
  mpxx::SimpleQueue<int> q;
  q.put(1);
  q.close();
  for (auto call : {std::function<void()>([&] { q.put(2); }), std::function<void()>([&] { q.get(); }),
                    std::function<void()>([&] { (void)q.empty(); })}) {
    try {
      call();
      ADD_FAILURE() << "a SimpleQueue call after close() returned";
    } catch (const mpxx::OSError& e) {
      EXPECT_EQ(e.code(), EBADF);
      EXPECT_NE(std::string(e.what()).find("handle is closed"), std::string::npos) << e.what();
    }
  }
}

TEST(Queue, GetAndPutWithANegativeTimeoutDoNotWait) {
  mpxx::Queue<int> q(1);
  mpxx::JoinableQueue<int> j;
  j.put(1);
  double t = seconds([&] {
    EXPECT_THROW(q.get(-1s), mpxx::Empty);
    EXPECT_NO_THROW(q.put(1, -1s));  // room: a negative timeout still puts
    EXPECT_THROW(q.put(2, -1s), mpxx::Full);
    EXPECT_THROW(q.put(2, std::chrono::duration<double>(-0.5)), mpxx::Full);
    EXPECT_FALSE(j.join(-1s));
  });
  EXPECT_LT(t, 1.0);
  EXPECT_EQ(q.get(-1s), 1);  // an item that is there is taken
}

TEST(Queue, SignalsDoNotShortenAGet) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  struct sigaction old {};
  ::sigaction(SIGUSR1, &sa, &old);
  mpxx::Queue<int> q;
  pthread_t self = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread pester([&] {
    while (!done) {
      std::this_thread::sleep_for(20ms);
      ::pthread_kill(self, SIGUSR1);
    }
  });
  double t = seconds([&] { EXPECT_THROW(q.get(400ms), mpxx::Empty); });
  done = true;
  pester.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GE(t, 0.4);
  EXPECT_LT(t, 5.0);
}

TEST_P(QueueTest, ManyProducersManyConsumers) {
  constexpr int kItems = 20000;
  mpxx::Queue<Item> q(100);
  mpxx::Queue<std::vector<Item>> results;
  mpxx::Process p1(opts(), produce, q, 0, kItems), p2(opts(), produce, q, 1, kItems);
  mpxx::Process c1(opts(), consume, q, results), c2(opts(), consume, q, results);
  for (auto* p : {&p1, &p2, &c1, &c2}) p->start();
  p1.join();
  p2.join();
  q.put(Item{-1, 0});
  q.put(Item{-1, 0});
  std::vector<Item> a = results.get(30s), b = results.get(30s);
  c1.join();
  c2.join();
  // Every item exactly once, and each consumer saw each producer in order.
  std::map<int, std::vector<int>> seen;
  for (const auto* part : {&a, &b}) {
    std::map<int, int> last{{0, -1}, {1, -1}};
    for (const Item& it : *part) {
      EXPECT_GT(it.seq, last[it.producer]);
      last[it.producer] = it.seq;
      seen[it.producer].push_back(it.seq);
    }
  }
  for (int prod = 0; prod < 2; ++prod) {
    auto& v = seen[prod];
    std::sort(v.begin(), v.end());
    ASSERT_EQ(v.size(), static_cast<std::size_t>(kItems));
    for (int i = 0; i < kItems; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)], i);
  }
}

TEST_P(QueueTest, JoiningAProducerWithUnreadItemsDoesNotDeadlock) {
  mpxx::Queue<int> q;
  mpxx::Process p(opts(), put_many_and_exit, q, 50000);
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(q.qsize(), 50000);
  long sum = 0;
  for (int i = 0; i < 50000; ++i) sum += q.get();
  EXPECT_EQ(sum, 50000L * 49999 / 2);
}

TEST_P(QueueTest, HundredMiBMessage) {
  mpxx::Queue<std::string> q;
  mpxx::Process p(opts(), send_huge, q);
  p.start();
  std::string s = q.get(60s);
  p.join();
  ASSERT_EQ(s.size(), 100u << 20);
  EXPECT_EQ(s[12345678], 'q');
}

// Messages of 1 MiB and more are written into the ring's memory file and
// read back from it straight into the value being decoded.
TEST_P(QueueTest, LargeMessagesOfEveryKindArriveWholeAndInOrder) {
  mpxx::Queue<std::vector<std::string>> strings;
  mpxx::Queue<std::vector<double>> numbers;
  mpxx::Queue<std::string> text;
  mpxx::Process p(opts(), put_large_mix, strings, numbers, text);
  p.start();
  auto many = strings.get(60s);
  ASSERT_EQ(many.size(), 20000u);
  for (int i : {0, 1, 9999, 19999}) EXPECT_EQ(many[i], std::to_string(i) + std::string(100, 's'));
  EXPECT_EQ(strings.get(60s), std::vector<std::string>{"small"});
  auto v = numbers.get(60s);
  ASSERT_EQ(v.size(), 400000u);
  EXPECT_EQ(v.front(), 0.5);
  EXPECT_EQ(v.back(), 399999.5);
  EXPECT_EQ(numbers.get(60s), (std::vector<double>{1.0, 2.0}));
  auto t = text.get(60s);
  ASSERT_EQ(t.size(), (2u << 20) + 5);
  EXPECT_EQ(t.find_first_not_of('t'), std::string::npos);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Large messages anywhere in the ring: at its start, further on, and
// after the record that sends a lap back to the start.
TEST(Queue, LargeMessagesAtEveryPlaceInTheRingArriveWhole) {
  mpxx::Queue<std::vector<std::uint32_t>> q;
  for (std::uint32_t round = 0; round < 7; ++round) {
    std::vector<std::uint32_t> v((3u << 20) / 4 + 5 * round);  // ~3 MiB
    std::iota(v.begin(), v.end(), round * 1000003u);
    q.put(v);
    q.put({round});  // a small record between the large ones
    auto got = q.get(10s);
    ASSERT_EQ(got.size(), v.size()) << "round " << round;
    EXPECT_TRUE(std::equal(got.begin(), got.end(), v.begin())) << "round " << round;
    EXPECT_EQ(q.get(10s), std::vector<std::uint32_t>{round});
  }
}

void put_large_with_a_file_size_limit(mpxx::Queue<std::vector<std::uint32_t>> q) {
  // Writes into files (a memfd too) beyond 1 MiB would raise SIGXFSZ.
  rlimit lim{1u << 20, 1u << 20};
  if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) std::exit(3);
  q.put(std::vector<std::uint32_t>(1u << 20, 42u));  // 4 MiB
}

TEST(Queue, ALargePutWorksUnderAFileSizeLimit) {
  mpxx::Queue<std::vector<std::uint32_t>> q;
  mpxx::Process p(put_large_with_a_file_size_limit, q);
  p.start();
  p.join(30s);
  ASSERT_EQ(p.exitcode(), 0) << "the producer died (SIGXFSZ is signal 25)";
  auto v = q.get(10s);
  ASSERT_EQ(v.size(), 1u << 20);
  EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](std::uint32_t x) { return x == 42u; }));
}

// A queue's positions and ring as another process may have written them
// (found by fuzz/ring_fuzz.cpp): [u64 head][u64 tail], then ring records
// [u32 length][u32 flags (1 data, 2 wrap)] from the ring's start.
namespace {
std::vector<std::byte> queue_bytes(std::uint64_t head, std::uint64_t tail,
                                   std::vector<std::uint32_t> ring_words) {
  std::vector<std::byte> b(16 + 4 * ring_words.size());
  std::memcpy(b.data(), &head, 8);
  std::memcpy(b.data() + 8, &tail, 8);
  std::memcpy(b.data() + 16, ring_words.data(), 4 * ring_words.size());
  return b;
}

void expect_corrupt_queue(const std::vector<std::byte>& bytes) {
  const auto t0 = Clock::now();
  try {
    mpxx::detail::fuzz_queue_ring(bytes);
    ADD_FAILURE() << "a corrupt queue was read without an error";
  } catch (const mpxx::ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("shared memory is corrupt"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, 5s);
}
}  // namespace

TEST(Queue, PositionsMoreThanALapApartAreAProtocolErrorNotASpin) {
  // A wrap record at the ring's start and a tail 2^38 bytes ahead: each
  // wrap skipped a lap, 2^26 of them.
  expect_corrupt_queue(queue_bytes(0, std::uint64_t{1} << 38, {5, 2}));
}

TEST(Queue, AHeadOffARecordBoundaryIsAProtocolError) {
  // Read 4 bytes in, the ring holds what looks like a 4-byte data record.
  expect_corrupt_queue(queue_bytes(4, 20, {0, 4, 1, 0x61626364, 0}));
}

TEST(QueueDeath, ProducerKilledMidPutLeavesOnlyWholeMessages) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    mpxx::Queue<std::vector<std::uint32_t>> q(4);
    mpxx::Event first;
    mpxx::Process p(put_big_forever, q, first);
    p.start();
    ASSERT_TRUE(first.wait(30s));
    std::this_thread::sleep_for(std::chrono::milliseconds(7 * attempt));  // vary the moment
    p.kill();
    p.join();
    // Whatever is in the queue is whole.
    while (true) {
      std::vector<std::uint32_t> v;
      try {
        v = q.get_nowait();
      } catch (const mpxx::Empty&) {
        break;
      }
      ASSERT_EQ(v.size(), 8u << 20);
      EXPECT_TRUE(std::all_of(v.begin(), v.end(), [&](std::uint32_t x) { return x == v[0]; }));
    }
    // And the queue keeps working: the dead producer's lock is taken over.
    double t = seconds([&] { q.put({1, 2, 3}, 10s); });
    EXPECT_LT(t, 5.0);
    EXPECT_EQ(q.get(10s), (std::vector<std::uint32_t>{1, 2, 3}));
  }
}

// Two producers and two consumers, one of them SIGKILLed and replaced
// every 20-150 ms, for 4 s: messages small and large (so that some go by
// hand-overs), puts with and without timeouts, blocking gets, get_nowait and
// gets with timeouts. No message is ever delivered corrupt or twice (a
// killed process may lose the one it was putting or getting), whatever is
// left is consumed, and the queue still works afterwards.
TEST(QueueDeath, RandomKillsNeverCorruptOrDuplicateAMessage) {
  mpxx::JoinableQueue<Words> q;
  mpxx::Queue<std::uint64_t> out;
  std::mt19937 rng(20261201);
  std::uint32_t next_id = 1;
  std::vector<std::unique_ptr<mpxx::Process>> producers, consumers;
  auto new_producer = [&] { return std::make_unique<mpxx::Process>(put_numbered_forever, q, next_id++); };
  auto new_consumer = [&] {
    return std::make_unique<mpxx::Process>(get_numbered_forever, q, out, static_cast<std::uint32_t>(rng()));
  };
  for (int i = 0; i < 2; ++i) {
    producers.push_back(new_producer());
    consumers.push_back(new_consumer());
  }
  for (auto& p : producers) p->start();
  for (auto& c : consumers) c->start();
  std::set<std::uint64_t> seen;
  long delivered = 0, twice = 0, corrupt = 0, kills = 0;
  auto collect = [&] {
    for (;;) {
      std::uint64_t x;
      try {
        x = out.get_nowait();
      } catch (const mpxx::Empty&) {
        return;
      }
      ++delivered;
      if (x == ~std::uint64_t{0})
        ++corrupt;
      else if (!seen.insert(x).second)
        ++twice;
    }
  };
  // 4 s of kills, and at least 12 of them however slow a loaded machine
  // makes each round (at most 20 s in all).
  for (const auto until = Clock::now() + 4s, bound = Clock::now() + 20s;
       (Clock::now() < until || kills < 12) && Clock::now() < bound;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 130));
    collect();
    const bool producer = rng() % 2;
    auto& victim = (producer ? producers : consumers)[rng() % 2];
    victim->kill();
    victim->join();
    ++kills;
    victim = producer ? new_producer() : new_consumer();
    victim->start();
  }
  for (auto& p : producers) {
    p->kill();
    p->join();
  }
  for (const auto until = Clock::now() + 30s; q.qsize() > 0 && Clock::now() < until;) {
    collect();
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(100ms);  // the last reports
  for (auto& c : consumers) {
    c->kill();
    c->join();
  }
  collect();
  EXPECT_EQ(corrupt, 0);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(q.qsize(), 0);
  EXPECT_GT(kills, 10);
  EXPECT_GT(delivered, 100);
  q.put({7, 7}, 10s);
  EXPECT_EQ(q.get(10s), (Words{7, 7}));
}

TEST(QueueDeath, ConsumerKilledMidGetDoesNotCorrupt) {
  mpxx::Queue<std::vector<std::uint32_t>> q;
  mpxx::Event about_to_get;
  // Put first, so that it goes into the ring (see QueueHandOver for a
  // consumer killed while it reads the producer's memory).
  q.put(std::vector<std::uint32_t>(32u << 20, 7u));  // 128 MiB: slow to decode
  mpxx::Process c(get_big, q, about_to_get);
  c.start();
  ASSERT_TRUE(about_to_get.wait(30s));
  c.kill();
  c.join();
  // Either the consumer finished (the message is gone) or it died first
  // (the message is still there, whole).
  try {
    auto v = q.get(5s);
    EXPECT_EQ(v.size(), 32u << 20);
    EXPECT_EQ(v.back(), 7u);
  } catch (const mpxx::Empty&) {
  }
  q.put({9}, 10s);
  EXPECT_EQ(q.get(10s), (std::vector<std::uint32_t>{9}));
}

TEST(QueueHandOver, AWaitingConsumerReadsALargeMessageFromTheProducersMemory) {
  mpxx::Queue<std::vector<std::uint8_t>> q;
  mpxx::Event built;
  mpxx::Process p(put_big_after<decltype(q)>, q, 200, std::size_t{64} << 20, built);
  p.start();
  ASSERT_TRUE(built.wait(60s));
  const long long before = mpxx_test::bytes_read_so_far();
  if (before < 0) {
    p.join();
    GTEST_SKIP() << "no /proc/self/io here";
  }
  const auto v = q.get(30s);  // waiting when the producer puts
  const long long read = mpxx_test::bytes_read_so_far() - before;
  p.join();
  ASSERT_EQ(v.size(), std::size_t{64} << 20);
  EXPECT_EQ(v[(40u << 20) + 3], 5);
  EXPECT_LT(read, 1 << 20) << "the message came through the ring";
  EXPECT_EQ(q.qsize(), 0);
}

TEST(QueueHandOver, AConsumerThatMayNotReadTheProducersMemoryGetsItThroughTheRing) {
  mpxx::Queue<std::vector<std::uint8_t>> q;
  mpxx::Queue<std::string> report;
  mpxx::Event waiting;
  mpxx::Process c(get_big_without_peer_reads, q, report, waiting);
  c.start();
  if (const auto ready = report.get(30s); ready != "ready") {
    c.join();
    GTEST_SKIP() << ready;
  }
  ASSERT_TRUE(waiting.wait(30s));
  EXPECT_TRUE(mpxx_test::wait_asleep_in(c.pid(), SYS_futex, waits_on_a_queue(c.pid()))) << "the consumer never slept in its get";
  q.put(std::vector<std::uint8_t>(8u << 20, 5));
  EXPECT_EQ(report.get(30s), "whole");
  c.join();
  EXPECT_EQ(c.exitcode(), 0);
}

// A consumer killed while it reads the producer's memory (killed once the
// value it fills has grown): the put goes on
// into the ring, so the message stays in the queue for the next consumer
// (as when a consumer dies getting it from the ring).
TEST(QueueHandOver, AConsumerKilledWhileReadingLeavesTheMessageInTheQueue) {
  constexpr std::size_t kSize = std::size_t{128} << 20;
  mpxx::JoinableQueue<std::vector<std::uint8_t>> q;
  mpxx::Process c(get_one, q);
  c.start();
  EXPECT_TRUE(mpxx_test::wait_asleep_in(c.pid(), SYS_futex, waits_on_a_queue(c.pid()))) << "the consumer never slept in its get";
  std::atomic<bool> killed_mid_read{false};
  std::thread killer([&] {
    killed_mid_read = mpxx_test::wait_rss_growth(c.pid(), kSize / 4, 30000ms);
    c.kill();
  });
  q.put(std::vector<std::uint8_t>(kSize, 6));
  killer.join();
  c.join();
  EXPECT_TRUE(killed_mid_read);
  const auto v = q.get(30s);
  ASSERT_EQ(v.size(), kSize);
  EXPECT_EQ(v[kSize - 1], 6);
  q.task_done();
  EXPECT_TRUE(q.join(5s)) << "the unfinished count is off";
}

// A producer killed while a consumer reads its memory (once the value it
// fills has grown): the message is lost, as one whose producer dies in the
// middle of its put, never half delivered; the consumer goes on waiting,
// and the queue keeps working.
TEST(QueueHandOver, AProducerKilledWhileItsMessageIsReadLosesIt) {
  mpxx::JoinableQueue<std::vector<std::uint8_t>> q;
  mpxx::Event built;
  mpxx::Process p(put_big_after<decltype(q)>, q, 200, std::size_t{128} << 20, built);
  p.start();
  ASSERT_TRUE(built.wait(60s));
  std::atomic<bool> killed_mid_read{false};
  std::thread killer([&] {
    killed_mid_read = mpxx_test::wait_rss_growth(::getpid(), std::size_t{32} << 20, 30000ms);
    p.kill();
    p.join();
  });
  EXPECT_THROW(q.get(3s), mpxx::Empty);
  killer.join();
  EXPECT_TRUE(killed_mid_read);
  EXPECT_TRUE(q.join(5s)) << "the lost message is still counted";
  q.put({1, 2}, 10s);
  EXPECT_EQ(q.get(10s), (std::vector<std::uint8_t>{1, 2}));
}

// Two consumers whose gets time out within a millisecond or two and come
// back, while large messages arrive every few milliseconds: whether a
// consumer waits when a message is put changes from put to put, so some
// go through hand-overs and the others through the ring (about 30 of 40 by
// hand-overs in the debug build). Every message is delivered once, whole.
TEST(QueueHandOver, ConsumersWithShortTimeoutsGetEveryLargeMessageOnce) {
  constexpr int kMessages = 40;
  mpxx::Queue<std::vector<std::uint8_t>> q;
  mpxx::Queue<int> got;
  mpxx::Process c1(get_impatiently, q, got, 0);
  mpxx::Process c2(get_impatiently, q, got, 2);
  c1.start();
  c2.start();
  for (int i = 1; i <= kMessages; ++i) {
    q.put(std::vector<std::uint8_t>(std::size_t{3} << 19, static_cast<std::uint8_t>(i)));  // 1.5 MiB
    std::this_thread::sleep_for(std::chrono::milliseconds(3 + i % 8));
  }
  q.put({});
  q.put({});
  std::vector<int> seen;
  int by_handover = 0;
  for (int i = 0; i < kMessages; ++i) {
    const int n = got.get(30s);
    by_handover += n >= 1000;
    seen.push_back(n % 1000);
  }
  c1.join();
  c2.join();
  if (mpxx_test::bytes_read_so_far() >= 0) EXPECT_GT(by_handover, 0) << "no message went by a hand-over";
  EXPECT_EQ(c1.exitcode(), 0);
  EXPECT_EQ(c2.exitcode(), 0);
  std::sort(seen.begin(), seen.end());
  std::vector<int> want(kMessages);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(seen, want);
  EXPECT_THROW(got.get_nowait(), mpxx::Empty) << "a message was delivered twice";
  EXPECT_EQ(q.qsize(), 0);
}

// Values of 16 and 100 MiB put into the ring (nobody waits to take them) and
// put by a child while this process waits for them or not: every byte in
// place, in order.
TEST(QueueHandOver, ValuesOf16And100MiBArriveWithEveryByteInPlace) {
  const std::vector<std::size_t> sizes{std::size_t{16} << 20, std::size_t{100} << 20};
  mpxx::Queue<std::vector<std::uint8_t>> q;
  for (std::size_t n : sizes) q.put(patterned(n));
  for (std::size_t n : sizes) EXPECT_TRUE(patterned_whole(q.get(10s), n)) << n << " bytes, through the ring";
  mpxx::Event go;
  mpxx::Process p(put_patterned<decltype(q)>, q, sizes, go);
  p.start();
  go.set();
  for (std::size_t n : sizes) EXPECT_TRUE(patterned_whole(q.get(60s), n)) << n << " bytes, from a child";
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(q.qsize(), 0);
}

bool stop_process(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  for (const auto until = Clock::now() + 10s; Clock::now() < until; std::this_thread::sleep_for(1ms))
    if (mpxx_test::proc_state(pid) == 'T') return true;
  return false;
}

// A child putting a patterned value of `size` bytes into the empty queue
// `q`, stopped (SIGSTOP) while that put copies the value into the ring (once
// the queue's shared memory has grown by `grown` bytes): its offer is then
// open. A put over before it was caught is taken back out and tried again;
// null if none was caught in 5 tries.
template <class Q>
std::unique_ptr<mpxx::Process> stopped_mid_copy(Q& q, std::size_t size, long grown) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    const long before = resident_queue_bytes();
    mpxx::Event go;
    auto p = std::make_unique<mpxx::Process>(put_patterned<Q>, q, std::vector<std::size_t>{size}, go);
    p->start();
    go.set();
    bool caught = false;
    for (const auto until = Clock::now() + 30s; !caught && q.qsize() == 0 && Clock::now() < until;
         std::this_thread::sleep_for(std::chrono::microseconds(200)))
      caught = resident_queue_bytes() - before >= grown;
    if (caught && stop_process(p->pid()) && q.qsize() == 0) return p;
    ::kill(p->pid(), SIGCONT);
    p->join();
    while (q.qsize() > 0) {
      q.get(10s);
      if constexpr (requires { q.task_done(); }) q.task_done();
    }
  }
  return nullptr;
}

// A put that started with nobody waiting still offers its message while it
// copies it into the ring: a consumer that comes meanwhile (here while the
// producer is stopped in the middle of that copy) reads the message from
// the producer's memory, and the ring's copy (here past the ring's warm
// 16 MiB) is given back.
TEST(QueueHandOver, AConsumerComingWhileALargePutFillsTheRingReadsTheProducersMemory) {
  if (mpxx_test::bytes_read_so_far() < 0) GTEST_SKIP() << "no /proc/self/io here";
  constexpr std::size_t kSize = std::size_t{96} << 20;
  mpxx::Queue<std::vector<std::uint8_t>> q;
  const long empty = resident_queue_bytes();
  auto p = stopped_mid_copy(q, kSize, 24l << 20);
  ASSERT_TRUE(p) << "the put was never caught copying into the ring";
  const long long before = mpxx_test::bytes_read_so_far();
  std::vector<std::uint8_t> v;
  try {
    v = q.get(10s);
  } catch (const mpxx::Empty&) {
  }
  const long long read = mpxx_test::bytes_read_so_far() - before;
  ::kill(p->pid(), SIGCONT);
  p->join();
  EXPECT_EQ(p->exitcode(), 0);
  EXPECT_TRUE(patterned_whole(v, kSize)) << "got " << v.size() << " bytes";
  EXPECT_LT(read, 1 << 20) << "the message came through the ring";
  EXPECT_EQ(q.qsize(), 0);
  EXPECT_LE(resident_queue_bytes() - empty, (17l << 20)) << "the ring's copy past its warm start was kept";
}

// A producer killed while it copies an offered message into the ring: no
// part of the message is ever delivered, its count of unfinished tasks is
// undone, and the next large put is handed over and arrives whole.
TEST(QueueHandOver, AProducerKilledWhileItFillsTheRingLeavesNoPartOfItsMessage) {
  mpxx::JoinableQueue<std::vector<std::uint8_t>> q;
  auto p = stopped_mid_copy(q, std::size_t{96} << 20, 8l << 20);
  ASSERT_TRUE(p) << "the put was never caught copying into the ring";
  p->kill();
  p->join();
  EXPECT_THROW(q.get(200ms), mpxx::Empty);
  EXPECT_TRUE(q.join(5s)) << "the killed producer's message is still counted";
  mpxx::Event go;
  mpxx::Process p2(put_patterned<decltype(q)>, q, std::vector<std::size_t>{std::size_t{16} << 20}, go);
  p2.start();
  go.set();
  EXPECT_TRUE(patterned_whole(q.get(30s), std::size_t{16} << 20));
  q.task_done();
  p2.join();
  EXPECT_TRUE(q.join(5s));
}

// A consumer killed while it reads a message offered by a put that was
// filling the ring: the put finishes its copy into the ring, and the
// message is there, whole, for the next consumer.
TEST(QueueHandOver, AConsumerKilledReadingAMessageOfferedMidCopyLeavesItInTheQueue) {
  constexpr std::size_t kSize = std::size_t{96} << 20;
  mpxx::JoinableQueue<std::vector<std::uint8_t>> q;
  auto p = stopped_mid_copy(q, kSize, 8l << 20);
  ASSERT_TRUE(p) << "the put was never caught copying into the ring";
  mpxx::Process c(get_one, q);
  c.start();
  const bool mid_read = mpxx_test::wait_rss_growth(c.pid(), kSize / 4, 30000ms);
  c.kill();
  c.join();
  ::kill(p->pid(), SIGCONT);
  p->join();
  EXPECT_TRUE(mid_read) << "the consumer was not reading";
  EXPECT_TRUE(patterned_whole(q.get(30s), kSize));
  q.task_done();
  EXPECT_TRUE(q.join(5s)) << "the unfinished count is off";
}

// A producer killed while it waits for its hand-over to be taken (the consumer
// it was made to is stopped in get) leaves the hand-over open. The next
// producer clears it, and the count of unfinished tasks comes out right;
// the stopped consumer, once continued, gets that producer's message.
TEST(QueueHandOver, AHandOverLeftOpenByAKilledProducerIsClearedByTheNextOne) {
  if (!mpxx_test::syscalls_visible()) GTEST_SKIP() << "/proc/<pid>/syscall cannot be read here";
  auto stopped = [](pid_t pid) {  // 't' when a debugger traces it
    const auto until = Clock::now() + 10s;
    for (;; std::this_thread::sleep_for(1ms)) {
      const char state = mpxx_test::proc_state(pid);
      if (state == 'T' || state == 't') return true;
      if (Clock::now() >= until) return false;
    }
  };
  for (int attempt = 0;; ++attempt) {
    ASSERT_LT(attempt, 5) << "the producer was never killed while its hand-over was open";
    mpxx::JoinableQueue<std::vector<std::uint8_t>> q;
    mpxx::Queue<std::string> report;
    mpxx::Event built;
    mpxx::Process c(get_and_report, q, report);
    c.start();
    struct Continued {  // never leave the consumer stopped
      mpxx::Process& c;
      ~Continued() {
        if (c.is_alive()) {
          ::kill(c.pid(), SIGCONT);
          c.kill();
        }
        c.join();
      }
    } continued{c};
    ASSERT_TRUE(mpxx_test::wait_in_syscall(c.pid(), SYS_futex, 20000ms, waits_on_a_queue(c.pid())));
    ASSERT_EQ(::kill(c.pid(), SIGSTOP), 0);
    ASSERT_TRUE(stopped(c.pid()));

    // Its only futex wait on the queue is for its hand-over to be taken.
    mpxx::Process p(put_big_after<decltype(q)>, q, 0, std::size_t{4} << 20, built);
    p.start();
    mpxx_test::wait_in_syscall(p.pid(), SYS_futex, 5000ms, waits_on_a_queue(p.pid()));
    p.kill();
    p.join();
    // Where the kill landed, from what it left: its message in the ring
    // (too late: it had withdrawn its hand-over), its count alone (killed while
    // it wrote the message into the ring), or neither, its hand-over still
    // open, counted (the case this test is about).
    if (q.qsize() != 0 || q.join(0s)) continue;  // the consumer is killed with its handle
    q.put(std::vector<std::uint8_t>(std::size_t{3} << 20, 9));  // handed over to the stopped consumer, then into the ring
    ::kill(c.pid(), SIGCONT);
    EXPECT_EQ(report.get(30s), "9:3145728");
    c.join(30s);
    EXPECT_EQ(c.exitcode(), 0);
    EXPECT_TRUE(q.join(5s)) << "the killed producer's message is still counted";
    EXPECT_EQ(q.qsize(), 0);
    return;
  }
}

TEST_P(QueueTest, JoinableQueueWithDaemonConsumers) {
  mpxx::JoinableQueue<int> q(5);
  mpxx::RawValue<long> sum(0);
  mpxx::Process w({.daemon = true, .context = &mpxx::get_context(GetParam())}, joinable_worker, q, sum);
  w.start();
  for (int i = 1; i <= 100; ++i) q.put(i);
  EXPECT_TRUE(q.join(30s));
  EXPECT_EQ(sum.value(), 5050);
  w.terminate();
  w.join();
}

TEST(JoinableQueue, TaskDoneTooOftenAndJoinTimeout) {
  mpxx::JoinableQueue<int> q;
  EXPECT_THROW(q.task_done(), mpxx::ValueError);
  q.put(1);
  double t = seconds([&] { EXPECT_FALSE(q.join(200ms)); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  q.get();
  q.task_done();
  EXPECT_TRUE(q.join(1s));
  q.join();
  EXPECT_THROW(q.task_done(), mpxx::ValueError);
}

TEST_P(QueueTest, SimpleQueueAcrossAChild) {
  mpxx::SimpleQueue<std::string> in, out;
  mpxx::Process p(opts(), simple_echo, in, out);
  p.start();
  EXPECT_TRUE(out.empty());
  in.put("hi");
  EXPECT_EQ(out.get(), "echo: hi");
  p.join();
}

}  // namespace
