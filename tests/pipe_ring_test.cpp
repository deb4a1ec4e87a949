// A Pipe's shared-memory ring (src/channel/pipe_ring.hpp) at its worst moments: a
// writer that dies holding the writers' lock with its marker published
// (before or after its message went out on the socket), a reader that dies
// after taking a marker, a poller while another thread reads at the
// socket's front. These tests drive the ring's internals to stop a process
// exactly there.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "channel/connection_state.hpp"
#include "channel/pipe_ring.hpp"
#include "sys/fd.hpp"
#include "mpxx/mpxx.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace ring_targets {

const std::string kFirst(4096, 'A');  // over kMaxInline: it takes the socket

// A writer of `c` that dies holding the writers' lock with its marker
// published, before its socket send or after it (before it could say so).
void die_behind_marker(mpxx::Connection c, bool after_send) {
  mpxx::detail::ConnState& st = mpxx::detail::ConnAccess::state(c);
  st.ring->write_lock().acquire();
  const std::uint64_t at = st.ring->put_marker(st.fd.get(), mpxx::detail::kRecordOnSocket);
  if (after_send) mpxx::detail::send_on_socket(st, kFirst.data(), kFirst.size(), {}, at);
  std::_Exit(0);
}

// A writer of `c` that dies holding the writers' lock once the first piece
// of a kTorn-byte message has gone out on the socket (pipe_ring.hpp, Pieces).
constexpr std::size_t kTorn = 100000;
void die_between_pieces(mpxx::Connection c) {
  mpxx::detail::ConnState& st = mpxx::detail::ConnAccess::state(c);
  st.ring->write_lock().acquire();
  const std::uint64_t at = st.ring->put_marker(st.fd.get(), mpxx::detail::kRecordOnSocket);
  unsigned char head[mpxx::detail::kTagBytes + 4] = {mpxx::detail::kTag};
  std::memcpy(head + 1, &at, sizeof at);
  for (int i = 0; i < 4; ++i) head[mpxx::detail::kTagBytes + i] = static_cast<unsigned char>(kTorn >> (24 - 8 * i));
  std::string first(mpxx::detail::kSocketPiece - sizeof head, 'T');
  iovec iov[2] = {{head, sizeof head}, {first.data(), first.size()}};
  if (!mpxx::sys::sendmsg_all(st.fd.get(), iov, 2, {})) std::_Exit(3);
  std::_Exit(0);
}

// A reader of `c` that dies after taking a marker, before reading its
// message from the socket.
void die_after_taking_a_marker(mpxx::Connection c) {
  mpxx::detail::ConnState& st = mpxx::detail::ConnAccess::state(c);
  while (!st.ring->has_record()) std::this_thread::sleep_for(1ms);
  mpxx::detail::wire::Writer payload;
  st.ring->take(payload, std::nullopt);
  std::_Exit(0);
}

}  // namespace ring_targets

namespace {
using ring_targets::kFirst;
constexpr std::size_t kLast = 3 * mpxx::detail::kSocketPiece;  // in four pieces

// Joins a thread when the test leaves, also by an exception (a joinable
// std::thread destroyed would end the whole test binary).
struct Joined {
  std::thread& t;
  ~Joined() {
    if (t.joinable()) t.join();
  }
};

// The dead writer's case (`die` with `args`), then two more messages from
// the writer that takes the lock over (through the ring, then the socket,
// in pieces). The reader reads `expected` messages only afterwards, or is
// already waiting behind the dead writer's marker.
template <class... Args>
std::vector<std::string> after_a_dead_writer(std::size_t expected, bool reader_waits,
                                             void (*die)(mpxx::Connection, Args...), Args... args) {
  auto [a, b] = mpxx::Pipe();
  std::vector<std::string> got;
  std::thread reader;
  Joined joined{reader};
  auto read_all = [&got, expected, b = b]() mutable {
    for (std::size_t i = 0; i < expected; ++i) {
      if (!b.poll(20s)) return;  // fails the comparison instead of hanging
      got.push_back(b.recv_bytes());
    }
  };
  if (reader_waits) reader = std::thread(read_all);
  mpxx::Process p(die, a, args...);
  p.start();
  p.join();
  if (reader_waits) std::this_thread::sleep_for(20ms);  // the reader takes the marker first
  a.send_bytes(std::string("second"));  // takes the lock over: cancels the dead one's marker
  a.send_bytes(std::string(kLast, 'C'));
  if (reader_waits) reader.join();
  else read_all();
  return got;
}

TEST(PipeRing, AWriterKilledAfterItsSocketSendLosesNothing) {
  const std::vector<std::string> want = {kFirst, "second", std::string(kLast, 'C')};
  EXPECT_EQ(after_a_dead_writer(3, false, ring_targets::die_behind_marker, true), want);
  EXPECT_EQ(after_a_dead_writer(3, true, ring_targets::die_behind_marker, true), want);
}

TEST(PipeRing, AWriterKilledBeforeItsSocketSendLeavesNothingToWaitFor) {
  const std::vector<std::string> want = {"second", std::string(kLast, 'C')};
  EXPECT_EQ(after_a_dead_writer(2, false, ring_targets::die_behind_marker, false), want);
  EXPECT_EQ(after_a_dead_writer(2, true, ring_targets::die_behind_marker, false), want);
}

// A message whose writer died between two of its pieces is dropped; the
// next writer's messages come whole, the stream is not broken.
TEST(PipeRing, AWriterKilledBetweenTwoPiecesOfAMessageLosesOnlyThatMessage) {
  const std::vector<std::string> want = {"second", std::string(kLast, 'C')};
  EXPECT_EQ(after_a_dead_writer(2, false, ring_targets::die_between_pieces), want);
  EXPECT_EQ(after_a_dead_writer(2, true, ring_targets::die_between_pieces), want);
}

}  // namespace

namespace {

// A reader of b dies after taking the marker of a message sent on a (4096
// x's), before reading it. False if it never took it (it is killed).
bool a_reader_died_behind_a_marker(mpxx::Connection a, mpxx::Connection b) {
  mpxx::Process p(ring_targets::die_after_taking_a_marker, b);
  p.start();
  a.send_bytes(std::string(4096, 'x'));
  p.join(20s);
  if (!p.is_alive()) return true;
  p.kill();
  p.join();
  return false;
}

// Its message is lost with it (as with a socket); the next reader gets the
// messages after it, whether it reads at once or sleeps first.
TEST(PipeRing, AMessageWhoseReaderDiedIsDroppedNotGivenToTheNextReader) {
  for (bool sleeps_first : {false, true}) {
    auto [a, b] = mpxx::Pipe();
    ASSERT_TRUE(a_reader_died_behind_a_marker(a, b));
    std::vector<std::string> got;
    std::thread reader([&got, b = b]() mutable {
      try {
        for (int i = 0; i < 2 && b.poll(20s); ++i) got.push_back(b.recv_bytes());
      } catch (const std::exception& e) {
        got.push_back(std::string("error: ") + e.what());
      }
    });
    Joined joined{reader};
    if (sleeps_first) std::this_thread::sleep_for(20ms);  // the reader finds only x's bytes
    a.send_bytes(std::string(4096, 'y'));
    a.send_bytes(std::string("z"));
    reader.join();
    EXPECT_EQ(got, (std::vector<std::string>{std::string(4096, 'y'), "z"})) << sleeps_first;
  }
}

}  // namespace

namespace {

// poll(timeout) returns in time while another thread reads at the socket's
// front (as a receiver does for a whole socket message), though the socket
// shows readable all along.
TEST(PipeRing, PollKeepsItsTimeoutWhileAnotherThreadReadsAtTheFront) {
  using mpxx::detail::PipeRingEnd;
  auto [a, b] = mpxx::Pipe();
  const unsigned char bell = mpxx::detail::kBell;
  ASSERT_EQ(::send(mpxx::detail::ConnAccess::state(a).fd.get(), &bell, 1, 0), 1);
  std::atomic<int> polled{-1};
  std::thread poller;
  Joined joined{poller};
  std::chrono::steady_clock::duration took{};
  {
    PipeRingEnd::FrontTurn turn(*mpxx::detail::ConnAccess::state(b).ring, PipeRingEnd::Drainer::receiver);
    ASSERT_TRUE(turn.held());
    const auto t0 = std::chrono::steady_clock::now();
    poller = std::thread([&polled, b = b]() mutable { polled = b.poll(100ms) ? 1 : 0; });
    while (polled < 0 && std::chrono::steady_clock::now() - t0 < 10s) std::this_thread::sleep_for(1ms);
    took = std::chrono::steady_clock::now() - t0;
  }  // the turn is given back: a poller still waiting ends now
  poller.join();
  EXPECT_LT(took, 5s) << "poll(100ms) waited for the other thread's turn";
  EXPECT_EQ(polled, 0) << "only a bell was there";
}

}  // namespace

namespace {

// A dead reader's message, then the writer's close: mpxx::wait reports the
// end of the stream (it does not hold back at that message forever), and
// recv drops the message and raises EOFError.
TEST(PipeRing, TheEndOfTheStreamShowsBehindADeadReadersMessage) {
  auto [a, b] = mpxx::Pipe();
  ASSERT_TRUE(a_reader_died_behind_a_marker(a, b));
  a.close();
  const auto ready = mpxx::wait(std::vector<mpxx::Connection>{b}, 10s);
  EXPECT_EQ(ready.size(), 1u);
  EXPECT_TRUE(b.poll(0s));
  EXPECT_THROW(b.recv_bytes(), mpxx::EOFError);
}

}  // namespace
