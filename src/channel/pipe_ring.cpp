// The shared-memory ring of a Pipe (see pipe_ring.hpp).
#include "channel/pipe_ring.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "mpxx/detail/buffer.hpp"
#include "mpxx/errors.hpp"
#include "sys/futex.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

// One direction. The writer's fields and the reader's live on separate
// cache lines, so a spinning reader does not slow the writer's stores.
struct PipeRingEnd::Dir {
  alignas(64) std::atomic<std::uint64_t> tail;  // bytes published (writers, under the lock)
  std::atomic<std::uint32_t> bell;              // 1: a bell byte may be unread in the socket
  alignas(64) std::atomic<std::uint64_t> head;  // bytes consumed (the reader)
  std::atomic<std::int64_t> reader_until;       // CLOCK_MONOTONIC ns until which a reader looks
  std::atomic<std::uint32_t> sleepers;          // receivers asleep in poll() on the socket
  std::atomic<std::uint32_t> space;             // futex word: bumped when room appears
  std::atomic<std::uint32_t> writer_waiting;    // 1: a writer sleeps on `space`
  std::atomic<std::uint32_t> front;             // tid holding the front turn, or 0
  std::uint32_t inflight;                       // 1: a marker's message is being sent (writers only)
};

namespace {

constexpr std::uint32_t kPipeRingMagic = 0x4c414e45;  // "LANE"
constexpr std::size_t kHeaderBytes = 384;
constexpr std::size_t kPipeRingBytes = kHeaderBytes + 2 * kPipeRingCapacity;
constexpr std::size_t kRecordHeader = 8;  // [u32 length][u32 flags]
constexpr auto kSleepSlice = std::chrono::milliseconds(50);

struct Header {
  std::uint32_t magic;
  std::uint32_t capacity;
  PipeRingEnd::Dir dir[2];
};
static_assert(sizeof(Header) <= kHeaderBytes && kPipeRingBytes <= 16 * 1024);

std::int64_t mono_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

std::uint64_t record_size(std::size_t n) { return kRecordHeader + ((n + 7) & ~std::uint64_t{7}); }

void copy_in(std::byte* ring, std::uint64_t pos, const void* src, std::size_t n) {
  std::size_t at = static_cast<std::size_t>(pos % kPipeRingCapacity);
  std::size_t first = std::min(n, kPipeRingCapacity - at);
  std::memcpy(ring + at, src, first);
  if (first < n) std::memcpy(ring, static_cast<const std::byte*>(src) + first, n - first);
}

void copy_out(const std::byte* ring, std::uint64_t pos, void* dst, std::size_t n) {
  std::size_t at = static_cast<std::size_t>(pos % kPipeRingCapacity);
  std::size_t first = std::min(n, kPipeRingCapacity - at);
  std::memcpy(dst, ring + at, first);
  if (first < n) std::memcpy(static_cast<std::byte*>(dst) + first, ring, n - first);
}

[[noreturn]] void peer_gone() {
  throw OSError(EPIPE, "mpxx: send: the other end of the connection is closed");
}

[[noreturn]] void corrupt() {
  throw ProtocolError("mpxx: recv: the pipe's shared-memory ring is corrupt");
}

// Counts the bells at the front of buf.
std::size_t leading_bells(const unsigned char* buf, std::size_t n) {
  std::size_t k = 0;
  while (k < n && buf[k] == kBell) ++k;
  return k;
}

// Reads (consumes) exactly k bell bytes that a peek has shown are there.
void consume(int sock, std::size_t k) {
  unsigned char buf[64];
  while (k > 0) {
    ssize_t r = sys::retry([&] { return ::recv(sock, buf, std::min(k, sizeof buf), MSG_DONTWAIT); });
    if (r <= 0) return;  // they were there; an error will show on the next read
    k -= static_cast<std::size_t>(r);
  }
}

// The tag of the message at the front of the socket (its bells read): the
// position of its marker. A sender writes the tag in the same sendmsg as
// the message's start, so it arrives whole.
std::uint64_t peek_tag(int sock) {
  unsigned char buf[kTagBytes];
  ssize_t r = sys::retry([&] { return ::recv(sock, buf, sizeof buf, MSG_PEEK); });
  if (r < 0) sys::throw_errno("recv(pipe)");
  if (static_cast<std::size_t>(r) < kTagBytes || buf[0] != kTag)
    throw ProtocolError("mpxx: recv: a message on the pipe's socket without its tag");
  std::uint64_t at;
  std::memcpy(&at, buf + 1, sizeof at);
  return at;
}

}  // namespace

// Not POLLRDHUP: a one-way Pipe's writing end has shut its own reading side.
bool peer_closed(int sock) {
  pollfd p{sock, 0, 0};
  int r = sys::retry([&] { return ::poll(&p, 1, 0); });
  return r > 0 && (p.revents & (POLLHUP | POLLERR));
}

PipeRingEnd::PipeRingEnd(ShmBlock block, int side, Lock wlock)
    : block_(std::move(block)), side_(side), wlock_(std::move(wlock)) {}

std::pair<std::shared_ptr<PipeRingEnd>, std::shared_ptr<PipeRingEnd>> PipeRingEnd::create_pair() {
  ShmBlock b = allocate_shared(kPipeRingBytes, 64, "mpxx:pipe");
  auto* h = new (b.data()) Header{};
  h->magic = kPipeRingMagic;
  h->capacity = kPipeRingCapacity;
  std::shared_ptr<PipeRingEnd> e0(new PipeRingEnd(b, 0, Lock()));
  std::shared_ptr<PipeRingEnd> e1(new PipeRingEnd(std::move(b), 1, Lock()));
  return {std::move(e0), std::move(e1)};
}

PipeRingEnd::Dir& PipeRingEnd::out() const noexcept {
  return reinterpret_cast<Header*>(block_.data())->dir[side_];
}
PipeRingEnd::Dir& PipeRingEnd::in() const noexcept {
  return reinterpret_cast<Header*>(block_.data())->dir[1 - side_];
}
std::byte* PipeRingEnd::ring(int dir) const noexcept {
  return block_.data() + kHeaderBytes + static_cast<std::size_t>(dir) * kPipeRingCapacity;
}

void PipeRingEnd::after_recovery(int sock) {
  Dir& d = out();
  d.bell.store(0, std::memory_order_seq_cst);
  if (d.inflight) {
    // The dead writer published a marker and may have died before its
    // message was (wholly) sent: the cancel tells the reader not to wait
    // for it (pipe_ring.hpp). The flag is cleared only once the cancel is out:
    // a writer that dies in between leaves it for the next to publish
    // again (a second cancel is stray, and skipped). A bell goes first, on
    // the socket: a reader waiting there for the next piece of that
    // message learns that none comes, and goes on to the ring, where the
    // cancel may need its room.
    d.bell.store(1, std::memory_order_seq_cst);
    if (sys::retry([&] { return ::send(sock, &kBell, 1, MSG_NOSIGNAL); }) < 0) {
      if (errno == EPIPE || errno == ECONNRESET) peer_gone();
      sys::throw_errno("send(bell)");
    }
    put_marker(sock, kRecordCancel);
    d.inflight = 0;
  }
}

bool PipeRingEnd::room_for(std::uint64_t need) const noexcept {
  const Dir& d = out();
  return kPipeRingCapacity - (d.tail.load(std::memory_order_relaxed) - d.head.load(std::memory_order_acquire)) >=
         need;
}

// Waits until the ring has `need` bytes free, checking now and then that
// the reader still exists (a dead reader never wakes us).
void PipeRingEnd::wait_room(int sock, std::uint64_t need) {
  Dir& d = out();
  if (spin_until([&] { return room_for(need); }, 2000)) return;
  for (;;) {
    std::uint32_t seq = d.space.load(std::memory_order_acquire);
    d.writer_waiting.store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // Dekker with take()
    if (room_for(need)) break;
    futex_wait(&d.space, seq, FutexDeadline::after(kSleepSlice));
    if (room_for(need)) break;
    if (peer_closed(sock)) {
      d.writer_waiting.store(0, std::memory_order_relaxed);
      peer_gone();
    }
  }
  d.writer_waiting.store(0, std::memory_order_relaxed);
}

bool PipeRingEnd::put_inline(int sock, const void* data, std::size_t n) {
  if (!room_for(record_size(n))) return false;
  publish(sock, data, n, 0);
  return true;
}

std::uint64_t PipeRingEnd::put_marker(int sock, std::uint32_t flags) {
  // A marker leaves room for the cancel that may follow it, so a writer
  // whose send fails never waits for the reader to cancel.
  wait_room(sock, flags == kRecordOnSocket ? 2 * kRecordHeader : kRecordHeader);
  if (flags == kRecordOnSocket) out().inflight = 1;  // first: a writer may die right after publishing
  return publish(sock, nullptr, 0, flags);
}

void PipeRingEnd::sent() noexcept { out().inflight = 0; }

std::uint64_t PipeRingEnd::publish(int sock, const void* data, std::size_t n, std::uint32_t flags) {
  Dir& d = out();
  const std::uint64_t t = d.tail.load(std::memory_order_relaxed);  // only lock holders move it
  std::byte* r = ring(side_);
  const std::uint32_t head[2] = {static_cast<std::uint32_t>(n), flags};
  copy_in(r, t, head, sizeof head);
  if (n) copy_in(r, t + kRecordHeader, data, n);
  d.tail.store(t + record_size(n), std::memory_order_release);

  // Ring the bell unless a reader promised to look (Dekker with
  // spin_for_record: tail stored, then reader_until loaded).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (mono_ns() < d.reader_until.load(std::memory_order_relaxed)) return t;
  if (d.bell.exchange(1, std::memory_order_acq_rel) == 0) {
    ssize_t w = sys::retry([&] { return ::send(sock, &kBell, 1, MSG_NOSIGNAL); });
    if (w < 0) {
      if (errno == EPIPE || errno == ECONNRESET) peer_gone();
      sys::throw_errno("send(bell)");
    }
  } else if (peer_closed(sock)) {  // an unread bell: the reader may be gone
    peer_gone();
  }
  return t;
}

bool PipeRingEnd::has_record() const noexcept {
  const Dir& d = in();
  return d.tail.load(std::memory_order_acquire) != d.head.load(std::memory_order_relaxed);
}

bool PipeRingEnd::spin_for_record(std::chrono::nanoseconds spin) noexcept {
  Dir& d = in();
  const std::int64_t until = mono_ns() + spin.count();
  d.reader_until.store(until, std::memory_order_seq_cst);
  bool got = false;
  for (unsigned i = 1;; ++i) {
    if (has_record()) {
      got = true;
      break;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if (i % 64 == 0 && mono_ns() >= until) break;
  }
  d.reader_until.store(0, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return got || has_record();
}

PipeRingEnd::Record PipeRingEnd::take(wire::Writer& out, std::optional<std::size_t> maxlength) {
  Dir& d = in();
  const std::byte* r = ring(1 - side_);
  const std::uint64_t h = d.head.load(std::memory_order_relaxed);
  const std::uint64_t avail = d.tail.load(std::memory_order_acquire) - h;
  if (avail < kRecordHeader || avail > kPipeRingCapacity) corrupt();
  std::uint32_t head[2];
  copy_out(r, h, head, sizeof head);
  const std::uint32_t n = head[0], flags = head[1];
  if (n > kMaxInline || flags > kRecordCancel || (flags != 0 && n != 0) || record_size(n) > avail)
    corrupt();
  if (!maxlength || n <= *maxlength) {
    if (n) copy_out(r, h + kRecordHeader, out.extend(n), n);
  }
  d.head.store(h + record_size(n), std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (d.writer_waiting.load(std::memory_order_relaxed)) {
    d.space.fetch_add(1, std::memory_order_release);
    futex_wake(&d.space, 1);
  }
  return {flags, n, h};
}

PipeRingEnd::FrontTurn::FrontTurn(PipeRingEnd& e, Drainer who) : e_(e), me_(current_tid()) {
  std::atomic<std::uint32_t>& front = e_.in().front;
  std::chrono::steady_clock::time_point since{};  // a receiver's wait, from its first failed try
  for (;;) {
    std::uint32_t holder = 0;
    if (front.compare_exchange_strong(holder, me_, std::memory_order_acquire)) break;
    // A process killed in there (in the middle of a recv) leaves it held;
    // so may one whose tid is ours now. Liveness is asked only now and
    // then (several system calls): by a receiver once per kLivenessSlice
    // of waiting, by a poller once it has held back for long.
    bool ask = who == Drainer::poller_forced;
    if (who == Drainer::receiver) {
      const auto now = std::chrono::steady_clock::now();
      if (since == std::chrono::steady_clock::time_point{}) since = now;
      ask = now - since >= kLivenessSlice;
      if (ask) since = now;
    }
    if ((holder == me_ || (ask && !id_alive(holder))) &&
        front.compare_exchange_strong(holder, me_, std::memory_order_acquire))
      break;
    if (who != Drainer::receiver) return;
    // Pollers hold it for a peek and a read, a receiver for one message.
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  held_ = true;
}
PipeRingEnd::FrontTurn::~FrontTurn() {
  // Unless taken over meanwhile (this thread was wrongly judged dead).
  std::uint32_t mine = me_;
  if (held_) e_.in().front.compare_exchange_strong(mine, 0, std::memory_order_release);
}

PipeRingEnd::Sleeping::Sleeping(PipeRingEnd& e) noexcept : e_(e) {
  Dir& d = e_.in();
  d.sleepers.fetch_add(1, std::memory_order_seq_cst);
  // Whatever bell is in the socket now may be stale (its record already
  // taken) and a poller may swallow it: clear the flag, so that a record
  // published after the caller's next look at the ring rings a fresh bell,
  // which pollers leave alone (Dekker with publish: tail, fence, flag).
  d.bell.store(0, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
PipeRingEnd::Sleeping::~Sleeping() { e_.in().sleepers.fetch_sub(1, std::memory_order_seq_cst); }

// Reads the bells at the front of the socket (or, for a poller while a
// receiver sleeps, leaves them: held_back) and says what comes after them.
PipeRingEnd::Front PipeRingEnd::read_bells(int sock, bool hold_for_sleepers) {
  for (;;) {
    unsigned char buf[64];
    ssize_t r = sys::retry([&] { return ::recv(sock, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT); });
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Front::nothing;
      if (errno == ECONNRESET) return Front::eof;
      sys::throw_errno("recv(pipe)");
    }
    if (r == 0) return Front::eof;
    std::size_t k = leading_bells(buf, static_cast<std::size_t>(r));
    if (k && hold_for_sleepers && in().sleepers.load(std::memory_order_seq_cst) > 0) {
      // A receiver sleeps on this socket: the bell may be its wake-up. If
      // it were consumed here, that receiver would be woken, find nothing
      // readable and sleep on. Its owner drains it (it only registered
      // after looking at the ring, see recv_message).
      return Front::held_back;
    }
    consume(sock, k);
    if (k < static_cast<std::size_t>(r)) return Front::message;
  }
}

// Forgets the bell only after the bells were read: a sender that finds it
// clear afterwards rings a new one, which nothing before can have
// swallowed. (Cleared first, a bell rung in between would be consumed
// while the flag said "unread", and no sender would ring again.) The
// caller looks at the ring next.
void PipeRingEnd::forget_bell() noexcept {
  in().bell.store(0, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

PipeRingEnd::Front PipeRingEnd::drain_bells(int sock, Drainer who) {
  FrontTurn turn(*this, who);
  if (!turn.held()) return Front::held_back;
  Front front = read_bells(sock, who == Drainer::poller);
  if (front != Front::held_back) forget_bell();
  // A message whose marker a dead reader took: not one to report, and a
  // poller must not drop it (its writer may still be sending it).
  // (ring_confirm reports a hang-up behind it, as for any poller held back.)
  if (who != Drainer::receiver && front == Front::message && !has_record() && stale_in_front(sock))
    return Front::held_back;
  return front;
}

bool PipeRingEnd::next_is_marker() const noexcept { return next_flags() == kRecordOnSocket; }

// The flags of the next record if it is an empty one (a marker or a
// cancel); 0 for a message or no record.
std::uint32_t PipeRingEnd::next_flags() const noexcept {
  const Dir& d = in();
  const std::uint64_t h = d.head.load(std::memory_order_relaxed);
  if (d.tail.load(std::memory_order_acquire) - h < kRecordHeader) return 0;
  std::uint32_t head[2];
  copy_out(ring(1 - side_), h, head, sizeof head);
  return head[0] == 0 ? head[1] : 0;
}

bool PipeRingEnd::next_is_cancel() const noexcept { return next_flags() == kRecordCancel; }

bool PipeRingEnd::take_cancel() {
  if (!next_is_cancel()) return false;
  wire::Writer none;
  take(none, std::nullopt);
  return true;
}

// The socket's front is a message (its bells read): whether it is the one
// of the marker at `at`. If it is a later marker's, this marker's message
// never came, and its cancel was published (under the writers' lock)
// before that later message was sent.
PipeRingEnd::Next PipeRingEnd::behind_bells(int sock, std::uint64_t at, bool cancel_taken) {
  // The tag is left for the caller to read with the message: its first
  // bytes bring the message's fds.
  const std::uint64_t tag = peek_tag(sock);
  if (tag == at) return Next::message;  // a cancel behind the marker is left stray
  if (tag < at) return Next::stale;     // positions only grow: its reader died before it
  if (cancel_taken || take_cancel()) return Next::cancelled;
  throw ProtocolError(
      "mpxx: recv: a message on the pipe's socket out of order (two processes reading one end at "
      "once?)");
}

bool PipeRingEnd::stale_in_front(int sock) const {
  return peek_tag(sock) < in().head.load(std::memory_order_relaxed);
}

PipeRingEnd::Next PipeRingEnd::skip_bells(int sock, std::uint64_t at) {
  Next next;
  for (;;) {
    Front front = read_bells(sock, false);
    if (front == Front::eof) {
      next = Next::eof;
      break;
    }
    if (front == Front::message) {
      next = behind_bells(sock, at, false);
      break;
    }
    // Not sent yet, or never: a writer whose socket send failed follows
    // its marker with a cancel record (and rings, so the poll below wakes),
    // and so does the next writer after one that died. One that died may
    // have sent its message whole first: that is on the socket by now (it
    // died before the cancel was published), so look once more.
    if (take_cancel()) {
      front = read_bells(sock, false);
      next = front == Front::message ? behind_bells(sock, at, true) : Next::cancelled;
      break;
    }
    Sleeping asleep(*this);  // pollers in other threads leave our bell alone
    if (next_is_cancel()) continue;
    pollfd p{sock, POLLIN, 0};
    sys::retry([&] { return ::poll(&p, 1, -1); });  // holding the turn: no poller takes our bell
  }
  forget_bell();  // a consumed bell must not stay flagged as unread
  return next;
}

std::shared_ptr<PipeRingEnd> ring_with_bytes(wire::Reader& input) {
  auto [writer, reader] = PipeRingEnd::create_pair();
  auto* h = reinterpret_cast<Header*>(writer->block_.data());
  h->dir[0].head.store(input.remaining() >= 8 ? input.pod<std::uint64_t>() : 0);
  h->dir[0].tail.store(input.remaining() >= 8 ? input.pod<std::uint64_t>() : 0);
  const auto ring = input.take(std::min<std::size_t>(input.remaining(), kPipeRingCapacity));
  std::memcpy(writer->ring(0), ring.data(), ring.size());
  return reader;
}

void PipeRingEnd::save(wire::OutArchive& ar) const {
  save_block(ar, block_);
  ar(static_cast<std::uint8_t>(side_));
  wlock_.save(ar);
}

std::shared_ptr<PipeRingEnd> PipeRingEnd::load(wire::InArchive& ar) {
  ShmBlock b = load_block(ar, kPipeRingBytes);
  const auto* h = reinterpret_cast<const Header*>(b.data());
  if (reinterpret_cast<std::uintptr_t>(b.data()) % 64 != 0 || h->magic != kPipeRingMagic ||
      h->capacity != kPipeRingCapacity)
    throw ProtocolError("mpxx: the received Connection's shared ring is not an mpxx pipe");
  std::uint8_t side;
  ar(side);
  if (side > 1) throw ProtocolError("mpxx: corrupt Connection");
  Lock lock(wire::empty);
  lock.load(ar);
  return std::shared_ptr<PipeRingEnd>(new PipeRingEnd(std::move(b), side, std::move(lock)));
}

}  // namespace mpxx::detail
