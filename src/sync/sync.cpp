// Lock, RLock, Semaphore, Event, Condition and Barrier over shared-memory
// futexes. See include/mpxx/sync.hpp for the guarantees.
#include "mpxx/sync.hpp"

#include <climits>
#include <cstring>

#include "mpxx/log.hpp"
#include "sys/futex.hpp"

namespace mpxx {
namespace detail {

namespace {

// Lock word (the futex): 0 when free, else the owner's id (pid for Lock, tid
// for RLock), | kWaiters while someone may be sleeping on it. A waiter that
// finds the owner dead takes the word over with a compare-and-swap.
// Why: see docs/design.md, "Lock word and a dead owner".
constexpr std::uint32_t kWaiters = 0x80000000u;
constexpr std::uint32_t kIdMask = 0x3fffffffu;

enum Magic : std::uint32_t {
  kLockMagic = 0x4c4f434b,       // "LOCK"
  kRLockMagic = 0x524c434b,      // "RLCK"
  kSemMagic = 0x53454d41,        // "SEMA"
  kEventMagic = 0x45564e54,      // "EVNT"
  kCondMagic = 0x434f4e44,       // "COND"
  kBarrierMagic = 0x42415252,    // "BARR"
};

struct LockCell {
  std::atomic<std::uint32_t> word;
  std::uint32_t count;  // RLock depth; touched by the owner only
  std::uint32_t magic;
};

struct SemCell {
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> waiters;
  std::int32_t max;  // -1: unbounded
  std::uint32_t magic;
};

struct EventCell {
  std::atomic<std::uint32_t> flag;
  std::atomic<std::uint32_t> waiters;
  std::uint32_t magic;
};

struct CondCell {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> waiters;
  std::uint32_t magic;
};

struct BarrierCell {
  LockCell mutex;
  std::atomic<std::uint32_t> gen;
  std::uint32_t completed_gen;
  std::uint32_t count;
  std::uint32_t broken;
  std::uint32_t parties;
  std::uint32_t magic;
  std::int64_t timeout_ns;  // default timeout; -1: none
  std::uint32_t pids[1];    // [parties]
};

std::size_t barrier_size(std::uint32_t parties) {
  return offsetof(BarrierCell, pids) + sizeof(std::uint32_t) * parties;
}

template <class Cell>
Cell* cell(const ShmBlock& b) {
  return reinterpret_cast<Cell*>(b.data());
}

template <class Cell>
ShmBlock new_cell(const char* tag, std::size_t size = sizeof(Cell)) {
  return allocate_shared(size, alignof(Cell), tag);
}

template <class Cell>
ShmBlock load_cell(wire::InArchive& ar, std::uint32_t magic, const char* what,
                   std::size_t size = sizeof(Cell)) {
  ShmBlock b = load_block(ar, size);
  if (reinterpret_cast<std::uintptr_t>(b.data()) % alignof(Cell) != 0 ||
      cell<Cell>(b)->magic != magic)
    throw ProtocolError(std::string("mpxx: the received shared object is not a ") + what);
  return b;
}

}  // namespace

// ------------------------------------------------------------------ locks

LockBase::LockBase(bool recursive)
    : block_(new_cell<LockCell>(recursive ? "mpxx:rlock" : "mpxx:lock")),
      recursive_(recursive),
      recovered_(std::make_shared<bool>(false)) {
  cell<LockCell>(block_)->magic = recursive ? kRLockMagic : kLockMagic;
}

LockBase::LockBase(bool recursive, ShmBlock block) noexcept
    : block_(std::move(block)), recursive_(recursive), recovered_(std::make_shared<bool>(false)) {}

bool LockBase::acquire_ns(nanos timeout) {
  LockCell* c = cell<LockCell>(block_);
  const std::uint32_t me = recursive_ ? current_tid() : current_pid();
  if (recursive_ && (c->word.load(std::memory_order_relaxed) & kIdMask) == me) {
    ++c->count;
    return true;
  }
  auto take = [&](bool recovered) {
    if (recursive_) c->count = 1;
    *recovered_ = recovered;
    return true;
  };
  std::uint32_t expected = 0;
  if (c->word.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                      std::memory_order_relaxed))
    return take(false);
  if (timeout == nanos::zero()) return false;
  // One more try, no spinning: a sleeping waiter lets the owner keep the
  // lock hot. Why: see docs/design.md, "Lock: no spinning before sleeping".
  if (spin_until([&] {
        std::uint32_t e = 0;
        return c->word.load(std::memory_order_relaxed) == 0 &&
               c->word.compare_exchange_weak(e, me, std::memory_order_acquire,
                                             std::memory_order_relaxed);
      }, 0))
    return take(false);

  const FutexDeadline deadline = FutexDeadline::after(timeout);
  for (;;) {
    std::uint32_t w = c->word.load(std::memory_order_relaxed);
    if (w == 0) {
      // Others may still sleep: keep the waiters bit so release wakes them.
      if (c->word.compare_exchange_weak(w, me | kWaiters, std::memory_order_acquire,
                                        std::memory_order_relaxed))
        return take(false);
      continue;
    }
    if (!(w & kWaiters)) {
      if (!c->word.compare_exchange_weak(w, w | kWaiters, std::memory_order_relaxed)) continue;
      w |= kWaiters;
    }
    WaitResult r = futex_wait(&c->word, w, deadline.capped(kLivenessSlice));
    if (r != WaitResult::timed_out) continue;
    if (c->word.load(std::memory_order_relaxed) == w && !id_alive(w & kIdMask)) {
      std::uint32_t dead = w;
      if (c->word.compare_exchange_strong(dead, me | kWaiters, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        get_logger().warning(std::string(recursive_ ? "RLock" : "Lock") + " owner " +
                             std::to_string(w & kIdMask) +
                             " died holding it; the lock was recovered");
        return take(true);
      }
      continue;
    }
    if (deadline.expired()) return false;
  }
}

void LockBase::release() {
  LockCell* c = cell<LockCell>(block_);
  if (recursive_) {
    if ((c->word.load(std::memory_order_relaxed) & kIdMask) != current_tid())
      throw RuntimeError("mpxx: cannot release an RLock this thread does not hold");
    if (--c->count > 0) return;
  }
  std::uint32_t old = c->word.exchange(0, std::memory_order_release);
  if (old == 0) throw ValueError("mpxx: release of an unlocked Lock");
  if (old & kWaiters) futex_wake(&c->word, 1);
}

bool LockBase::recovered() const noexcept { return *recovered_; }

bool LockBase::locked() const noexcept {
  return cell<LockCell>(block_)->word.load(std::memory_order_relaxed) != 0;
}

bool LockBase::owned() const noexcept {
  std::uint32_t owner = cell<LockCell>(block_)->word.load(std::memory_order_relaxed) & kIdMask;
  return owner != 0 && owner == (recursive_ ? current_tid() : current_pid());
}

void LockBase::save(wire::OutArchive& ar) const { save_block(ar, block_); }

void LockBase::load(wire::InArchive& ar) {
  block_ = load_cell<LockCell>(ar, recursive_ ? kRLockMagic : kLockMagic,
                               recursive_ ? "RLock" : "Lock");
  recovered_ = std::make_shared<bool>(false);
}

// Gives Condition and Barrier what they need of a lock's insides.
struct LockAccess {
  static LockCell* cell_of(const LockBase& l) { return cell<LockCell>(l.block_); }
  static bool recursive(const LockBase& l) { return l.recursive_; }
  static bool acquire(LockBase& l, nanos t) { return l.acquire_ns(t); }
};

}  // namespace detail

using namespace detail;

// -------------------------------------------------------------- semaphore

Semaphore::Semaphore(int value) : Semaphore(value, -1) {}

Semaphore::Semaphore(int value, int max) {
  if (value < 0) throw ValueError("mpxx: semaphore initial value must be >= 0");
  block_ = new_cell<SemCell>("mpxx:semaphore");
  SemCell* c = cell<SemCell>(block_);
  c->count.store(static_cast<std::uint32_t>(value));
  c->max = max;
  c->magic = kSemMagic;
}

bool Semaphore::acquire_ns(nanos timeout) {
  SemCell* c = cell<SemCell>(block_);
  auto try_take = [&] {
    std::uint32_t n = c->count.load(std::memory_order_relaxed);
    while (n > 0)
      if (c->count.compare_exchange_weak(n, n - 1, std::memory_order_acquire,
                                         std::memory_order_relaxed))
        return true;
    return false;
  };
  if (try_take()) return true;
  if (timeout == nanos::zero()) return false;
  if (spin_until(try_take)) return true;
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  c->waiters.fetch_add(1, std::memory_order_seq_cst);
  bool got = false;
  for (;;) {
    if (try_take()) {
      got = true;
      break;
    }
    WaitResult r = futex_wait(&c->count, 0, deadline);
    if (r == WaitResult::timed_out && deadline.expired()) {
      got = try_take();
      break;
    }
  }
  c->waiters.fetch_sub(1, std::memory_order_relaxed);
  return got;
}

void Semaphore::release(int n) {
  if (n < 1) throw ValueError("mpxx: semaphore release count must be >= 1");
  SemCell* c = cell<SemCell>(block_);
  std::uint32_t cur = c->count.load(std::memory_order_relaxed);
  for (;;) {
    if (c->max >= 0 && cur + static_cast<std::uint32_t>(n) > static_cast<std::uint32_t>(c->max))
      throw ValueError("mpxx: semaphore or lock released too many times");
    if (c->count.compare_exchange_weak(cur, cur + static_cast<std::uint32_t>(n),
                                       std::memory_order_seq_cst))
      break;
  }
  if (c->waiters.load(std::memory_order_seq_cst) > 0) futex_wake(&c->count, n);
}

int Semaphore::get_value() const noexcept {
  return static_cast<int>(cell<SemCell>(block_)->count.load(std::memory_order_relaxed));
}

void Semaphore::save(wire::OutArchive& ar) const { save_block(ar, block_); }
void Semaphore::load(wire::InArchive& ar) { block_ = load_cell<SemCell>(ar, kSemMagic, "Semaphore"); }

// ------------------------------------------------------------------ event

Event::Event() : block_(new_cell<EventCell>("mpxx:event")) { cell<EventCell>(block_)->magic = kEventMagic; }

bool Event::is_set() const noexcept {
  return cell<EventCell>(block_)->flag.load(std::memory_order_acquire) != 0;
}

void Event::set() {
  EventCell* c = cell<EventCell>(block_);
  c->flag.store(1, std::memory_order_seq_cst);
  if (c->waiters.load(std::memory_order_seq_cst) > 0) futex_wake(&c->flag, INT_MAX);
}

void Event::clear() { cell<EventCell>(block_)->flag.store(0, std::memory_order_seq_cst); }

bool Event::wait_ns(nanos timeout) {
  EventCell* c = cell<EventCell>(block_);
  if (c->flag.load(std::memory_order_acquire)) return true;
  if (timeout == nanos::zero()) return false;
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  c->waiters.fetch_add(1, std::memory_order_seq_cst);
  while (!c->flag.load(std::memory_order_seq_cst)) {
    if (futex_wait(&c->flag, 0, deadline) == WaitResult::timed_out && deadline.expired()) break;
  }
  c->waiters.fetch_sub(1, std::memory_order_relaxed);
  return c->flag.load(std::memory_order_acquire) != 0;
}

void Event::save(wire::OutArchive& ar) const { save_block(ar, block_); }
void Event::load(wire::InArchive& ar) { block_ = load_cell<EventCell>(ar, kEventMagic, "Event"); }

// -------------------------------------------------------------- condition

Condition::Condition() : Condition(RLock()) {}
Condition::Condition(Lock lock) : Condition(static_cast<LockBase>(lock)) {}
Condition::Condition(RLock lock) : Condition(static_cast<LockBase>(lock)) {}
Condition::Condition(LockBase lock)
    : lock_(std::move(lock)), block_(new_cell<CondCell>("mpxx:condition")) {
  cell<CondCell>(block_)->magic = kCondMagic;
}

bool Condition::wait_ns(nanos timeout) {
  if (!lock_.owned()) throw RuntimeError("mpxx: cannot wait on a Condition without holding its lock");
  CondCell* c = cell<CondCell>(block_);
  LockCell* lc = LockAccess::cell_of(lock_);
  const std::uint32_t seq = c->seq.load(std::memory_order_seq_cst);
  c->waiters.fetch_add(1, std::memory_order_seq_cst);
  // Release the lock completely (all RLock levels), remembering the depth.
  const std::uint32_t depth = LockAccess::recursive(lock_) ? lc->count : 1;
  if (LockAccess::recursive(lock_)) lc->count = 1;
  lock_.release();
  const FutexDeadline deadline = FutexDeadline::after(timeout);
  bool notified = false;
  for (;;) {
    if (c->seq.load(std::memory_order_seq_cst) != seq) {
      notified = true;
      break;
    }
    WaitResult r = futex_wait(&c->seq, seq, deadline);
    if (r == WaitResult::woken || r == WaitResult::value_changed) {
      notified = true;
      break;
    }
    if (r == WaitResult::timed_out && deadline.expired()) break;
  }
  c->waiters.fetch_sub(1, std::memory_order_relaxed);
  LockAccess::acquire(lock_, kForever);
  if (LockAccess::recursive(lock_)) lc->count = depth;
  return notified;
}

void Condition::notify(int n) {
  if (!lock_.owned()) throw RuntimeError("mpxx: cannot notify a Condition without holding its lock");
  if (n <= 0) return;
  CondCell* c = cell<CondCell>(block_);
  c->seq.fetch_add(1, std::memory_order_seq_cst);
  if (c->waiters.load(std::memory_order_seq_cst) > 0) futex_wake(&c->seq, n);
}

void Condition::notify_all() { notify(INT_MAX); }

void Condition::save(wire::OutArchive& ar) const {
  ar(static_cast<std::uint8_t>(LockAccess::recursive(lock_)));
  lock_.save(ar);
  save_block(ar, block_);
}

void Condition::load(wire::InArchive& ar) {
  std::uint8_t recursive;
  ar(recursive);
  if (recursive > 1) throw ProtocolError("mpxx: corrupt Condition");
  LockBase l(recursive != 0, ShmBlock{});
  l.load(ar);
  lock_ = std::move(l);
  block_ = load_cell<CondCell>(ar, kCondMagic, "Condition");
}

// ---------------------------------------------------------------- barrier

Barrier::Barrier(int parties) : Barrier(parties, Target{}, std::nullopt) {}

Barrier::Barrier(int parties, Target action, std::optional<std::chrono::nanoseconds> timeout)
    : mutex_(false, ShmBlock{}) {
  if (parties < 1) throw ValueError("mpxx: a Barrier needs at least one party");
  auto n = static_cast<std::uint32_t>(parties);
  block_ = new_cell<BarrierCell>("mpxx:barrier", barrier_size(n));
  BarrierCell* b = cell<BarrierCell>(block_);
  b->mutex.magic = kLockMagic;
  b->parties = n;
  b->magic = kBarrierMagic;
  b->timeout_ns = timeout ? to_nanos(*timeout).count() : -1;  // a negative one: no wait
  mutex_ = LockBase(false, ShmBlock{block_.map, block_.offset, sizeof(LockCell)});
  if (action.local) action_ = std::make_shared<Target>(std::move(action));
}

namespace {
// The pid of a party other than `me` that has arrived in this generation and
// no longer exists (logged), or 0. Caller holds the barrier's mutex.
std::uint32_t dead_party(const BarrierCell* b, std::uint32_t me) {
  for (std::uint32_t i = 0; i < b->count && i < b->parties; ++i) {
    if (b->pids[i] != me && !id_alive(b->pids[i])) {
      get_logger().warning("Barrier party " + std::to_string(b->pids[i]) +
                           " died while waiting; the barrier is broken");
      return b->pids[i];
    }
  }
  return 0;
}
}  // namespace

void Barrier::run_action() {
  if (action_ && action_->local) action_->local();
}

int Barrier::wait_ns(std::optional<nanos> timeout) {
  BarrierCell* b = cell<BarrierCell>(block_);
  nanos t = timeout ? *timeout : (b->timeout_ns >= 0 ? nanos(b->timeout_ns) : kForever);
  const std::uint32_t me = current_pid();
  mutex_.lock();
  if (b->broken) {
    mutex_.unlock();
    throw BrokenBarrierError();
  }
  const std::uint32_t gen = b->gen.load(std::memory_order_relaxed);
  const std::uint32_t index = b->count++;
  b->pids[index] = me;
  auto break_locked = [&] {  // with mutex_ held; releases it
    b->broken = 1;
    b->count = 0;
    mutex_.unlock();
    futex_wake(&b->gen, INT_MAX);
  };
  if (b->count == b->parties) {
    // A party that died inside wait() is still counted; the waiters notice
    // only after a liveness slice, so the last arrival, which would let
    // them all pass at once, checks first.
    if (const std::uint32_t dead = dead_party(b, me)) {
      break_locked();
      throw BrokenBarrierError("mpxx: barrier party " + std::to_string(dead) +
                               " died while waiting; the barrier is broken");
    }
    try {
      run_action();
    } catch (...) {
      break_locked();
      throw;
    }
    b->count = 0;
    b->completed_gen = gen;
    b->gen.store(gen + 1, std::memory_order_release);
    mutex_.unlock();
    futex_wake(&b->gen, INT_MAX);
    return static_cast<int>(index);
  }
  mutex_.unlock();

  const FutexDeadline deadline = FutexDeadline::after(t);
  auto break_it = [&] {
    b->broken = 1;
    futex_wake(&b->gen, INT_MAX);
  };
  for (;;) {
    if (b->gen.load(std::memory_order_acquire) != gen) {
      mutex_.lock();
      bool ok = b->completed_gen == gen;
      mutex_.unlock();
      if (ok) return static_cast<int>(index);
      throw BrokenBarrierError("mpxx: the barrier was reset while waiting");
    }
    if (__atomic_load_n(&b->broken, __ATOMIC_ACQUIRE)) throw BrokenBarrierError();
    WaitResult r = futex_wait(&b->gen, gen, deadline.capped(kLivenessSlice));
    if (r != WaitResult::timed_out) continue;
    std::scoped_lock lk(mutex_);
    if (b->gen.load(std::memory_order_relaxed) != gen || b->broken) continue;
    if (deadline.expired()) {
      break_it();
      throw BrokenBarrierError("mpxx: barrier wait timed out");
    }
    if (dead_party(b, me)) break_it();
  }
}

void Barrier::reset() {
  BarrierCell* b = cell<BarrierCell>(block_);
  {
    std::scoped_lock lk(mutex_);
    if (b->count > 0) b->gen.fetch_add(1, std::memory_order_release);  // waiters: broken
    b->count = 0;
    b->broken = 0;
  }
  futex_wake(&b->gen, INT_MAX);
}

void Barrier::abort() {
  BarrierCell* b = cell<BarrierCell>(block_);
  {
    std::scoped_lock lk(mutex_);
    b->broken = 1;
  }
  futex_wake(&b->gen, INT_MAX);
}

int Barrier::parties() const noexcept { return static_cast<int>(cell<BarrierCell>(block_)->parties); }

int Barrier::n_waiting() const noexcept {
  BarrierCell* b = cell<BarrierCell>(block_);
  return b->broken ? 0 : static_cast<int>(b->count);
}

bool Barrier::broken() const noexcept { return cell<BarrierCell>(block_)->broken != 0; }

void Barrier::save(wire::OutArchive& ar) const {
  save_block(ar, block_);
  if (!action_) {
    ar(std::uint8_t{0});
    return;
  }
  if (!action_->encode)
    throw ProcessError("mpxx: this Barrier's action cannot be sent to another process: " +
                       action_->why_not);
  ar(std::uint8_t{1});
  action_->encode(ar.writer());  // inline, so that fds its arguments carry travel too
}

void Barrier::load(wire::InArchive& ar) {
  ShmBlock first = load_block(ar, offsetof(BarrierCell, pids));
  auto* b = cell<BarrierCell>(first);
  if (reinterpret_cast<std::uintptr_t>(b) % alignof(BarrierCell) != 0 || b->magic != kBarrierMagic ||
      b->parties == 0 || first.size < barrier_size(b->parties))
    throw ProtocolError("mpxx: the received shared object is not a Barrier");
  block_ = std::move(first);
  mutex_ = LockBase(false, ShmBlock{block_.map, block_.offset, sizeof(LockCell)});
  action_.reset();
  std::uint8_t has_action;
  ar(has_action);
  if (has_action > 1) throw ProtocolError("mpxx: corrupt Barrier");
  if (has_action) action_ = std::make_shared<Target>(bind_call(ar.reader()));
}

}  // namespace mpxx
