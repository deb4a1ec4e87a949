// mpxx/sync.hpp - Lock, RLock, Semaphore, BoundedSemaphore, Event,
// Condition, Barrier that work between processes and survive their death.
//
//   mpxx::Lock lock;
//   mpxx::Process p([](mpxx::Lock l) { std::scoped_lock g(l); ... }, lock);
//   { std::scoped_lock g(lock); ... }          // Lock is Lockable/TimedLockable
//
// Each object is a handle to a few bytes of shared memory (a memfd, see
// detail/shm.hpp): copying a handle, passing it to a Process under any start
// method, or sending it over a channel gives another handle to the *same*
// primitive. The memory lives while any process holds a handle.
//
// Memory ordering: release() (and set(), notify, the last Barrier arrival)
// happens-before the acquire() (wait(), ...) that observes it, across
// processes, as for std::mutex within one.
//
// Waiting: futexes, after a short spin, so a lock handed between two busy
// processes costs no system call; timeouts use the monotonic clock and stay
// exact when a signal interrupts the wait.
//
// When a process dies:
//  * holding a Lock or RLock: waiters notice within ~50 ms (they check the
//    owner's liveness while they sleep), one of them takes the lock over,
//    and its acquire() succeeds with recovered() == true; a warning is
//    logged. The data the lock protected may be half-updated: check it.
//  * holding Semaphore units: the units are lost, as in Python.
//  * waiting on a Condition or Event: nothing to do; notify() and set()
//    never wait for waiters, and later waiters are woken normally.
//  * inside Barrier::wait(): the other parties get BrokenBarrierError
//    within ~50 ms instead of waiting forever.
// Owners are identified by pid (Lock) or thread id (RLock), so all
// processes sharing a primitive must be in one pid namespace.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/shm.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"

namespace mpxx {

namespace detail {
// Condition::wait_for's loop (shared with the manager's ConditionProxy):
// true once pred() is, false when `timeout` has passed first; wait(t)
// waits for a notification, at most t.
template <class Pred, class Wait>
bool wait_for_predicate(Pred& pred, nanos timeout, Wait wait) {
  if (timeout == kForever) {
    while (!pred()) wait(kForever);
    return true;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool ok = pred();
  while (!ok) {
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= decltype(left)::zero()) break;
    wait(std::chrono::duration_cast<nanos>(left));
    ok = pred();
  }
  return ok;
}

// The shared part of Lock and RLock.
class LockBase {
 public:
  bool acquire(bool block = true) { return acquire_ns(block ? kForever : nanos::zero()); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_ns(to_nanos(timeout));
  }
  void release();

  // Lockable / TimedLockable.
  void lock() { acquire_ns(kForever); }
  bool try_lock() { return acquire_ns(nanos::zero()); }
  void unlock() { release(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire_ns(to_nanos(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> tp) {
    return acquire_ns(until(tp));
  }

  // True if this process's most recent successful acquire took the lock
  // over from a process that died holding it.
  bool recovered() const noexcept;
  // True if some process (or, for RLock, thread) holds the lock now.
  bool locked() const noexcept;
  // True if the calling process (Lock) or thread (RLock) holds it.
  bool owned() const noexcept;

  void save(wire::OutArchive& ar) const;
  void load(wire::InArchive& ar);

 protected:
  explicit LockBase(bool recursive);
 public:
  // A lock over an existing cell (Barrier embeds its mutex). Internal.
  LockBase(bool recursive, ShmBlock block) noexcept;

 protected:
  bool acquire_ns(nanos timeout);
  friend struct LockAccess;
  ShmBlock block_;
  bool recursive_;
  std::shared_ptr<bool> recovered_;  // per process, shared by copies of the handle
};
}  // namespace detail

class Condition;

// A non-recursive lock, as multiprocessing.Lock: once acquired, any acquire
// blocks until release(); any thread or process may release it. Releasing
// an unlocked Lock raises ValueError.
class Lock : public detail::LockBase {
 public:
  Lock() : LockBase(false) {}
  explicit Lock(detail::wire::empty_t) noexcept : LockBase(false, detail::ShmBlock{}) {}
};

// A recursive lock, as multiprocessing.RLock: the owning thread may acquire
// it again and must release it as often; releasing it from another thread
// raises RuntimeError (Python: AssertionError; see docs/sync.md).
class RLock : public detail::LockBase {
 public:
  RLock() : LockBase(true) {}
  explicit RLock(detail::wire::empty_t) noexcept : LockBase(true, detail::ShmBlock{}) {}
};

// A counting semaphore, as multiprocessing.Semaphore. Also Lockable
// (lock = acquire, unlock = release) for std::scoped_lock.
class Semaphore {
 public:
  explicit Semaphore(int value = 1);
  explicit Semaphore(detail::wire::empty_t) noexcept {}
  bool acquire(bool block = true) { return acquire_ns(block ? detail::kForever : detail::nanos::zero()); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_ns(detail::to_nanos(timeout));
  }
  void release(int n = 1);
  int get_value() const noexcept;

  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire_ns(detail::to_nanos(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> tp) {
    return acquire_ns(detail::until(tp));
  }

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 protected:
  Semaphore(int value, int max);
  bool acquire_ns(detail::nanos timeout);
  detail::ShmBlock block_;
};

// A Semaphore that raises ValueError when released above its initial value.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, value) {}
  explicit BoundedSemaphore(detail::wire::empty_t e) noexcept : Semaphore(e) {}
};

// multiprocessing.Event: a flag processes can wait for.
class Event {
 public:
  Event();
  explicit Event(detail::wire::empty_t) noexcept {}
  bool is_set() const noexcept;
  void set();
  void clear();
  // Waits until the flag is set; returns the flag (false on timeout).
  bool wait() { return wait_ns(detail::kForever); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_ns(detail::to_nanos(timeout));
  }

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  bool wait_ns(detail::nanos timeout);
  detail::ShmBlock block_;
};

// multiprocessing.Condition: wait for a notification while holding a lock
// (an RLock unless one is given). wait() and notify() require the lock to be
// held by the caller (RuntimeError otherwise). As with
// std::condition_variable, a wait may return without a notification; use
// wait_for(predicate) to wait for a condition.
class Condition {
 public:
  Condition();
  explicit Condition(detail::wire::empty_t) noexcept : lock_(false, detail::ShmBlock{}) {}
  explicit Condition(Lock lock);
  explicit Condition(RLock lock);

  bool acquire(bool block = true) { return lock_.acquire(block); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return lock_.acquire(timeout);
  }
  void release() { lock_.release(); }
  void lock() { lock_.lock(); }
  bool try_lock() { return lock_.try_lock(); }
  void unlock() { lock_.unlock(); }

  // Releases the lock, waits for a notification, reacquires the lock.
  // Returns false if the timeout expired.
  bool wait() { return wait_ns(detail::kForever); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_ns(detail::to_nanos(timeout));
  }
  // Waits until pred() is true; returns its last value.
  template <class Pred>
  bool wait_for(Pred pred) {
    return detail::wait_for_predicate(pred, detail::kForever, [this](detail::nanos t) { wait_ns(t); });
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_for_predicate(pred, detail::to_nanos(timeout), [this](detail::nanos t) { wait_ns(t); });
  }
  // Wakes up to n waiters (notify_all: all of them).
  void notify(int n = 1);
  void notify_all();

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  explicit Condition(detail::LockBase lock);
  bool wait_ns(detail::nanos timeout);
  detail::LockBase lock_;
  detail::ShmBlock block_;
};

// multiprocessing.Barrier: `parties` processes wait until all have arrived.
// wait() returns a distinct index in [0, parties) to each; the last to
// arrive runs `action` first (if given). A timeout, abort(), reset() during
// a wait, a throwing action, or a party dying inside wait() breaks the
// barrier: every waiter gets BrokenBarrierError. The action must be able to
// cross a process boundary to be used by spawned children (task.hpp).
class Barrier {
 public:
  explicit Barrier(int parties);
  explicit Barrier(detail::wire::empty_t) noexcept : mutex_(false, detail::ShmBlock{}) {}
  template <class F>
    requires std::is_invocable_v<std::decay_t<F>&>
  Barrier(int parties, F&& action, std::optional<std::chrono::nanoseconds> timeout = std::nullopt)
      : Barrier(parties, detail::make_target(std::forward<F>(action)), timeout) {}
  Barrier(int parties, std::nullptr_t, std::optional<std::chrono::nanoseconds> timeout)
      : Barrier(parties, detail::Target{}, timeout) {}

  int wait() { return wait_ns(std::nullopt); }
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_ns(detail::to_nanos(timeout));
  }
  // Puts the barrier back in its initial state; current waiters get
  // BrokenBarrierError.
  void reset();
  // Breaks the barrier: current and future waiters get BrokenBarrierError
  // until reset().
  void abort();
  int parties() const noexcept;
  int n_waiting() const noexcept;
  bool broken() const noexcept;

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  Barrier(int parties, detail::Target action, std::optional<std::chrono::nanoseconds> timeout);
  int wait_ns(std::optional<detail::nanos> timeout);
  void run_action();
  detail::LockBase mutex_;
  detail::ShmBlock block_;
  std::shared_ptr<detail::Target> action_;
};

}  // namespace mpxx
