// src/channel/pipe_ring.hpp - the shared-memory ring of a Pipe between mpxx processes.
// Internal.
//
// A Pipe() is a Unix socket pair plus, for each direction, a byte ring in
// shared memory. Small messages go through the ring; the socket carries
// what a ring cannot (fds, large messages, the end of the stream), each
// behind a marker record in the ring, so the ring alone decides the order.
// Bells, pieces, cancels, the front turn and what a writer or reader that
// dies leaves behind: docs/design.md, "The Pipe ring's protocol".
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
class Reader;
class Writer;
}

namespace mpxx::detail {

// A ring fits in 16 KiB, so it is carved from a shared slab (shm.hpp) and a
// Pipe costs no file descriptor beyond its two sockets, as in CPython.
inline constexpr std::size_t kPipeRingCapacity = 7936;  // bytes per direction
inline constexpr std::size_t kMaxInline = 2048;     // larger messages take the socket
inline constexpr unsigned char kBell = 0x80;
inline constexpr unsigned char kTag = 0x81;       // then the marker's u64 position
inline constexpr unsigned char kTagMore = 0x82;   // a later piece of that message: the same position
inline constexpr std::size_t kTagBytes = 9;
// Bytes per send of a tagged message on the socket, headers included (see
// "Pieces" in docs/design.md, "The Pipe ring's protocol").
inline constexpr std::size_t kSocketPiece = 32 * 1024 - 64;

// Record flags.
inline constexpr std::uint32_t kRecordOnSocket = 1;  // a marker: the message is on the socket
inline constexpr std::uint32_t kRecordCancel = 2;    // the marker before it lost its message

// Whether a socket's peer has closed (every copy of the other end), even
// with data still unread.
bool peer_closed(int sock);

class PipeRingEnd {
 public:
  // A new ring; the two ends of a Pipe.
  static std::pair<std::shared_ptr<PipeRingEnd>, std::shared_ptr<PipeRingEnd>> create_pair();

  // ---- writing (into this end's outgoing ring), holding write_lock()
  Lock& write_lock() noexcept { return wlock_; }
  // After taking the lock over from a writer that died: it may have died
  // between flagging a bell and ringing it (forget that flag), or between
  // a marker and its message (cancel the marker).
  void after_recovery(int sock);
  // Publishes a message of n <= kMaxInline bytes if the ring has room for
  // it now (false: it has not; send it on the socket behind a marker, as a
  // socket would take it), then rings the bell on `sock` if no reader is
  // looking. OSError(EPIPE) if the other end is gone.
  bool put_inline(int sock, const void* data, std::size_t n);
  // Publishes an empty record (a marker or a cancel), waiting while the
  // ring has no room even for that, and rings the bell likewise; returns
  // its position (a marker's message carries it as its tag). After a
  // marker, call sent() once its message is on the socket.
  std::uint64_t put_marker(int sock, std::uint32_t flags);
  void sent() noexcept;

  // ---- reading (from this end's incoming ring)
  bool has_record() const noexcept;
  // Spins (promising senders that it looks, so they ring no bell) for up
  // to `spin` while the ring is empty; true once a record is there.
  bool spin_for_record(std::chrono::nanoseconds spin) noexcept;
  // Takes the next record (has_record() must be true): appends its payload
  // to out and says what it was. A payload longer than maxlength is
  // consumed but not copied. ProtocolError if the ring is corrupt.
  struct Record {
    std::uint32_t flags;
    std::uint64_t length;
    std::uint64_t at;  // its position in the ring (a marker's tag)
  };
  Record take(wire::Writer& out, std::optional<std::size_t> maxlength);
  // A receiver about to sleep in poll() counts itself here (Sleeping), so
  // that poll() and mpxx::wait in other threads leave its bell alone.
  class Sleeping {
   public:
    explicit Sleeping(PipeRingEnd& e) noexcept;
    ~Sleeping();
    Sleeping(const Sleeping&) = delete;
    Sleeping& operator=(const Sleeping&) = delete;

   private:
    PipeRingEnd& e_;
  };
  // What is at the front of the socket once its bells are read.
  enum class Front { nothing, message, eof, held_back };
  enum class Drainer { receiver, poller, poller_forced };
  // The turn to read at the socket's front (see the top of this file). A
  // receiver waits for it; a poller only tries (held() then says), and
  // asks whether its holder is alive only when forced.
  class FrontTurn {
   public:
    FrontTurn(PipeRingEnd& e, Drainer who);
    ~FrontTurn();
    FrontTurn(const FrontTurn&) = delete;
    FrontTurn& operator=(const FrontTurn&) = delete;
    bool held() const noexcept { return held_; }

   private:
    PipeRingEnd& e_;
    std::uint32_t me_;
    bool held_ = false;
  };
  // Whether the next record (has_record() true) is a marker.
  bool next_is_marker() const noexcept;
  // After poll() reported `sock` readable: reads the bell bytes at the
  // front of the socket (taking the front turn), then forgets the bell. A
  // poller consumes no bell while a receiver sleeps (that bell is its
  // wake-up) or reads at the front: it reports held_back instead. Forced
  // (it has held back for long: the sleeper may be a process that died
  // asleep), it ignores sleepers, never the turn. A message at the front
  // whose marker was taken (stale, see skip_bells) is held_back to pollers.
  Front drain_bells(int sock, Drainer who);
  // After taking the marker at position `at`, holding the front turn:
  // skips the bells in front of its message on the socket, waiting for its
  // first byte, and checks its tag (left there); or says that it was
  // cancelled and never sent, or that an earlier marker's message is in
  // front (stale: its reader died; read it, drop it, and call again).
  // Every bell consumed clears the flag, or senders would stop ringing.
  enum class Next { message, eof, cancelled, stale };
  Next skip_bells(int sock, std::uint64_t at);
  // Whether the message at the socket's front (its bells read) belongs to
  // a marker already taken: one whose reader died before reading it.
  bool stale_in_front(int sock) const;

  // The wire form: the shared block, the side, the write lock.
  void save(wire::OutArchive& ar) const;
  static std::shared_ptr<PipeRingEnd> load(wire::InArchive& ar);

  struct Dir;

 private:
  friend std::shared_ptr<PipeRingEnd> ring_with_bytes(wire::Reader& input);
  PipeRingEnd(ShmBlock block, int side, Lock wlock);
  Dir& out() const noexcept;
  Dir& in() const noexcept;
  std::byte* ring(int dir) const noexcept;
  std::uint64_t publish(int sock, const void* data, std::size_t n, std::uint32_t flags);
  void wait_room(int sock, std::uint64_t need);
  bool room_for(std::uint64_t need) const noexcept;
  std::uint32_t next_flags() const noexcept;
  bool next_is_cancel() const noexcept;
  bool take_cancel();
  Front read_bells(int sock, bool hold_for_sleepers);
  Next behind_bells(int sock, std::uint64_t at, bool cancel_taken);
  void forget_bell() noexcept;

  ShmBlock block_;
  int side_;
  Lock wlock_;  // serializes writers of this end (every copy, every process)
};

// For the fuzzer: the reading end of a new ring whose incoming direction
// holds what a peer process may have written there, taken from the front
// of `input`: [u64 head][u64 tail][ring bytes].
std::shared_ptr<PipeRingEnd> ring_with_bytes(wire::Reader& input);

}  // namespace mpxx::detail
