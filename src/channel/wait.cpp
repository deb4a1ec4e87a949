// src/channel/wait.cpp - waiting until connections are readable:
// Connection::poll and mpxx::wait (wait_objects). A Pipe's message may wait
// in its shared-memory ring, where poll(2) does not look, and a readable
// socket may hold only bells (pipe_ring.hpp): both look at the ring too.
#include "mpxx/connection.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "channel/connection_state.hpp"
#include "channel/pipe_ring.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

namespace {

// A poller that finds only a bell a sleeping receiver will drain waits for
// it to (the socket stays readable until then) in 50 us naps; after 2 ms
// it drains the bell itself: that sleeper may be a process that died
// asleep, whose count never goes down.
class HoldBack {
 public:
  bool expired() const noexcept {
    return holding_ && std::chrono::steady_clock::now() - since_ > std::chrono::milliseconds(2);
  }
  void pause_if(bool held_back) {
    if (!held_back) {
      holding_ = false;
      return;
    }
    if (!holding_) {
      since_ = std::chrono::steady_clock::now();
      pause_ = std::chrono::microseconds(50);
    }
    holding_ = true;
    // A receiver may hold the front for a whole large message: back off.
    std::this_thread::sleep_for(pause_);
    pause_ = std::min(2 * pause_, std::chrono::microseconds(1000));
  }

 private:
  // Not an optional<time_point>: g++ 12 -O2 warns that its value may be
  // read uninitialized.
  bool holding_ = false;
  std::chrono::steady_clock::time_point since_{};
  std::chrono::microseconds pause_{50};
};

// After poll() found a ring's socket readable: true if a message (or the
// end of the stream) is really there, not only bells.
bool ring_confirm(int fd, PipeRingEnd& ring, bool& held_back, bool force) {
  const PipeRingEnd::Front front =
      ring.drain_bells(fd, force ? PipeRingEnd::Drainer::poller_forced : PipeRingEnd::Drainer::poller);
  held_back = front == PipeRingEnd::Front::held_back;
  // Held back, a message still has its record in the ring; the end of the
  // stream shows as a hang-up.
  return front == PipeRingEnd::Front::eof || front == PipeRingEnd::Front::message || ring.has_record() ||
         (held_back && peer_closed(fd));
}

bool ring_ready(const Connection& c) noexcept {
  const auto& st = ConnAccess::handle(c);
  return st && st->fd && st->ring && st->readable && st->ring->has_record();
}

bool ring_confirm(const Connection& c, bool& held_back, bool force) {
  const auto& st = ConnAccess::handle(c);
  std::shared_ptr<PipeRingEnd> ring = st ? st->ring : nullptr;
  if (!ring || !st->fd) return true;
  return ring_confirm(st->fd.get(), *ring, held_back, force);
}

}  // namespace
}  // namespace detail

using detail::ConnState;

bool Connection::poll_ns(std::chrono::nanoseconds timeout) {
  ConnState& c = detail::live(st_, true, false);
  auto deadline = sys::Deadline::after(timeout);
  std::shared_ptr<detail::PipeRingEnd> ring = c.ring;
  if (!ring) return sys::wait_readable(c.fd.get(), deadline);
  detail::HoldBack hold;
  for (;;) {
    if (ring->has_record()) return true;
    if (!sys::wait_readable(c.fd.get(), deadline)) return ring->has_record();
    bool held_back = false;
    if (detail::ring_confirm(c.fd.get(), *ring, held_back, hold.expired())) return true;
    if (deadline.expired()) return ring->has_record();  // held back by another thread's turn
    hold.pause_if(held_back);
  }
}

std::vector<std::size_t> detail::wait_objects(const std::vector<int>& fds,
                                              const std::vector<const Connection*>& conns,
                                              std::chrono::nanoseconds timeout) {
  auto deadline = timeout == std::chrono::nanoseconds::max() ? sys::Deadline::never()
                                                            : sys::Deadline::after(timeout);
  HoldBack hold;
  for (;;) {
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < conns.size(); ++i)
      if (conns[i] && ring_ready(*conns[i])) ready.push_back(i);
    // Messages already in a ring: add what else is ready now, and return.
    auto polled = sys::wait_any(fds, ready.empty() ? deadline : sys::Deadline::after({}));
    bool held_back = false;
    for (std::size_t i : polled) {
      bool held = false;
      if (!conns[i] || ring_confirm(*conns[i], held, hold.expired())) ready.push_back(i);
      held_back = held_back || held;
    }
    std::sort(ready.begin(), ready.end());
    ready.erase(std::unique(ready.begin(), ready.end()), ready.end());
    if (!ready.empty() || deadline.expired()) return ready;
    hold.pause_if(held_back);
  }
}

}  // namespace mpxx
