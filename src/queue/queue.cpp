// The queues' shared ring and QueueCore's put and get. See
// include/mpxx/queue.hpp for the guarantees.
//
// Layout of the memfd: a 4 KiB header (layout.hpp), then `capacity` bytes
// of ring. The ring holds records [u32 length][u32 kind][payload, padded
// to 8 bytes] at monotonically increasing byte positions (position %
// capacity in memory); a WRAP record fills the tail end of the ring when
// the next record would not fit contiguously, or ends the lap early to go
// back to the ring's warm start (see kWarm). `tail` (written by the
// producer holding put_lock) only moves past a record once it is complete,
// which is what keeps a producer killed mid-put from exposing half a
// message; `head` (written by the consumer holding get_lock) only moves
// past a record once it has been consumed. Consumed 4 MiB blocks beyond
// the first 16 MiB are punched out of the memfd, so memory follows what is
// in flight, not the ring's size; a lap ends as early as the backlog
// allows (see kShortLap), so a busy pair keeps to the first few MiB it has
// already touched. A large message put while the ring is empty and a
// consumer waits in get skips the ring: it is handed over (handover.hpp).
#include "mpxx/queue.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

#include "mpxx/detail/shm.hpp"
#include "mpxx/sync.hpp"
#include "queue/handover.hpp"
#include "queue/layout.hpp"
#include "sys/futex.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

namespace {

constexpr std::uint32_t kData = 1, kWrap = 2;
constexpr std::uint64_t kPunchBlock = 4u << 20;
// The ring's first kWarm bytes stay resident and are reused whenever the
// backlog fits there; blocks beyond are given back once consumed. A lap
// ends early, back at the ring's start, once it is kShortLap long (or twice
// the record) and the consumers have moved past the start. See
// docs/design.md, "Warm rings".
constexpr std::uint64_t kWarm = 16u << 20;
constexpr std::uint64_t kShortLap = 4u << 20;
// Producers read the consumers' line again only once per kLook bytes.
constexpr std::uint64_t kLook = 64u << 10;
// A large message goes into the ring this many bytes at a time, looking
// between two for a consumer that took its hand-over.
constexpr std::uint64_t kCopySlice = 256u << 10;
// Records up to this size have the lines of the record after next claimed
// ahead by the producer (see docs/design.md, "Lines claimed ahead").
constexpr std::uint64_t kClaimAheadMax = 4096;

// Asks for the cache line at `p` to be brought in for writing.
inline void prefetch_for_write(const std::byte* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*p));  // a no-op on the few x86-64 CPUs without it
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

std::uint64_t round8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

// Messages in the queue. No shared counter is updated by both sides (that
// cache line would cross between the cores on every put and get).
std::int64_t backlog(const QueueHeader* h) {
  return static_cast<std::int64_t>(h->puts.load(std::memory_order_acquire) -
                                   h->gets.load(std::memory_order_acquire));
}

}  // namespace

struct QueueShared {
  std::shared_ptr<Mapping> map;
  QueueHeader* h = nullptr;
  std::byte* ring = nullptr;
  LockBase put_lock{false, ShmBlock{}};
  LockBase get_lock{false, ShmBlock{}};

  void attach(std::shared_ptr<Mapping> m) {
    map = std::move(m);
    h = reinterpret_cast<QueueHeader*>(map->data());
    ring = map->data() + kQueueHeaderBytes;
    put_lock = LockBase(false, ShmBlock{map, offsetof(QueueHeader, put_lock), sizeof(QueueHeader::Line)});
    get_lock = LockBase(false, ShmBlock{map, offsetof(QueueHeader, get_lock), sizeof(QueueHeader::Line)});
  }
  std::uint64_t cap() const noexcept { return h->capacity; }
};

QueueCore::QueueCore(std::int64_t maxsize, bool joinable, std::uint64_t capacity)
    : sh_(std::make_shared<QueueShared>()), closed_(std::make_shared<bool>(false)) {
  if (capacity < 4096 || (capacity & (capacity - 1)) != 0)
    throw ValueError("mpxx: queue capacity must be a power of two >= 4096");
  try {
    sh_->attach(Mapping::create(kQueueHeaderBytes + capacity, "mpxx:queue"));
  } catch (...) {
    sys::rethrow_with_context("cannot create a Queue");
  }
  QueueHeader* h = sh_->h;
  h->magic = kQueueMagic;
  h->joinable = joinable;
  h->capacity = capacity;
  h->maxsize = maxsize > 0 ? maxsize : 0;
}

namespace {
// Waits on a futex word until pred() holds or the deadline passes; the
// waiter count lets the other side skip the wake-up system call. With
// `looks`, the waiter bumps it after reading the futex word and before each
// look at pred(): a waker that already woke this look can skip the next
// wake-up (see docs/design.md, "A queue wakes a sleeping consumer once").
template <class Pred>
bool wait_until(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& waiters,
                const FutexDeadline& deadline, Pred pred,
                std::atomic<std::uint64_t>* looks = nullptr) {
  if (pred()) return true;
  if (spin_until(pred)) return true;
  waiters.fetch_add(1, std::memory_order_seq_cst);
  // Leaving is ordered after the last look (release, read with acquire by
  // the waker), also when pred() throws.
  struct Registered {
    std::atomic<std::uint32_t>& w;
    ~Registered() { w.fetch_sub(1, std::memory_order_release); }
  } registered{waiters};
  bool ok = false;
  for (;;) {
    std::uint32_t s = seq.load(std::memory_order_seq_cst);
    if (looks) looks->fetch_add(1, std::memory_order_seq_cst);
    if (pred()) {
      ok = true;
      break;
    }
    if (futex_wait(&seq, s, deadline) == WaitResult::timed_out && deadline.expired()) {
      ok = pred();
      break;
    }
  }
  return ok;
}

// Gives the ring's fully consumed 4 MiB blocks between two positions back to
// the kernel (the memfd is sparse again there). A block's offsets are shared
// by every lap, and a producer may already be writing the next lap there:
// punching happens under the producers' lock (a try: a busy lock just
// leaves the block resident until its next pass), and never to a block the
// next lap has reached.
void release_blocks(QueueShared& q, std::uint64_t from, std::uint64_t to) {
  const std::uint64_t cap = q.cap();
  if (to / kPunchBlock == from / kPunchBlock) return;
  if (!q.put_lock.acquire(std::chrono::nanoseconds::zero())) return;
  std::scoped_lock<LockBase> held(std::adopt_lock, q.put_lock);
  const std::uint64_t tail = q.h->tail.load(std::memory_order_acquire);
  for (std::uint64_t b = from / kPunchBlock; b < to / kPunchBlock; ++b) {
    const std::uint64_t start = b * kPunchBlock;
    std::uint64_t boff = start % cap;
    if (boff < kWarm || tail > start + cap) continue;
    std::uint64_t len = std::min<std::uint64_t>(kPunchBlock, cap - boff);
    ::fallocate(q.map->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(kQueueHeaderBytes + boff), static_cast<off_t>(len));
  }
}

// Gives the ring's pages between offsets `from` and `to` past its warm
// start back to the kernel; only for offsets that hold no message.
void release_range(QueueShared& q, std::uint64_t from, std::uint64_t to) {
  from = (std::max(from, kWarm) + 4095) & ~std::uint64_t{4095};
  to = std::min(to, q.cap()) & ~std::uint64_t{4095};
  if (from < to)
    ::fallocate(q.map->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(kQueueHeaderBytes + from), static_cast<off_t>(to - from));
}

// Writes bytes into the ring's memory file at `at` (pwrite: the kernel
// copies into the shared pages without this process mapping them).
void write_at(int fd, std::span<const std::byte> bytes, std::uint64_t at) {
  const std::byte* p = bytes.data();
  std::size_t n = bytes.size();
  while (n > 0) {
    const ssize_t r = sys::retry([&] { return ::pwrite(fd, p, n, static_cast<off_t>(at)); });
    if (r < 0) sys::throw_errno("Queue.put: writing a large message into shared memory");
    if (r == 0) throw OSError(EIO, "mpxx: Queue.put: shared memory took no more bytes");
    p += r;
    n -= static_cast<std::size_t>(r);
    at += static_cast<std::uint64_t>(r);
  }
}

// Whether write() may reach `end` of a file: RLIMIT_FSIZE (ulimit -f)
// applies to writes into a memfd too, where it raises SIGXFSZ, but not to
// stores through a mapping.
bool file_writes_reach(std::uint64_t end) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_FSIZE, &lim) != 0) return false;
  return lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= end;
}
}  // namespace

bool QueueCore::put(std::span<const std::byte> message, std::chrono::nanoseconds timeout) {
  return put_impl(
      message.size(),
      [&](std::byte* dst, std::uint64_t) {
        if (!message.empty()) std::memcpy(dst, message.data(), message.size());
        return false;
      },
      timeout);
}

bool QueueCore::put(const wire::Writer& message, std::chrono::nanoseconds timeout) {
  if (message.refs().empty() && message.size() < kStreamedMin) return put(message.bytes(), timeout);
  // A large message goes in with pwrite(), from the value's own memory for
  // the blocks the Writer references: no staging copy, and no page fault
  // per 4 KiB of fresh shared memory in this process. It goes in a slice at
  // a time, so that a hand-over can stop it (handover.hpp).
  const bool by_file = file_writes_reach(kQueueHeaderBytes + sh_->cap());
  const auto pieces = message.pieces();
  std::size_t piece = 0, in_piece = 0;
  std::uint64_t done = 0;
  return put_impl(
      message.total_size(),
      [&](std::byte* dst, std::uint64_t file_at) {
        for (std::uint64_t budget = kCopySlice; piece < pieces.size() && budget > 0;) {
          const auto rest = pieces[piece].subspan(in_piece);
          const auto slice = rest.first(static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), budget)));
          if (by_file)
            write_at(sh_->map->fd(), slice, file_at + done);
          else
            std::memcpy(dst + done, slice.data(), slice.size());
          done += slice.size();
          budget -= slice.size();
          in_piece += slice.size();
          if (in_piece == pieces[piece].size()) {
            ++piece;
            in_piece = 0;
          }
        }
        return piece < pieces.size();
      },
      timeout, &message);
}

template <class Copy>
bool QueueCore::put_impl(std::size_t size, const Copy& copy, std::chrono::nanoseconds timeout,
                         const wire::Writer* handover) {
  if (*closed_) throw ValueError("mpxx: Queue is closed: this process called close(), so it cannot put()");
  QueueShared& q = *sh_;
  QueueHeader* h = q.h;
  const std::uint64_t cap = q.cap();
  const std::uint64_t need = 8 + round8(size);
  if (need > cap / 2)
    throw ValueError("mpxx: a message of " + std::to_string(size) +
                     " bytes exceeds the queue's limit of " + std::to_string(cap / 2 - 8));
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  if (!q.put_lock.acquire(timeout)) return false;
  std::scoped_lock<LockBase> held(std::adopt_lock, q.put_lock);

  const std::uint64_t tail = h->tail.load(std::memory_order_relaxed);
  const std::uint64_t off = tail % cap;
  std::uint64_t skip = cap - off < need ? cap - off : 0;  // a WRAP record first
  if (skip == 0 && off != 0 && need <= kWarm) {
    // Back to the ring's warm start as soon as the consumers have left
    // room there (see docs/design.md, "Warm rings").
    const std::uint64_t start_free = tail - off + need;  // a head from here on
    bool back = false;
    if (off + need > kWarm && off <= kWarm) {
      h->head_seen = h->head.load(std::memory_order_acquire);
      back = h->head_seen >= start_free;
    } else if (off >= std::max(kShortLap, 2 * need)) {
      // The consumers' line is read again only once per kLook bytes.
      if ((off + need) / kLook != off / kLook)
        h->head_seen = h->head.load(std::memory_order_acquire);
      back = h->head_seen >= start_free;
    }
    if (back && (h->maxsize == 0 || backlog(h) < h->maxsize)) skip = cap - off;
  }
  // The head the producers saw last is usually far enough: only when it
  // is not is the consumers' line read again.
  auto room = [&] {
    if (h->maxsize > 0 && backlog(h) >= h->maxsize) return false;
    if (tail + skip + need - h->head_seen <= cap) return true;
    h->head_seen = h->head.load(std::memory_order_acquire);
    return tail + skip + need - h->head_seen <= cap;
  };
  if (timeout == std::chrono::nanoseconds::zero() ? !room()
                                                   : !wait_until(h->space_seq, h->producers_waiting,
                                                                 deadline, room))
    return false;

  std::uint64_t at = off;
  if (skip) {
    const std::uint32_t rec[2] = {0, kWrap};
    std::memcpy(q.ring + off, rec, 8);
    at = 0;
  }
  const std::uint32_t rec[2] = {static_cast<std::uint32_t>(size), kData};
  std::memcpy(q.ring + at, rec, 8);
  auto copy_more = [&] { return copy(q.ring + at + 8, kQueueHeaderBytes + at + 8); };
  if (handover && timeout == std::chrono::nanoseconds::max() && hand_over(*h, *handover, copy_more)) {
    // The ring is empty: what the copy wrote past its tail is garbage.
    release_range(q, at, at + need);
    return true;
  }
  while (copy_more()) {
  }
  if (h->joinable) h->unfinished.fetch_add(1, std::memory_order_relaxed);
  // The record becomes visible, whole, only here.
  h->tail.store(tail + skip + need, std::memory_order_release);
  h->puts.store(h->puts.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  // Wake a sleeping consumer, if there is one; a busy pair never calls
  // the kernel. (A waiter registers, then re-checks tail: see wait_until.)
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint32_t waiting = h->consumers_waiting.load(std::memory_order_acquire);
  if (waiting > 0) {
    // A waiter already woken and not yet back needs no second wake-up
    // (see docs/design.md, "A queue wakes a sleeping consumer once").
    const std::uint64_t looks = h->data_sleeps.load(std::memory_order_seq_cst);
    if (waiting > 1 || looks != h->data_woken) {
      h->data_seq.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(&h->data_seq, 1);
      h->data_woken = looks;
    }
  }
  // Claims the lines the record after next will take (whole lines past
  // this record's end), after the fence (see docs/design.md, "Lines
  // claimed ahead").
  if (need <= kClaimAheadMax) {
    const std::uint64_t past_this = (at + need + 63) & ~std::uint64_t{63};
    const std::uint64_t end = std::min(cap, at + 3 * need);
    for (std::uint64_t a = std::max(past_this, (at + 2 * need) & ~std::uint64_t{63}); a < end; a += 64)
      prefetch_for_write(q.ring + a);
  }
  return true;
}

namespace {
[[noreturn]] void corrupt_queue(std::uint64_t head) {
  throw ProtocolError("mpxx: the queue's shared memory is corrupt at position " + std::to_string(head));
}

// The rest of a large message, read from the ring's memory file with
// pread(): the kernel copies from the shared pages straight into the
// destination, and this process never maps them (on a VM each first touch
// of a shared page through a mapping is a page fault, ~25k of them for
// 100 MiB, which cost more than the copy).
class RingSource final : public wire::Source {
 public:
  RingSource(int fd, std::uint64_t at, std::size_t n) : fd_(fd), at_(at), left_(n) {}
  std::size_t left() const noexcept override { return left_; }
  void read(void* out, std::size_t n) override {
    auto* p = static_cast<std::byte*>(out);
    while (n > 0) {
      const ssize_t r = sys::retry([&] { return ::pread(fd_, p, n, static_cast<off_t>(at_)); });
      if (r < 0) sys::throw_errno("Queue.get: reading a large message from shared memory");
      if (r == 0) throw ProtocolError("mpxx: Queue.get: a large message ends early in shared memory");
      p += r;
      n -= static_cast<std::size_t>(r);
      at_ += static_cast<std::uint64_t>(r);
      left_ -= static_cast<std::size_t>(r);
    }
  }

 private:
  int fd_;
  std::uint64_t at_;
  std::size_t left_;
};
}  // namespace

bool QueueCore::get(const std::function<void(std::span<const std::byte>)>& consume,
                    std::chrono::nanoseconds timeout) {
  return get_impl([&](std::span<const std::byte> whole, std::uint64_t) { consume(whole); }, timeout);
}

bool QueueCore::get_streamed(
    const std::function<void(std::span<const std::byte>, wire::Source*)>& consume,
    std::chrono::nanoseconds timeout) {
  return get_impl(
      [&](std::span<const std::byte> whole, std::uint64_t file_at) {
        if (whole.size() < kStreamedMin) return consume(whole, nullptr);
        RingSource rest(sh_->map->fd(), file_at, whole.size());
        consume({}, &rest);
      },
      timeout, &consume);
}

template <class Consume>
bool QueueCore::get_impl(const Consume& consume, std::chrono::nanoseconds timeout,
                         const StreamedConsume* handover) {
  if (*closed_) throw ValueError("mpxx: Queue is closed: this process called close(), so it cannot get()");
  QueueShared& q = *sh_;
  QueueHeader* h = q.h;
  const std::uint64_t cap = q.cap();
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  if (!q.get_lock.acquire(timeout)) return false;
  std::scoped_lock<LockBase> held(std::adopt_lock, q.get_lock);
  // While this consumer waits, producers may hand it large messages.
  HandoverTaker taker(*h, handover && timeout != std::chrono::nanoseconds::zero());

  std::uint64_t head = h->head.load(std::memory_order_relaxed);
  for (;;) {
    // Likewise, the tail seen last often shows more messages already.
    auto ready = [&] {
      if (h->tail_seen != head) return true;
      h->tail_seen = h->tail.load(std::memory_order_acquire);
      return h->tail_seen != head || taker.pending();
    };
    if (timeout == std::chrono::nanoseconds::zero() ? !ready()
                                                     : !wait_until(h->data_seq, h->consumers_waiting,
                                                                   deadline, ready, &h->data_sleeps))
      return false;
    if (h->tail_seen == head) {  // no message in the ring: a hand-over
      if (taker.take(*handover)) return true;
      continue;
    }
    const std::uint64_t tail = h->tail_seen;
    const std::uint64_t off = head % cap;
    // Positions another process wrote: a lap apart at most, and on a record
    // (8-byte) boundary, or wraps would spin for ever and a header be read
    // past the ring's end.
    if (tail - head > cap || off % 8 != 0) corrupt_queue(head);
    std::uint32_t rec[2];
    std::memcpy(rec, q.ring + off, 8);
    if (rec[1] == kWrap && cap - off < tail - head) {
      h->head.store(head + (cap - off), std::memory_order_release);
      // Only the block holding the WRAP record was written; the rest of
      // the lap was skipped.
      release_blocks(q, head, (head + 8 + kPunchBlock - 1) / kPunchBlock * kPunchBlock);
      head += cap - off;
      continue;
    }
    const std::uint64_t need = 8 + round8(rec[0]);
    if (rec[1] != kData || need > tail - head || off + need > cap) corrupt_queue(head);
    std::exception_ptr failed;
    try {
      consume(std::span<const std::byte>(q.ring + off + 8, rec[0]), kQueueHeaderBytes + off + 8);
    } catch (...) {
      failed = std::current_exception();  // the message is consumed all the same
    }
    const std::uint64_t new_head = head + need;
    // Counted before the head moves (and a put counts after its tail
    // moves): a process killed between the two leaves the backlog one too
    // low, never one too high, so a bounded queue may take one item more
    // but never refuses puts forever.
    h->gets.store(h->gets.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    h->head.store(new_head, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (h->producers_waiting.load(std::memory_order_relaxed) > 0) {
      h->space_seq.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(&h->space_seq, 1);
    }
    release_blocks(q, head, new_head);
    if (failed) std::rethrow_exception(failed);
    return true;
  }
}

bool QueueCore::wait_readable(std::chrono::nanoseconds timeout,
                              const std::function<bool()>& also) const {
  QueueHeader* h = sh_->h;
  auto ready = [&] {
    return h->tail.load(std::memory_order_acquire) != h->head.load(std::memory_order_acquire) ||
           (also && also());
  };
  if (timeout == std::chrono::nanoseconds::zero()) return ready();
  return wait_until(h->data_seq, h->consumers_waiting, FutexDeadline::after(timeout), ready,
                    &h->data_sleeps);
}

std::int64_t QueueCore::qsize() const noexcept {
  std::int64_t n = backlog(sh_->h);
  return n < 0 ? 0 : n;
}

std::int64_t QueueCore::maxsize() const noexcept { return sh_->h->maxsize; }
void QueueCore::close() noexcept { *closed_ = true; }
bool QueueCore::closed() const noexcept { return *closed_; }

void QueueCore::task_done() {
  QueueHeader* h = sh_->h;
  if (!h->joinable) throw ValueError("mpxx: task_done() on a queue that is not joinable");
  std::int64_t before = h->unfinished.fetch_sub(1, std::memory_order_acq_rel);
  if (before <= 0) {
    h->unfinished.fetch_add(1, std::memory_order_relaxed);
    throw ValueError("mpxx: task_done() called too many times");
  }
  if (before == 1) {
    h->unfinished_seq.fetch_add(1, std::memory_order_seq_cst);
    if (h->joiners_waiting.load(std::memory_order_seq_cst) > 0) futex_wake(&h->unfinished_seq, INT_MAX);
  }
}

bool QueueCore::join(std::chrono::nanoseconds timeout) {
  QueueHeader* h = sh_->h;
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  return wait_until(h->unfinished_seq, h->joiners_waiting, deadline,
                    [&] { return h->unfinished.load(std::memory_order_acquire) <= 0; });
}

std::size_t fuzz_queue_ring(std::span<const std::byte> input) {
  // A queue whose positions and ring another process wrote: [u64 head]
  // [u64 tail][ring bytes], read with gets that do not wait.
  wire::Reader in(input);
  if (in.remaining() < 16) return 0;
  QueueCore q(0, false, 4096);
  QueueHeader* h = q.sh_->h;
  const auto head = in.pod<std::uint64_t>();
  const auto tail = in.pod<std::uint64_t>();
  h->head.store(head);
  h->tail_seen = head;
  h->tail.store(tail);
  h->puts.store(tail - head);
  const auto ring = in.take(std::min<std::size_t>(in.remaining(), q.sh_->cap()));
  std::memcpy(q.sh_->ring, ring.data(), ring.size());
  std::size_t got = 0;
  while (got < 64 && q.get([](std::span<const std::byte>) {}, std::chrono::nanoseconds::zero())) ++got;
  return got;
}

void QueueCore::save(wire::OutArchive& ar) const {
  save_block(ar, ShmBlock{sh_->map, 0, sh_->map->size()});
}

void QueueCore::load(wire::InArchive& ar) {
  ShmBlock b = load_block(ar, kQueueHeaderBytes + 4096);
  auto* h = reinterpret_cast<QueueHeader*>(b.map->data());
  if (b.offset != 0 || h->magic != kQueueMagic || h->capacity < 4096 ||
      (h->capacity & (h->capacity - 1)) != 0 || kQueueHeaderBytes + h->capacity != b.map->size())
    throw ProtocolError("mpxx: the received shared object is not a queue");
  auto sh = std::make_shared<QueueShared>();
  sh->attach(std::move(b.map));
  sh_ = std::move(sh);
  closed_ = std::make_shared<bool>(false);
}

}  // namespace mpxx::detail
