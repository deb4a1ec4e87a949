// src/lane.hpp - the shared-memory lane of a Pipe between mpxx processes.
// Internal.
//
// A Pipe() is a Unix socket pair plus, for each direction, a byte ring in
// shared memory. Small messages (up to kMaxInline bytes) go through the
// ring; a receiver that is busy (spinning in recv) sees them without any
// system call on either side. The socket still carries everything a ring
// cannot: messages with fds, large ones, and the end of the stream (the
// kernel reports a closed or dead peer there, and nowhere else).
//
// Order. Every message has a record in the ring, in send order; a message
// that travels on the socket leaves a marker record there first, and the
// receiver that takes the marker reads that message from the socket. So
// the ring alone decides the order, whichever way the bytes went.
//
// Bells. A receiver that stops spinning sleeps in poll() on the socket
// (so mpxx::wait and Connection::poll see it too). A sender that publishes a
// record while no receiver promises to look (`reader_until` has passed)
// writes one bell byte (0x80) to the socket, unless one is already
// unread. No message on the socket can start with 0x80 (CPython's length
// header starts with 0x00-0x7f or 0xff), so receivers skip bells in front
// of a message and drain them when they wake.
//
// Writers of one end (copies of it in several processes, or threads) are
// serialized by an mpxx::Lock, which survives a holder that dies; a record
// becomes visible only once it is whole (the tail moves last), so a writer
// killed mid-copy leaves nothing behind. Readers are not serialized, as in
// CPython: two processes reading one end at once is a program error there
// too. The reader validates every record it takes (lengths, flags), so a
// corrupt ring is a ProtocolError, never an out-of-bounds read.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "mpxx/detail/shm.hpp"
#include "mpxx/sync.hpp"

namespace mpxx::detail::wire {
class Writer;
}

namespace mpxx::detail {

// A lane fits in 16 KiB, so it is carved from a shared slab (shm.hpp) and a
// Pipe costs no file descriptor beyond its two sockets, as in CPython.
inline constexpr std::size_t kLaneCapacity = 7936;  // bytes per direction
inline constexpr std::size_t kMaxInline = 2048;     // larger messages take the socket
inline constexpr unsigned char kBell = 0x80;

// Record flags.
inline constexpr std::uint32_t kRecordOnSocket = 1;  // a marker: the message is on the socket

class LaneEnd {
 public:
  // A new lane; the two ends of a Pipe.
  static std::pair<std::shared_ptr<LaneEnd>, std::shared_ptr<LaneEnd>> create_pair();

  // ---- writing (into this end's outgoing ring)
  Lock& write_lock() noexcept { return wlock_; }
  // Publishes one record (the caller holds write_lock()), waiting for room
  // while the ring is full; then rings the bell on `sock` if no reader is
  // looking. OSError(EPIPE) if the other end is gone.
  void put(int sock, const void* data, std::size_t n, std::uint32_t flags);

  // ---- reading (from this end's incoming ring)
  bool has_record() const noexcept;
  // Spins (promising senders that it looks, so they ring no bell) for up
  // to `spin` while the ring is empty; true once a record is there.
  bool spin_for_record(std::chrono::nanoseconds spin) noexcept;
  // Takes the next record (has_record() must be true): appends its payload
  // to out and returns (flags, length). A payload longer than maxlength is
  // consumed but not copied. ProtocolError if the ring is corrupt.
  std::pair<std::uint32_t, std::uint64_t> take(wire::Writer& out, std::optional<std::size_t> maxlength);
  // After poll() reported `sock` readable: forgets the bell and reads the
  // bell bytes at the front of the socket. Returns false at EOF (nothing
  // but bells before it); sets data_waiting if a message's bytes are next.
  bool drain_bells(int sock, bool& data_waiting);
  // Before reading a message from the socket (after its marker): skips the
  // bells in front of it, blocking until its first byte (false at EOF).
  // Every bell consumed clears the flag, or senders would stop ringing.
  bool skip_bells(int sock);

  // The wire form: the shared block, the side, the write lock.
  void save(wire::OutArchive& ar) const;
  static std::shared_ptr<LaneEnd> load(wire::InArchive& ar);

  struct Dir;

 private:
  LaneEnd(ShmBlock block, int side, Lock wlock);
  Dir& out() const noexcept;
  Dir& in() const noexcept;
  std::byte* ring(int dir) const noexcept;

  ShmBlock block_;
  int side_;
  Lock wlock_;  // serializes writers of this end (every copy, every process)
};

}  // namespace mpxx::detail
