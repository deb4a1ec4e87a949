// src/channel/pipe_ring.hpp - the shared-memory ring of a Pipe between mpxx processes.
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
// the ring alone decides the order, whichever way the bytes went. On the
// socket, such a message is tagged with its marker's place in the ring
// (kTag, then that position, then CPython's length and the bytes), so a
// receiver can tell its marker's message from a later one.
//
// Bells. A receiver that stops spinning sleeps in poll() on the socket
// (so mpxx::wait and Connection::poll see it too). A sender that publishes a
// record while no receiver promises to look (`reader_until` has passed)
// writes one bell byte (0x80) to the socket, unless one is already
// unread. No message on the socket can start with 0x80 (CPython's length
// header starts with 0x00-0x7f or 0xff), so receivers skip bells in front
// of a message and drain them when they wake.
//
// Pieces. A tagged message goes on the socket in pieces of at most
// kSocketPiece bytes, one sendmsg each: Linux queues a Unix stream send of
// up to ~36 KiB (one skb, with the default socket buffers) whole or not at
// all, so a writer killed in the middle of a message leaves whole pieces.
// Each piece after the first starts with kTagMore and the same position.
// A receiver that finds anything else there (a bell, the next writer's
// tag, the end of the stream) knows the writer died, drops the pieces it
// got, and goes on with the next record. (One skb also needs the sending
// socket's buffer to hold two pieces: Pipe() raises a smaller one; a
// buffer shrunk later through fileno() voids the guarantee.)
//
// A message that does not fit in the ring right now goes on the socket
// behind a marker too, so a ring of a few KiB never makes a sender wait
// where a socket would have buffered the data. A writer whose socket send
// fails after its marker (sendmsg refused it) follows the marker with a
// cancel record, so the reader does not wait for a message that never
// comes. A cancel only says that the message may not have been sent: the
// tag on the socket decides (the marker's own message is delivered, a
// later one means this one never came).
//
// Receivers about to sleep in poll() count themselves in `sleepers` and
// clear the bell flag before their last look at the ring (a bell in the
// socket then may be stale; a record published after that look rings a
// fresh one). poll() and mpxx::wait in other threads leave bells alone
// while a receiver sleeps (a bell consumed by a poller would leave that
// receiver woken to an empty socket, asleep again), for at most 2 ms: the
// sleeper may be a process that died asleep.
//
// Writers of one end (copies of it in several processes, or threads) are
// serialized by an mpxx::Lock, which survives a holder that dies; a record
// becomes visible only once it is whole (the tail moves last), so a writer
// killed mid-copy leaves nothing behind. The next writer, taking the lock
// over, forgets the bell flag (the dead one may have set it without
// ringing) and cancels a marker whose message the dead one was sending.
// If that message went out whole, its tag makes the receiver take it all
// the same; if part of it did, the receiver drops that part (see Pieces).
// A writer killed between publishing and ringing leaves its message unseen
// by a sleeping reader until the next send or until every writer has gone
// (EOF wakes the reader, which reads the ring first).
//
// The socket's front (bells, and behind a marker its message) is read by
// one thread at a time, which holds the ring's front turn: a receiver for
// its bells and for a marker's message, a poller for bells (it tries, and
// holds back if another thread is reading there). Without it, a poller
// could take bytes of a message that a receiver is reading as bells, or
// two drains could count the same bell and the second take a message's
// first byte. A turn left by a process that died is taken over.
//
// A reader that dies after taking a marker leaves that marker's message
// on the socket; the next reader finds its tag lower than its own
// marker's, and drops it (it was lost with its reader, as a socket's
// would be).
//
// Readers are not serialized, as in CPython: two processes reading one end
// at once is a program error there too. The reader validates every record
// it takes (lengths, flags), so a corrupt ring is a ProtocolError, never an
// out-of-bounds read.
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

// A ring fits in 16 KiB, so it is carved from a shared slab (shm.hpp) and a
// Pipe costs no file descriptor beyond its two sockets, as in CPython.
inline constexpr std::size_t kPipeRingCapacity = 7936;  // bytes per direction
inline constexpr std::size_t kMaxInline = 2048;     // larger messages take the socket
inline constexpr unsigned char kBell = 0x80;
inline constexpr unsigned char kTag = 0x81;       // then the marker's u64 position
inline constexpr unsigned char kTagMore = 0x82;   // a later piece of that message: the same position
inline constexpr std::size_t kTagBytes = 9;
// Bytes per send of a tagged message on the socket, headers included (see
// "Pieces" above).
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

}  // namespace mpxx::detail
