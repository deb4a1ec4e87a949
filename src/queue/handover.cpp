// A queue's hand-over to a waiting consumer (see handover.hpp): the
// producer's side (hand_over), the consumer's (HandoverTaker), and the
// states of the header's HandoverSlot that they move each other through
// (see docs/design.md, "Queue hand-over to a waiting consumer").
#include "queue/handover.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <optional>

#include "channel/peer_read.hpp"
#include "sys/fd.hpp"
#include "sys/futex.hpp"
#include "sys/process_identity.hpp"

namespace mpxx::detail {

namespace {

constexpr std::uint32_t handover_word(std::uint32_t word, HandoverState s) { return (word & ~0xffu) | s; }
// How long a producer waits for a waiting consumer to take its message
// before it starts copying the message into the ring.
constexpr auto kHandoverPatience = std::chrono::milliseconds(10);

// Whether the process that started at `start` still holds `pid` (a pid
// taken over by another process does not count).
// Conservative: a process that cannot be told about counts as alive.
bool still_alive(std::uint32_t pid, std::uint64_t start) {
  return sys::ProcessIdentity{static_cast<pid_t>(pid), start}.liveness() != sys::Liveness::gone;
}

// Undoes a put's count of unfinished tasks when the message does not go in.
void uncount(QueueHeader& h) {
  if (h.joinable) h.unfinished.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace


bool hand_over(QueueHeader& h, const wire::Writer& message, const std::function<bool()>& copy_more) {
  HandoverSlot& slot = h.handover;
  if (message.refs().empty()) return false;
  if (h.tail.load(std::memory_order_relaxed) != h.head.load(std::memory_order_acquire)) return false;
  const auto pieces = message.pieces(0);
  const sys::ProcessIdentity me = sys::ProcessIdentity::self();
  if (pieces.size() > kHandoverPieces || me.start_time == 0) return false;
  std::uint32_t word = slot.state.load(std::memory_order_acquire);
  // A hand-over still open belongs to a producer that died holding put_lock.
  if (handover_state(word) == kPending ||
      (handover_state(word) == kTaken && !still_alive(slot.taker_pid, slot.taker_start))) {
    if (!slot.state.compare_exchange_strong(word, handover_word(word + 0x100, kNone),
                                            std::memory_order_acq_rel))
      return false;  // taken meanwhile: its consumer settles it
    word = handover_word(word + 0x100, kNone);
    uncount(h);
  }
  if (handover_state(word) == kTaken) return false;  // a consumer is still finding its producer dead
  slot.producer_pid = static_cast<std::uint32_t>(me.pid);
  slot.producer_start = me.start_time;
  slot.size = message.total_size();
  slot.count = static_cast<std::uint32_t>(pieces.size());
  write_peer_read_pieces(slot.pieces, pieces);
  // Counted before any consumer can take it (and call task_done).
  if (h.joinable) h.unfinished.fetch_add(1, std::memory_order_relaxed);
  const std::uint32_t pending = handover_word(word + 0x100, kPending);
  if (!slot.state.compare_exchange_strong(word, pending, std::memory_order_acq_rel)) {
    uncount(h);
    return false;
  }
  h.data_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h.data_seq, INT_MAX);

  // While the offer is open, the message goes into the ring piece by piece
  // (see docs/design.md, "Queue hand-over to a waiting consumer"). A
  // consumer already waiting in get takes it within microseconds: it has
  // that long before the copy starts, so the two do not share the CPUs.
  std::uint32_t now = pending;
  auto changed = [&] { return (now = slot.state.load(std::memory_order_acquire)) != pending; };
  const std::uint32_t consumer = slot.consumer.load(std::memory_order_acquire);
  if (consumer != 0 && id_alive(consumer)) {
    const FutexDeadline patience = FutexDeadline::after(kHandoverPatience);
    while (!spin_until(changed) && !patience.expired()) futex_wait(&slot.state, pending, patience);
  }
  while (!changed()) {
    if (copy_more()) continue;
    // All in the ring: withdrawn, unless a consumer took it just now.
    if (slot.state.compare_exchange_strong(now, handover_word(pending, kNone), std::memory_order_acq_rel)) {
      uncount(h);
      return false;
    }
  }
  while (handover_state(now) == kTaken) {
    futex_wait(&slot.state, now, FutexDeadline::after(kLivenessSlice));
    const std::uint32_t taken = now;
    now = slot.state.load(std::memory_order_acquire);
    if (now == taken && !still_alive(slot.taker_pid, slot.taker_start) &&
        slot.state.compare_exchange_strong(now, handover_word(taken, kNone), std::memory_order_acq_rel)) {
      uncount(h);
      return false;  // its consumer died reading it: into the ring
    }
  }
  // REFUSED, or NONE (a consumer took this producer for dead): the consumer
  // undid the count.
  return handover_state(now) == kDone;
}

bool HandoverTaker::take(const Consume& consume) {
  HandoverSlot& slot = h_.handover;
  std::uint32_t word = slot.state.load(std::memory_order_acquire);
  if (handover_state(word) != kPending) return false;
  const sys::ProcessIdentity me = sys::ProcessIdentity::self();
  slot.taker_pid = static_cast<std::uint32_t>(me.pid);
  slot.taker_start = me.start_time;
  const std::uint32_t taken = handover_word(word, kTaken);
  if (!slot.state.compare_exchange_strong(word, taken, std::memory_order_acq_rel)) return false;
  // Settled exactly once, whatever leaves this function (REFUSED if an
  // exception does before a decision: the producer then uses the ring).
  struct Settle {
    QueueHeader& h;
    std::uint32_t taken;
    bool done = false;
    void operator()(HandoverState s) {
      done = true;
      std::uint32_t expected = taken;
      if (h.handover.state.compare_exchange_strong(expected, handover_word(taken, s),
                                                   std::memory_order_acq_rel) &&
          s != kDone)
        uncount(h);  // not delivered: see hand_over()
      futex_wake(&h.handover.state, INT_MAX);
    }
    ~Settle() {
      if (!done) (*this)(kRefused);
    }
  } settle{h_, taken};
  const auto pid = static_cast<pid_t>(slot.producer_pid);
  const std::uint64_t start = slot.producer_start;
  const std::uint64_t size = slot.size;
  const std::uint32_t count = std::min<std::uint32_t>(slot.count, kHandoverPieces);
  std::byte pieces[16 * kHandoverPieces];
  std::memcpy(pieces, slot.pieces, 16 * count);
  bool gone = false;
  sys::UniqueFd producer = open_process(pid, start, gone);
  if (!producer) {
    settle(gone ? kNone : kRefused);
    return false;
  }
  std::optional<PeerReadSource> source;
  wire::Writer first;
  try {
    source.emplace(std::span<const std::byte>(pieces, 16 * count), size, pid, std::move(producer));
    if (!source->start(first, static_cast<std::size_t>(std::min<std::uint64_t>(size, 64u << 10)))) {
      settle(kRefused);
      return false;
    }
  } catch (...) {
    settle(source && source->sender_lost() ? kNone : kRefused);
    return false;
  }
  try {
    consume({first.data(), first.size()}, &*source);
  } catch (...) {
    if (source->sender_lost()) {
      settle(kNone);
      return false;
    }
    // A failed decode consumes the message, as from the ring; a failed
    // read leaves it to its producer, which puts it into the ring.
    settle(source->read_failed() ? kRefused : kDone);
    throw;
  }
  settle(kDone);
  return true;
}

}  // namespace mpxx::detail
