// The queues' shared ring. See include/mpxx/queue.hpp for the guarantees.
//
// Layout of the memfd: a 4 KiB header, then `capacity` bytes of ring. The
// ring holds records [u32 length][u32 kind][payload, padded to 8 bytes] at
// monotonically increasing byte positions (position % capacity in memory);
// a WRAP record fills the tail end of the ring when the next record would
// not fit contiguously, or ends the lap early to go back to the ring's warm
// start (see kWarm). `tail` (written by the producer holding put_lock)
// only moves past a record once it is complete, which is what keeps a
// producer killed mid-put from exposing half a message; `head` (written by
// the consumer holding get_lock) only moves past a record once it has been
// consumed. Consumed 4 MiB blocks beyond the first 16 MiB are punched out of
// the memfd, so memory follows what is in flight, not the ring's size; a
// lap ends as early as the backlog allows (see kShortLap), so a busy pair
// keeps to the first few MiB it has already touched. A large message put
// while the ring is empty and a consumer waits in get skips the ring: the
// consumer reads it from the producer's memory (see offer()).
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
#include <optional>

#include "mpxx/detail/shm.hpp"
#include "mpxx/sync.hpp"
#include "channel/peer_read.hpp"
#include "sys/futex.hpp"
#include "sys/fd.hpp"
#include "sys/process_identity.hpp"

namespace mpxx::detail {

namespace {

constexpr std::uint32_t kQueueMagic = 0x51554555;  // "QUEU"
constexpr std::size_t kHeaderBytes = 4096;
constexpr std::uint32_t kData = 1, kWrap = 2;
constexpr std::uint64_t kPunchBlock = 4u << 20;
// The ring's first kWarm bytes stay resident and are reused whenever the
// backlog fits there: writing into fresh pages costs a page fault and a
// zeroing per 4 KiB (about 1 GB/s on a VM), writing into resident ones
// runs at memcpy speed. Blocks beyond are given back once consumed.
constexpr std::uint64_t kWarm = 16u << 20;
// A lap ends early, back at the ring's start, once it is this long (or
// twice the record) and the consumers have moved past the start. Shorter
// laps make small items slower: the producer then rewrites lines still in
// the consumer's cache (1 MiB laps: 5-8 M items/s, 4 MiB: 10-20 M, in
// alternating runs of `mpxx_bench queue_small`).
constexpr std::uint64_t kShortLap = 4u << 20;
constexpr std::uint64_t kLook = 64u << 10;
// Records up to this size have the lines of the record after next claimed
// ahead by the producer (see put_impl).
constexpr std::uint64_t kClaimAheadMax = 4096;

// Asks for the cache line at `p` to be brought in for writing.
inline void prefetch_for_write(const std::byte* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*p));  // a no-op on the few x86-64 CPUs without it
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

// Offers (see QueueCore::offer).
constexpr std::size_t kOfferPieces = 16;
enum OfferState : std::uint32_t { kNone = 0, kOffered = 1, kTaken = 2, kDone = 3, kRefused = 4 };
constexpr std::uint32_t offer_state(std::uint32_t word) { return word & 0xff; }
constexpr std::uint32_t offer_word(std::uint32_t word, OfferState s) { return (word & ~0xffu) | s; }
// How long a producer waits for a waiting consumer to take its offer
// before it puts the message into the ring after all.
constexpr auto kOfferPatience = std::chrono::milliseconds(10);

struct alignas(64) Line {
  std::byte bytes[64];
};

struct QueueHeader {
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
  // A large message offered straight to a consumer waiting in get (see
  // QueueCore::offer). `offer` is the offer's state in its low byte and a
  // generation above it; it changes only by compare-and-swap (and is a
  // futex word for the producer waiting on it). The other fields are
  // written by the producer holding put_lock before it publishes OFFERED.
  alignas(64) std::atomic<std::uint32_t> offer;
  std::atomic<std::uint32_t> offer_getter;  // pid of the consumer waiting in get, or 0
  std::uint32_t offer_pid;                  // the producer
  std::uint32_t offer_taker;                // the consumer that took it (written before TAKEN)
  std::uint64_t offer_taker_start;          // and its start time
  std::uint64_t offer_start;                // the producer's start time: with its pid, names it
  std::uint64_t offer_size;
  std::uint32_t offer_count;
  std::byte offer_pieces[16 * kOfferPieces];  // (address, length) pairs
};
static_assert(sizeof(QueueHeader) <= kHeaderBytes);

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
    ring = map->data() + kHeaderBytes;
    put_lock = LockBase(false, ShmBlock{map, offsetof(QueueHeader, put_lock), sizeof(Line)});
    get_lock = LockBase(false, ShmBlock{map, offsetof(QueueHeader, get_lock), sizeof(Line)});
  }
  std::uint64_t cap() const noexcept { return h->capacity; }
};

QueueCore::QueueCore(std::int64_t maxsize, bool joinable, std::uint64_t capacity)
    : sh_(std::make_shared<QueueShared>()), closed_(std::make_shared<bool>(false)) {
  if (capacity < 4096 || (capacity & (capacity - 1)) != 0)
    throw ValueError("mpxx: queue capacity must be a power of two >= 4096");
  sh_->attach(Mapping::create(kHeaderBytes + capacity, "mpxx:queue"));
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
// wake-up (see the end of QueueCore::put).
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
                static_cast<off_t>(kHeaderBytes + boff), static_cast<off_t>(len));
  }
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
      },
      timeout);
}

bool QueueCore::put(const wire::Writer& message, std::chrono::nanoseconds timeout) {
  if (message.refs().empty() && message.size() < kStreamedMin) return put(message.bytes(), timeout);
  // A large message goes in with pwrite(), from the value's own memory for
  // the blocks the Writer references: no staging copy, and no page fault
  // per 4 KiB of fresh shared memory in this process.
  const bool by_file = file_writes_reach(kHeaderBytes + sh_->cap());
  return put_impl(
      message.total_size(),
      [&](std::byte* dst, std::uint64_t file_at) {
        for (std::span<const std::byte> piece : message.pieces()) {
          if (by_file)
            write_at(sh_->map->fd(), piece, file_at);
          else
            std::memcpy(dst, piece.data(), piece.size());
          file_at += piece.size();
          dst += piece.size();
        }
      },
      timeout, &message);
}

namespace {

// This process's start time (with its pid, it names the process for good).
std::uint64_t own_start_time() { return sys::ProcessIdentity::self().start_time; }

// Whether the process that started at `start` still holds `pid` (a pid
// taken over by another process does not count).
// Conservative: a process that cannot be told about counts as alive.
bool still_alive(std::uint32_t pid, std::uint64_t start) {
  return sys::ProcessIdentity{static_cast<pid_t>(pid), start}.liveness() != sys::Liveness::gone;
}

// Undoes a put's count of unfinished tasks when the message does not go in.
void uncount(QueueHeader* h) {
  if (h->joinable) h->unfinished.fetch_sub(1, std::memory_order_relaxed);
}

// Hands a large message straight to a consumer waiting in get: the
// consumer reads it from this process's memory (peer_read.hpp), so it never
// goes into the ring's shared pages (the first touch of each costs a fault
// and a zeroing; on a VM often far more than the copy). Called with
// put_lock held, so no other message can go in meanwhile; offered only
// when the ring is empty, so the order is kept. Only for a put without a
// timeout, of a vector of numbers or a string (the Writer references its
// block): the put then waits while the consumer copies it, and the copy
// runs no user code. True if the message was handed over; false if it
// must go into the ring after all: no consumer waiting, none took it
// within kOfferPatience, the one that did may not read this process's
// memory, or it died reading it (the message is then still this put's to
// make, as a message stays in the ring when a consumer dies getting it).
//
// The offer's states, each change a compare-and-swap of `offer`:
//   NONE/DONE/REFUSED -> OFFERED   a producer, holding put_lock
//   OFFERED -> NONE                its producer withdrawing it; or, with a
//                                  new generation, the next producer (the
//                                  one that offered it died holding
//                                  put_lock)
//   OFFERED -> TAKEN               the consumer holding get_lock
//   TAKEN -> DONE                  read (or its decoding failed: consumed)
//   TAKEN -> REFUSED               not permitted to read it: the ring then
//   TAKEN -> NONE                  the consumer died reading it (cleared by
//                                  its producer, which then puts it in the
//                                  ring), or found its producer dead (the
//                                  message is lost, as a put cut short)
// A JoinableQueue counts the message before it is offered; whoever ends
// an offer without its message going in (the producer withdrawing it or
// clearing its dead consumer's TAKEN or a dead producer's offer, the
// consumer settling REFUSED or NONE) undoes the count, and a producer that
// then puts the message into the ring counts it again.
bool offer(QueueShared& q, const wire::Writer& message) {
  QueueHeader* h = q.h;
  const std::uint32_t getter = h->offer_getter.load(std::memory_order_acquire);
  if (getter == 0 || message.refs().empty()) return false;
  if (h->tail.load(std::memory_order_relaxed) != h->head.load(std::memory_order_acquire)) return false;
  const auto pieces = message.pieces(0);
  const std::uint64_t start = own_start_time();
  if (pieces.size() > kOfferPieces || start == 0 || !id_alive(getter)) return false;
  std::uint32_t word = h->offer.load(std::memory_order_acquire);
  // An offer still open belongs to a producer that died holding put_lock.
  if (offer_state(word) == kOffered ||
      (offer_state(word) == kTaken && !still_alive(h->offer_taker, h->offer_taker_start))) {
    if (!h->offer.compare_exchange_strong(word, offer_word(word + 0x100, kNone), std::memory_order_acq_rel))
      return false;  // taken meanwhile: its consumer settles it
    word = offer_word(word + 0x100, kNone);
    uncount(h);
  }
  if (offer_state(word) == kTaken) return false;  // a consumer is still finding its producer dead
  h->offer_pid = current_pid();
  h->offer_start = start;
  h->offer_size = message.total_size();
  h->offer_count = static_cast<std::uint32_t>(pieces.size());
  write_peer_read_pieces(h->offer_pieces, pieces);
  // Counted before any consumer can take it (and call task_done).
  if (h->joinable) h->unfinished.fetch_add(1, std::memory_order_relaxed);
  const std::uint32_t offered = offer_word(word + 0x100, kOffered);
  if (!h->offer.compare_exchange_strong(word, offered, std::memory_order_acq_rel)) {
    uncount(h);
    return false;
  }
  h->data_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(&h->data_seq, INT_MAX);

  // Wait for it to be taken, then for the consumer to be done with it.
  const FutexDeadline patience = FutexDeadline::after(kOfferPatience);
  std::uint32_t now = offered;
  auto changed = [&] { return (now = h->offer.load(std::memory_order_acquire)) != offered; };
  while (!spin_until(changed) && !patience.expired()) futex_wait(&h->offer, offered, patience);
  if (now == offered &&
      h->offer.compare_exchange_strong(now, offer_word(offered, kNone), std::memory_order_acq_rel)) {
    uncount(h);
    return false;  // withdrawn
  }
  while (offer_state(now) == kTaken) {
    futex_wait(&h->offer, now, FutexDeadline::after(kLivenessSlice));
    const std::uint32_t taken = now;
    now = h->offer.load(std::memory_order_acquire);
    if (now == taken && !still_alive(h->offer_taker, h->offer_taker_start) &&
        h->offer.compare_exchange_strong(now, offer_word(taken, kNone), std::memory_order_acq_rel)) {
      uncount(h);
      return false;  // its consumer died reading it: into the ring
    }
  }
  // REFUSED, or NONE (a consumer took this producer for dead): the consumer
  // undid the count.
  return offer_state(now) == kDone;
}

}  // namespace

template <class Copy>
bool QueueCore::put_impl(std::size_t size, const Copy& copy, std::chrono::nanoseconds timeout,
                         const wire::Writer* offerable) {
  if (*closed_) throw ValueError("mpxx: Queue is closed");
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
  if (offerable && timeout == std::chrono::nanoseconds::max() && offer(q, *offerable)) return true;

  const std::uint64_t tail = h->tail.load(std::memory_order_relaxed);
  const std::uint64_t off = tail % cap;
  std::uint64_t skip = cap - off < need ? cap - off : 0;  // a WRAP record first
  if (skip == 0 && off != 0 && need <= kWarm) {
    // Back to the start of the ring, where the pages are resident, as soon
    // as the consumers have left room there: when the next record would
    // leave the warm part, and once the lap is kShortLap long. A busy pair
    // then keeps writing the same few pages instead of faulting in fresh
    // ones all the way to kWarm (each first touch of a shared page costs a
    // fault and a zeroing in the writer, and a fault in the reader). Until
    // the consumers pass the WRAP record, the rest of the lap counts as
    // used: the backlog the ring then takes is bounded by the warm part
    // (16 MiB), never less.
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
  copy(q.ring + at + 8, kHeaderBytes + at + 8);
  if (h->joinable) h->unfinished.fetch_add(1, std::memory_order_relaxed);
  // The record becomes visible, whole, only here.
  h->tail.store(tail + skip + need, std::memory_order_release);
  h->puts.store(h->puts.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  // Wake a sleeping consumer, if there is one; a busy pair never calls
  // the kernel. (A waiter registers, then re-checks tail: see wait_until.)
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const std::uint32_t waiting = h->consumers_waiting.load(std::memory_order_acquire);
  if (waiting > 0) {
    // A waiter already woken and not yet back needs no second wake-up:
    // waking a sleeping process takes tens of microseconds, and a pool
    // fills a worker's ring with many tasks meanwhile (every put used to
    // make a futex call then). data_woken is the look (data_sleeps) that
    // the last completed wake-up saw. Whoever made that look read data_seq
    // before it, and the wake-up changed data_seq after: its futex_wait
    // returns at once or was woken, and it looks again (bumping
    // data_sleeps, before it can deregister) before it sleeps. So while
    // data_sleeps still equals data_woken and only one waiter is
    // registered, that waiter's next look is still to come, and it comes
    // after the fence above: it sees this record. With two waiters the
    // count does not say whose look it was: always wake. data_woken is
    // written only after futex_wake: a producer killed earlier leaves it
    // stale, and the next one wakes again. 64-bit counts never wrap.
    const std::uint64_t looks = h->data_sleeps.load(std::memory_order_seq_cst);
    if (waiting > 1 || looks != h->data_woken) {
      h->data_seq.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(&h->data_seq, 1);
      h->data_woken = looks;
    }
  }
  // Claims the lines the record after next will take (whole lines past
  // this record's end). The consumer usually read them a lap ago, so a
  // store there must first take them back from the consumer's core.
  // Claimed now, that happens while this process encodes the next value,
  // instead of inside the fence above, which waits for every store before
  // it. Issued after the fence, so this put's fence does not wait for the
  // claims either. A claim changes no byte: a line the consumer has still
  // to read (a backlog near a lap's end) only moves back to it.
  // 1 KiB items, alternating runs of `mpxx_bench queue_kib`: 1.6-2.0 GB/s
  // before, 3.1-4.5 after (small items and pool maps unchanged).
  if (need <= kClaimAheadMax) {
    const std::uint64_t past_this = (at + need + 63) & ~std::uint64_t{63};
    const std::uint64_t end = std::min(cap, at + 3 * need);
    for (std::uint64_t a = std::max(past_this, (at + 2 * need) & ~std::uint64_t{63}); a < end; a += 64)
      prefetch_for_write(q.ring + a);
  }
  return true;
}

namespace {
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

namespace {
// Takes the message offered (see offer) and hands it to `consume`, read
// from the producer's memory as the decoder asks for it. True if it was
// consumed (consume's exception, if any, is passed on: the message is
// consumed all the same); false if there was none to take after all, this
// process may not read the producer's memory (it then puts the message
// into the ring), or the producer died while it was read (it is lost, as
// a message whose producer dies in the middle of a put).
bool take_offer(QueueHeader* h,
                const std::function<void(std::span<const std::byte>, wire::Source*)>& consume) {
  std::uint32_t word = h->offer.load(std::memory_order_acquire);
  if (offer_state(word) != kOffered) return false;
  h->offer_taker = current_pid();
  h->offer_taker_start = own_start_time();
  const std::uint32_t taken = offer_word(word, kTaken);
  if (!h->offer.compare_exchange_strong(word, taken, std::memory_order_acq_rel)) return false;
  // Settled exactly once, whatever leaves this function (REFUSED if an
  // exception does before a decision: the producer then uses the ring).
  struct Settle {
    QueueHeader* h;
    std::uint32_t taken;
    bool done = false;
    void operator()(OfferState s) {
      done = true;
      std::uint32_t expected = taken;
      if (h->offer.compare_exchange_strong(expected, offer_word(taken, s), std::memory_order_acq_rel) &&
          s != kDone)
        uncount(h);  // not delivered: see offer()
      futex_wake(&h->offer, INT_MAX);
    }
    ~Settle() {
      if (!done) (*this)(kRefused);
    }
  } settle{h, taken};
  const auto pid = static_cast<pid_t>(h->offer_pid);
  const std::uint64_t start = h->offer_start;
  const std::uint64_t size = h->offer_size;
  const std::uint32_t count = std::min<std::uint32_t>(h->offer_count, kOfferPieces);
  std::byte pieces[16 * kOfferPieces];
  std::memcpy(pieces, h->offer_pieces, 16 * count);
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
}  // namespace

template <class Consume>
bool QueueCore::get_impl(const Consume& consume, std::chrono::nanoseconds timeout,
                         const StreamedConsume* takes_offers) {
  QueueShared& q = *sh_;
  QueueHeader* h = q.h;
  const std::uint64_t cap = q.cap();
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  if (!q.get_lock.acquire(timeout)) return false;
  std::scoped_lock<LockBase> held(std::adopt_lock, q.get_lock);
  // While this consumer waits, producers may offer it large messages.
  struct Getter {
    QueueHeader* h;
    ~Getter() {
      if (h) h->offer_getter.store(0, std::memory_order_release);
    }
  } getter{takes_offers && timeout != std::chrono::nanoseconds::zero() && own_start_time() != 0 ? h : nullptr};
  if (getter.h) h->offer_getter.store(current_pid(), std::memory_order_release);

  std::uint64_t head = h->head.load(std::memory_order_relaxed);
  for (;;) {
    // Likewise, the tail seen last often shows more messages already.
    auto ready = [&] {
      if (h->tail_seen != head) return true;
      h->tail_seen = h->tail.load(std::memory_order_acquire);
      return h->tail_seen != head ||
             (getter.h && offer_state(h->offer.load(std::memory_order_acquire)) == kOffered);
    };
    if (timeout == std::chrono::nanoseconds::zero() ? !ready()
                                                     : !wait_until(h->data_seq, h->consumers_waiting,
                                                                   deadline, ready, &h->data_sleeps))
      return false;
    if (h->tail_seen == head) {  // no message in the ring: an offer
      if (take_offer(h, *takes_offers)) return true;
      continue;
    }
    const std::uint64_t tail = h->tail_seen;
    const std::uint64_t off = head % cap;
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
    if (rec[1] != kData || need > tail - head || off + need > cap)
      throw ProtocolError("mpxx: the queue's shared memory is corrupt at position " +
                          std::to_string(head));
    std::exception_ptr failed;
    try {
      consume(std::span<const std::byte>(q.ring + off + 8, rec[0]), kHeaderBytes + off + 8);
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

void QueueCore::save(wire::OutArchive& ar) const {
  save_block(ar, ShmBlock{sh_->map, 0, sh_->map->size()});
}

void QueueCore::load(wire::InArchive& ar) {
  ShmBlock b = load_block(ar, kHeaderBytes + 4096);
  auto* h = reinterpret_cast<QueueHeader*>(b.map->data());
  if (b.offset != 0 || h->magic != kQueueMagic || h->capacity < 4096 ||
      (h->capacity & (h->capacity - 1)) != 0 || kHeaderBytes + h->capacity != b.map->size())
    throw ProtocolError("mpxx: the received shared object is not a queue");
  auto sh = std::make_shared<QueueShared>();
  sh->attach(std::move(b.map));
  sh_ = std::move(sh);
  closed_ = std::make_shared<bool>(false);
}

}  // namespace mpxx::detail
