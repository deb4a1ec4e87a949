// src/queue/handover.hpp - a queue's hand-over to a waiting consumer.
// Internal.
//
// A large message put while the ring is empty is offered to a consumer in
// get while the producer copies it into the ring: one that takes the offer
// reads the message from the producer's memory (channel/peer_read.hpp), so
// the message is copied once, not into the ring's fresh shared pages and
// out again. Both
// sides meet in the header's HandoverSlot (layout.hpp); the states and who
// changes them: see docs/design.md, "Queue hand-over to a waiting consumer".
#pragma once

#include <cstddef>
#include <functional>
#include <span>

#include "mpxx/detail/buffer.hpp"
#include "queue/layout.hpp"
#include "sys/futex.hpp"
#include "sys/process_identity.hpp"

namespace mpxx::detail {

// The states of the slot's word (its low byte; docs/design.md, "Queue
// hand-over to a waiting consumer").
enum HandoverState : std::uint32_t { kNone = 0, kPending = 1, kTaken = 2, kDone = 3, kRefused = 4 };
constexpr std::uint32_t handover_state(std::uint32_t word) { return word & 0xff; }

// The producer's side, called with put_lock held (so no other message can
// go in meanwhile), once the ring has room for `message`: offers it to a
// consumer in get, if the ring is empty (so the order is kept), while it
// copies the message into the ring with `copy_more` (which copies the next
// piece and returns whether any is left), and waits while a consumer that
// took it copies it. Only for a put without a timeout, of a message whose
// Writer references a block (a vector of numbers or a string: the copy runs
// no user code). True if the message was handed over (the ring's copy, as
// far as it got, is then garbage past the tail); false if it must go into
// the ring after all: the caller finishes the copy (copy_more until it
// returns false) and publishes the record. That is when no consumer took it
// before it was in the ring, the one that did may not read this process's
// memory, or it died reading it (the message is then still this put's to
// make, as a message stays in the ring when a consumer dies getting it).
bool hand_over(QueueHeader& h, const wire::Writer& message, const std::function<bool()>& copy_more);

// The consumer's side: a consumer holding get_lock, registered for as long
// as this lives as the one producers may hand messages to (if `takes`, and
// this process can name itself to a producer).
class HandoverTaker {
 public:
  using Consume = std::function<void(std::span<const std::byte>, wire::Source*)>;

  // Inline: every get makes one (as calls into another file they cost
  // small-item gets ~15% of their rate).
  HandoverTaker(QueueHeader& h, bool takes)
      : h_(h), registered_(takes && sys::ProcessIdentity::self().start_time != 0) {
    if (registered_) h_.handover.consumer.store(current_pid(), std::memory_order_release);
  }
  ~HandoverTaker() {
    if (registered_) h_.handover.consumer.store(0, std::memory_order_release);
  }
  HandoverTaker(const HandoverTaker&) = delete;
  HandoverTaker& operator=(const HandoverTaker&) = delete;

  // Whether it is registered and a producer has a message waiting for it.
  bool pending() const {
    return registered_ && handover_state(h_.handover.state.load(std::memory_order_acquire)) == kPending;
  }
  // Takes the message handed over and gives it to `consume`, read from the
  // producer's memory as the decoder asks for it. True if it was consumed
  // (consume's exception, if any, is passed on: the message is consumed
  // all the same); false if there was none to take after all, this process
  // may not read the producer's memory (the producer then puts the message
  // into the ring), or the producer died while it was read (it is lost, as
  // a message whose producer dies in the middle of a put).
  bool take(const Consume& consume);

 private:
  QueueHeader& h_;
  bool registered_;
};

}  // namespace mpxx::detail
