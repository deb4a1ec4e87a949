// src/queue/layout.hpp - the header at the start of a queue's memfd.
// Internal.
//
// Every process attached to a queue maps the same memfd: this header
// (kQueueHeaderBytes), then the ring. The header holds the ring's positions,
// locks and counters (queue.cpp) and the hand-over's slot (handover.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mpxx::detail {

inline constexpr std::uint32_t kQueueMagic = 0x51554555;  // "QUEU"
inline constexpr std::size_t kQueueHeaderBytes = 4096;

// The most pieces (Writer::pieces) a handed-over message may have.
inline constexpr std::size_t kHandoverPieces = 16;

// A large message handed straight to a consumer waiting in get (see
// handover.hpp). `state` is the hand-over's state in its low byte and a
// generation above it; it changes only by compare-and-swap (and is a futex
// word for the producer waiting on it). The fields after `consumer` are
// written by the producer holding put_lock before it publishes PENDING.
struct alignas(64) HandoverSlot {
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> consumer;  // pid of the consumer waiting in get, or 0
  std::uint32_t producer_pid;
  std::uint32_t taker_pid;              // the consumer that took it (written before TAKEN)
  std::uint64_t taker_start;            // and its start time
  std::uint64_t producer_start;         // the producer's start time: with its pid, names it
  std::uint64_t size;
  std::uint32_t count;
  std::byte pieces[16 * kHandoverPieces];  // (address, length) pairs
};

struct QueueHeader {
  struct alignas(64) Line {
    std::byte bytes[64];
  };
  std::uint32_t magic;
  std::uint32_t joinable;
  std::uint64_t capacity;
  std::int64_t maxsize;
  Line put_lock;  // lock cells (see sync.cpp), one cache line each
  Line get_lock;
  // The producers' line: written under put_lock, read by consumers.
  alignas(64) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint32_t> data_seq;
  std::atomic<std::uint32_t> consumers_waiting;
  std::atomic<std::uint64_t> puts;  // messages ever put
  std::uint64_t head_seen;          // a head the producers have seen (<= head)
  std::uint64_t data_woken;         // data_sleeps as read by the last completed wake-up
  // The consumers' line: written under get_lock (data_sleeps also by
  // wait_readable, which holds no lock), read by producers.
  alignas(64) std::atomic<std::uint64_t> head;
  std::atomic<std::uint32_t> space_seq;
  std::atomic<std::uint32_t> producers_waiting;
  std::atomic<std::uint64_t> gets;  // messages ever taken
  std::uint64_t tail_seen;          // a tail the consumers have seen (<= tail)
  std::atomic<std::uint64_t> data_sleeps;  // bumped by every look of a registered waiter (never wraps)
  alignas(64) std::atomic<std::int64_t> unfinished;
  std::atomic<std::uint32_t> unfinished_seq;
  std::atomic<std::uint32_t> joiners_waiting;
  HandoverSlot handover;
};
static_assert(sizeof(QueueHeader) <= kQueueHeaderBytes);

}  // namespace mpxx::detail
