// mpxx/detail/manager_sync.hpp - the proxies of a manager's synchronization
// objects: AcquirerProxy (Lock, RLock, Semaphore, BoundedSemaphore),
// ConditionProxy, EventProxy and BarrierProxy. Internal: users include
// mpxx/managers.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

#include "mpxx/detail/manager_proxy.hpp"
#include "mpxx/sync.hpp"

namespace mpxx {

// A manager's Lock, RLock, Semaphore or BoundedSemaphore (Python's
// AcquirerProxy). Lockable, so std::scoped_lock works. An RLock belongs to
// the thread that acquired it; if that thread's process dies, the server
// releases its Locks and RLocks.
class AcquirerProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  AcquirerProxy() noexcept : ProxyBase(detail::mgr::Kind::lock) {}
  AcquirerProxy(detail::mgr::Kind kind, std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(kind, std::move(r)) {}

  bool acquire(bool block = true) { return acquire_ns(detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_ns(detail::mgr::ns_of(timeout));
  }
  // RuntimeError when not held (or, for an RLock, held by another thread);
  // ValueError when a BoundedSemaphore would go above its initial value.
  void release() { call(M::a_release); }
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(d);
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    kind_ = t.kind;
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }

 private:
  bool acquire_ns(std::chrono::nanoseconds t) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(t));
  }
};

// A manager's Condition, over its own RLock or a given Lock/RLock proxy.
class ConditionProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  ConditionProxy() noexcept : ProxyBase(detail::mgr::Kind::condition) {}
  explicit ConditionProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::condition, std::move(r)) {}

  bool acquire(bool block = true) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(detail::mgr::ns_of(block)));
  }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void release() { call(M::a_release); }
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  // Releases the lock, waits for a notify (or the timeout), re-acquires;
  // false on timeout. RuntimeError without the lock.
  bool wait() { return call_bool(M::c_wait, -1); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::c_wait, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  // Waits until pred() (evaluated here, with the lock held) is true.
  template <class Pred>
  bool wait_for(Pred pred) {
    return detail::wait_for_predicate(pred, detail::kForever, [this](detail::nanos t) { wait_ns(t); });
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_for_predicate(pred, detail::to_nanos(timeout), [this](detail::nanos t) { wait_ns(t); });
  }
  void notify(int n = 1) { call(M::c_notify, [&](auto& w) { w.pod(std::int64_t{n}); }); }
  void notify_all() { call(M::c_notify, [](auto& w) { w.pod(std::int64_t{-1}); }); }

 private:
  bool wait_ns(std::chrono::nanoseconds t) { return call_bool(M::c_wait, detail::mgr::wire_timeout(t)); }
};

class EventProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  EventProxy() noexcept : ProxyBase(detail::mgr::Kind::event) {}
  explicit EventProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::event, std::move(r)) {}

  bool is_set() const { return call_bool(M::e_is_set, 0); }
  void set() { call(M::e_set); }
  void clear() { call(M::e_clear); }
  bool wait() { return call_bool(M::e_wait, -1); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::e_wait, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
};

// A manager's Barrier. A timeout, abort(), reset() during a wait, or a
// waiting client that dies breaks it: BrokenBarrierError for every waiter.
class BarrierProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  BarrierProxy() noexcept : ProxyBase(detail::mgr::Kind::barrier) {}
  explicit BarrierProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::barrier, std::move(r)) {}

  // Returns this party's index in [0, parties).
  int wait() { return wait_raw(-2); }  // -2: the barrier's default timeout
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_raw(detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void abort() { call(M::b_abort); }
  void reset() { call(M::b_reset); }
  int parties() const { return static_cast<int>(call_int(M::b_parties)); }
  int n_waiting() const { return static_cast<int>(call_int(M::b_n_waiting)); }
  bool broken() const { return call_bool(M::b_broken, 0); }

 private:
  int wait_raw(std::int64_t t) {
    auto r = call(M::b_wait, [&](auto& w) { w.pod(t); });
    auto rd = detail::mgr::reader(r);
    return static_cast<int>(rd.pod<std::int64_t>());
  }
};

}  // namespace mpxx
