// src/manager/sync_objects.cpp - the manager server's synchronization
// objects: Lock and RLock, Semaphore and BoundedSemaphore, Condition, Event
// and Barrier. Their waits go through Ctx::wait, so a client that leaves or
// a server that stops abandons them; a lock its client dies holding is
// released.
#include <cstdint>
#include <deque>
#include <mutex>

#include "manager/object.hpp"
#include "mpxx/log.hpp"

namespace mpxx::detail::mgr {

namespace {

// All synchronization objects of a server share one mutex, so that a
// Condition can release its lock and start waiting in one step.
std::mutex& sync_mu() {
  static auto* m = new std::mutex;
  return *m;
}

struct LockObj : Obj {
  bool recursive;
  std::uint64_t owner = 0;
  std::int64_t count = 0;
  std::condition_variable cv;
  explicit LockObj(bool rec) : Obj(rec ? Kind::rlock : Kind::lock), recursive(rec) {}

  bool acquire(Ctx& ctx, std::unique_lock<std::mutex>& lk, std::int64_t timeout) {
    if (recursive && count > 0 && owner == ctx.client) {
      if (count == INT64_MAX) fail(ErrKind::runtime, "RLock acquired too many times");
      ++count;
      return true;
    }
    if (!ctx.wait(lk, cv, timeout, [&] { return count == 0; })) return false;
    take(ctx, 1);
    return true;
  }
  void take(Ctx& ctx, std::int64_t n) {
    owner = ctx.client;
    count = n;
    ctx.hold(shared_from_this());
  }
  void release(Ctx& ctx) {
    if (count == 0) fail(ErrKind::runtime, recursive ? "cannot release un-acquired lock" : "release unlocked lock");
    if (recursive && owner != ctx.client) fail(ErrKind::runtime, "cannot release un-acquired lock");
    if (--count == 0) {
      owner = 0;
      cv.notify_one();
    }
  }
  bool owned_by(const Ctx& ctx) const { return count > 0 && owner == ctx.client; }
  void client_gone(std::uint64_t client) override {
    std::lock_guard g(sync_mu());
    if (count > 0 && owner == client) {
      count = 0;
      owner = 0;
      cv.notify_one();
      get_logger().warning("mpxx: a manager client died holding a lock; the lock was released");
    }
  }
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: put_u8(out, acquire(ctx, lk, in.pod<std::int64_t>())); return;
      case Method::a_release: release(ctx); return;
      case Method::a_locked: put_u8(out, count > 0); return;
      default: bad_method(m, "lock");
    }
  }
};

struct SemObj : Obj {
  std::int64_t value, max;  // max < 0: unbounded
  std::condition_variable cv;
  SemObj(Kind k, std::int64_t v) : Obj(k), value(v), max(k == Kind::bounded_semaphore ? v : -1) {}
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: {
        bool ok = ctx.wait(lk, cv, in.pod<std::int64_t>(), [&] { return value > 0; });
        if (ok) --value;
        put_u8(out, ok);
        return;
      }
      case Method::a_release:
        if ((max >= 0 && value >= max) || value == INT64_MAX)
          fail(ErrKind::value, "Semaphore released too many times");
        ++value;
        cv.notify_one();
        return;
      case Method::a_locked: put_u8(out, value == 0); return;
      default: bad_method(m, "semaphore");
    }
  }
};

struct CondObj : Obj {
  std::shared_ptr<LockObj> lock;
  struct Waiter {
    bool notified = false;
  };
  std::deque<std::shared_ptr<Waiter>> waiters;
  std::condition_variable cv;
  explicit CondObj(std::shared_ptr<LockObj> l) : Obj(Kind::condition), lock(std::move(l)) {}

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: put_u8(out, lock->acquire(ctx, lk, in.pod<std::int64_t>())); return;
      case Method::a_release: lock->release(ctx); return;
      case Method::c_wait: {
        auto timeout = in.pod<std::int64_t>();
        if (!lock->owned_by(ctx)) fail(ErrKind::runtime, "cannot wait on un-acquired lock");
        auto w = std::make_shared<Waiter>();
        waiters.push_back(w);
        std::int64_t saved = lock->count;
        lock->count = 0;
        lock->owner = 0;
        lock->cv.notify_one();
        bool got;
        try {
          got = ctx.wait(lk, cv, timeout, [&] { return w->notified; });
        } catch (...) {
          if (w->notified && !waiters.empty()) {  // a notify meant for someone: pass it on
            waiters.front()->notified = true;
            waiters.pop_front();
            cv.notify_all();
          }
          std::erase(waiters, w);
          throw;
        }
        if (!got) std::erase(waiters, w);
        // Re-acquire, however long it takes, as threading.Condition does.
        ctx.wait(lk, lock->cv, -1, [&] { return lock->count == 0; });
        lock->take(ctx, saved);
        put_u8(out, got);
        return;
      }
      case Method::c_notify: {
        auto n = in.pod<std::int64_t>();
        if (!lock->owned_by(ctx) && lock->recursive)
          fail(ErrKind::runtime, "cannot notify on un-acquired lock");
        if (lock->count == 0) fail(ErrKind::runtime, "cannot notify on un-acquired lock");
        for (; !waiters.empty() && n != 0; --n) {
          waiters.front()->notified = true;
          waiters.pop_front();
        }
        cv.notify_all();
        return;
      }
      default: bad_method(m, "Condition");
    }
  }
};

struct EventObj : Obj {
  bool flag = false;
  std::condition_variable cv;
  EventObj() : Obj(Kind::event) {}
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::e_is_set: in.pod<std::int64_t>(); put_u8(out, flag); return;
      case Method::e_set: flag = true; cv.notify_all(); return;
      case Method::e_clear: flag = false; return;
      case Method::e_wait: put_u8(out, ctx.wait(lk, cv, in.pod<std::int64_t>(), [&] { return flag; })); return;
      default: bad_method(m, "Event");
    }
  }
};

struct BarrierObj : Obj {
  // One record per round; waiters hold theirs, so an abort or a reset ends
  // exactly the round they are in, whatever happens after.
  struct Round {
    bool passed = false, broken = false;
  };
  std::int64_t parties, timeout;
  std::int64_t count = 0;
  std::shared_ptr<Round> round = std::make_shared<Round>();
  std::condition_variable cv;
  BarrierObj(std::int64_t p, std::int64_t t) : Obj(Kind::barrier), parties(p), timeout(t) {}

  void break_round() {
    round->broken = true;
    count = 0;
    cv.notify_all();
  }
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::b_wait: {
        auto t = in.pod<std::int64_t>();
        if (t == -2) t = timeout;
        if (round->broken) fail(ErrKind::broken_barrier, "barrier is broken");
        auto mine = round;
        std::int64_t index = count++;
        if (count == parties) {
          mine->passed = true;
          round = std::make_shared<Round>();
          count = 0;
          cv.notify_all();
          out.pod(index);
          return;
        }
        bool ok;
        try {
          ok = ctx.wait(lk, cv, t, [&] { return mine->passed || mine->broken; });
        } catch (...) {
          if (!mine->passed && !mine->broken) break_round();  // a party left: nobody passes
          throw;
        }
        if (mine->passed) {
          out.pod(index);
          return;
        }
        if (!ok && !mine->broken) break_round();  // this party's timeout breaks it for all
        fail(ErrKind::broken_barrier, "barrier is broken");
      }
      case Method::b_abort: break_round(); return;
      case Method::b_reset:
        if (count > 0) break_round();  // the current waiters get BrokenBarrierError
        round = std::make_shared<Round>();
        count = 0;
        return;
      case Method::b_parties: out.pod(parties); return;
      case Method::b_n_waiting: out.pod(count); return;
      case Method::b_broken: in.pod<std::int64_t>(); put_u8(out, round->broken); return;
      default: bad_method(m, "Barrier");
    }
  }
};

}  // namespace

std::shared_ptr<Obj> make_lock(bool recursive) { return std::make_shared<LockObj>(recursive); }

std::shared_ptr<Obj> make_semaphore(Kind semaphore_or_bounded, wire::Reader& in) {
  auto v = in.pod<std::int64_t>();
  if (v < 0) fail(ErrKind::value, "semaphore initial value must be >= 0");
  return std::make_shared<SemObj>(semaphore_or_bounded, v);
}

std::shared_ptr<Obj> make_condition(wire::Reader& in, const std::function<std::shared_ptr<Obj>(std::uint64_t)>& find) {
  auto lock_id = in.pod<std::uint64_t>();
  if (lock_id == 0) return std::make_shared<CondObj>(std::make_shared<LockObj>(true));
  auto l = std::dynamic_pointer_cast<LockObj>(find(lock_id));
  if (!l) fail(ErrKind::value, "mpxx: a Condition needs a Lock or an RLock");
  return std::make_shared<CondObj>(std::move(l));
}

std::shared_ptr<Obj> make_event() { return std::make_shared<EventObj>(); }

std::shared_ptr<Obj> make_barrier(wire::Reader& in) {
  auto parties = in.pod<std::int64_t>();
  auto timeout = in.pod<std::int64_t>();
  if (parties < 1) fail(ErrKind::value, "parties must be > 0");
  return std::make_shared<BarrierObj>(parties, timeout);
}

}  // namespace mpxx::detail::mgr
