// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier,
// Value, Array, RawValue, RawArray - between processes, under every start
// method, and when a process dies at the worst moment.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <mutex>
#include <ranges>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// --------------------------------------------------------- child targets
namespace sync_targets {

void add_under_lock(mpxx::Lock lock, mpxx::RawValue<long> counter, int n) {
  for (int i = 0; i < n; ++i) {
    std::scoped_lock g(lock);
    counter.value() += 1;
  }
}

void value_add(mpxx::Value<long> v, int n) {
  for (int i = 0; i < n; ++i) v.value() += 1;
}

void hold_lock_forever(mpxx::Lock lock, mpxx::Event held) {
  lock.acquire();
  held.set();
  for (;;) ::pause();
}

void hold_rlock_forever(mpxx::RLock lock, mpxx::Event held) {
  lock.acquire();
  lock.acquire();
  held.set();
  for (;;) ::pause();
}

// Waits for the lock (owned by someone about to die), reports via exit code.
void wait_for_lock(mpxx::Lock lock, mpxx::Event waiting) {
  waiting.set();
  bool got = lock.acquire(10s);
  std::exit(got && lock.recovered() ? 0 : 1);
}

void set_event_after(mpxx::Event e, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  e.set();
}

void wait_event(mpxx::Event e, mpxx::Event started) {
  started.set();
  std::exit(e.wait(10s) ? 0 : 1);
}

void semaphore_worker(mpxx::Semaphore s, mpxx::Value<int> inside, mpxx::Value<int> max_inside) {
  for (int i = 0; i < 20; ++i) {
    std::scoped_lock g(s);
    int now;
    {
      std::scoped_lock lk(inside.get_lock());
      now = ++inside.get_obj();
      if (now > max_inside.get_obj()) max_inside.get_obj() = now;
    }
    std::this_thread::sleep_for(200us);
    inside.value() -= 1;
  }
}

// Waits on the condition until `flag` is set, then exits 0.
void condition_waiter(mpxx::Condition c, mpxx::RawValue<int> flag, mpxx::Semaphore ready) {
  std::unique_lock g(c);
  ready.release();
  bool ok = c.wait_for([&] { return flag.value() != 0; }, 10s);
  std::exit(ok ? 0 : 1);
}

void condition_waiter_forever(mpxx::Condition c, mpxx::Semaphore ready) {
  std::unique_lock g(c);
  ready.release();
  for (;;) c.wait();
}

void barrier_party(mpxx::Barrier b, mpxx::RawArray<int> seen, int slot) {
  int index = b.wait(10s);
  seen[static_cast<std::size_t>(slot)] = index;
}

void barrier_expect_broken(mpxx::Barrier b) {
  try {
    b.wait(10s);
  } catch (const mpxx::BrokenBarrierError&) {
    std::exit(0);
  }
  std::exit(1);
}

void barrier_wait_forever(mpxx::Barrier b, mpxx::Event arrived) {
  arrived.set();
  b.wait();
  std::exit(0);
}

void count_action(mpxx::RawValue<int> calls) { calls.value() += 1; }

void array_negate(mpxx::Value<double> num, mpxx::Array<int> arr) {
  num.value() = 3.333333333333333;
  for (std::size_t i = 0; i < arr.size(); ++i) arr[i] = -arr[i];
}

}  // namespace sync_targets

namespace {
using namespace sync_targets;

class SyncTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(SyncTest);

using mpxx_test::seconds;

// Waits up to 10 s until n parties are inside b.wait(), as the barrier's own
// shared count shows (arrival has no event to wait on); true if they are.
bool wait_for_parties(const mpxx::Barrier& b, int n) {
  for (int i = 0; i < 2000 && b.n_waiting() < n; ++i) std::this_thread::sleep_for(5ms);
  return b.n_waiting() >= n;
}

// -------------------------------------------------------------------- Lock

TEST(Lock, BasicsAndPythonErrors) {
  mpxx::Lock l;
  EXPECT_FALSE(l.locked());
  EXPECT_TRUE(l.acquire());
  EXPECT_TRUE(l.locked());
  EXPECT_TRUE(l.owned());
  EXPECT_FALSE(l.acquire(false));  // not recursive
  l.release();
  EXPECT_THROW(l.release(), mpxx::ValueError);
  {
    std::scoped_lock g(l);
    EXPECT_TRUE(l.locked());
  }
  EXPECT_FALSE(l.locked());
  std::unique_lock u(l, std::defer_lock);
  EXPECT_TRUE(u.try_lock_for(10ms));
}

TEST(Lock, TimeoutIsHonoured) {
  mpxx::Lock l;
  l.acquire();
  double s = seconds([&] { EXPECT_FALSE(l.acquire(200ms)); });
  EXPECT_GE(s, 0.2);
  EXPECT_LT(s, 5.0);
  EXPECT_FALSE(l.try_lock_until(Clock::now() + 50ms));
  l.release();
}

TEST(Lock, AnyThreadMayRelease) {
  mpxx::Lock l;
  l.acquire();
  std::thread([&] { l.release(); }).join();
  EXPECT_FALSE(l.locked());
}

TEST_P(SyncTest, LockSerializesProcesses) {
  mpxx::Lock lock;
  mpxx::RawValue<long> counter(0);
  constexpr int kN = 20000;
  mpxx::Process a(opts(), add_under_lock, lock, counter, kN);
  mpxx::Process b(opts(), add_under_lock, lock, counter, kN);
  a.start();
  b.start();
  add_under_lock(lock, counter, kN);
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), 0);
  EXPECT_EQ(b.exitcode(), 0);
  EXPECT_EQ(counter.value(), 3L * kN);
}

TEST_P(SyncTest, LockHolderKilledIsRecovered) {
  mpxx::Lock lock;
  mpxx::Event held;
  mpxx::Process p(opts(), hold_lock_forever, lock, held);
  p.start();
  ASSERT_TRUE(held.wait(10s));
  EXPECT_FALSE(lock.acquire(false));
  p.kill();
  p.join();
  double s = seconds([&] { ASSERT_TRUE(lock.acquire(5s)); });
  EXPECT_LT(s, 1.0);
  EXPECT_TRUE(lock.recovered());
  lock.release();
  // Still a working lock, and this time nobody died.
  EXPECT_TRUE(lock.acquire(1s));
  EXPECT_FALSE(lock.recovered());
  lock.release();
}

TEST(LockDeath, SleepingWaiterTakesOverFromKilledHolder) {
  mpxx::Lock lock;
  mpxx::Event held, waiting;
  mpxx::Process holder(hold_lock_forever, lock, held);
  holder.start();
  ASSERT_TRUE(held.wait(10s));
  mpxx::Process waiter(wait_for_lock, lock, waiting);
  waiter.start();
  ASSERT_TRUE(waiting.wait(10s));
  // Whether the waiter is already asleep on the futex or about to be, it
  // must end up with the lock.
  holder.kill();
  holder.join();
  EXPECT_TRUE(waiter.join(5s));
  EXPECT_EQ(waiter.exitcode(), 0);
}

TEST(Lock, SignalsDoNotShortenTheTimeout) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  struct sigaction old {};
  ::sigaction(SIGUSR1, &sa, &old);
  mpxx::Lock l;
  l.acquire();
  pthread_t self = ::pthread_self();
  std::thread pester([self] {
    for (int i = 0; i < 10; ++i) {
      std::this_thread::sleep_for(25ms);
      ::pthread_kill(self, SIGUSR1);
    }
  });
  double s = seconds([&] { EXPECT_FALSE(l.acquire(400ms)); });
  pester.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GE(s, 0.4);
  EXPECT_LT(s, 5.0);
  l.release();
}

// ------------------------------------------------------------------- RLock

TEST(RLock, RecursionAndOwnership) {
  mpxx::RLock r;
  EXPECT_TRUE(r.acquire());
  EXPECT_TRUE(r.acquire());
  r.release();
  EXPECT_TRUE(r.locked());
  std::thread([&] {
    EXPECT_FALSE(r.acquire(false));
    EXPECT_THROW(r.release(), mpxx::RuntimeError);  // not this thread's
  }).join();
  r.release();
  EXPECT_FALSE(r.locked());
  EXPECT_THROW(r.release(), mpxx::RuntimeError);
}

TEST(RLock, ReleaseByAThreadThatDoesNotHoldItIsARuntimeError) {
  // multiprocessing asserts (AssertionError); mpxx raises RuntimeError,
  // threading.RLock's error for the same misuse, as Condition does.
  mpxx::RLock r;
  EXPECT_THROW(r.release(), mpxx::RuntimeError);  // held by no one
  r.acquire();
  std::thread([&] { EXPECT_THROW(r.release(), mpxx::RuntimeError); }).join();
  EXPECT_TRUE(r.owned());  // the refused release changed nothing
  r.release();
}

TEST(SyncTimeouts, ANegativeTimeoutDoesNotWait) {
  mpxx::Lock l;
  l.acquire();
  mpxx::RLock r;
  mpxx::Event held, let_go;
  std::thread holder([&] {
    r.acquire();
    held.set();
    let_go.wait();
    r.release();
  });
  held.wait();
  mpxx::Semaphore s(0);
  mpxx::Event e;
  mpxx::Condition c;
  mpxx::Barrier b(2);
  double t = seconds([&] {
    EXPECT_FALSE(l.acquire(-1s));
    EXPECT_FALSE(l.try_lock_for(-1s));
    EXPECT_FALSE(l.try_lock_until(Clock::now() - 1s));
    EXPECT_FALSE(r.acquire(-1s));
    EXPECT_FALSE(s.acquire(-1s));
    EXPECT_FALSE(s.acquire(std::chrono::duration<double>(-0.5)));
    EXPECT_FALSE(e.wait(-1s));
    {
      std::scoped_lock g(c);
      EXPECT_FALSE(c.wait(-1s));
      EXPECT_FALSE(c.wait_for([] { return false; }, -1s));
      EXPECT_TRUE(c.wait_for([] { return true; }, -1s));
    }
    EXPECT_THROW(b.wait(-1s), mpxx::BrokenBarrierError);
  });
  let_go.set();
  holder.join();
  EXPECT_LT(t, 1.0);
  l.release();
  s.release();
  e.set();
  EXPECT_TRUE(l.acquire(-1s));  // what is free is still taken
  EXPECT_TRUE(s.acquire(-1s));
  EXPECT_TRUE(e.wait(-1s));
  l.release();
}

TEST(Barrier, ANegativeDefaultTimeoutBreaksTheBarrierAtOnce) {
  mpxx::Barrier b(2, nullptr, -1s);
  double t = seconds([&] { EXPECT_THROW(b.wait(), mpxx::BrokenBarrierError); });
  EXPECT_LT(t, 5.0);
  EXPECT_TRUE(b.broken());
}

TEST_P(SyncTest, RLockHolderKilledIsRecovered) {
  mpxx::RLock lock;
  mpxx::Event held;
  mpxx::Process p(opts(), hold_rlock_forever, lock, held);
  p.start();
  ASSERT_TRUE(held.wait(10s));
  p.kill();
  p.join();
  ASSERT_TRUE(lock.acquire(5s));
  EXPECT_TRUE(lock.recovered());
  lock.release();  // one level: the dead owner's depth is not inherited
  EXPECT_FALSE(lock.locked());
}

// --------------------------------------------------------------- Semaphore

TEST(Semaphore, CountsAndBounds) {
  mpxx::Semaphore s(2);
  EXPECT_EQ(s.get_value(), 2);
  EXPECT_TRUE(s.acquire());
  EXPECT_TRUE(s.acquire());
  EXPECT_FALSE(s.acquire(false));
  double t = seconds([&] { EXPECT_FALSE(s.acquire(200ms)); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  s.release(2);
  EXPECT_EQ(s.get_value(), 2);
  s.release();  // unbounded: fine
  EXPECT_EQ(s.get_value(), 3);
  EXPECT_THROW(mpxx::Semaphore(-1), mpxx::ValueError);

  mpxx::BoundedSemaphore b(1);
  b.acquire();
  b.release();
  EXPECT_THROW(b.release(), mpxx::ValueError);
  EXPECT_EQ(b.get_value(), 1);
}

TEST_P(SyncTest, SemaphoreLimitsConcurrency) {
  mpxx::Semaphore s(2);
  mpxx::Value<int> inside(0), max_inside(0);
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 4; ++i) ps.emplace_back(opts(), semaphore_worker, s, inside, max_inside);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_LE(max_inside.value(), 2);
  EXPECT_GE(max_inside.value(), 1);
  EXPECT_EQ(inside.value(), 0);
  EXPECT_EQ(s.get_value(), 2);
}

// ------------------------------------------------------------------- Event

TEST(Event, Basics) {
  mpxx::Event e;
  EXPECT_FALSE(e.is_set());
  double t = seconds([&] { EXPECT_FALSE(e.wait(200ms)); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait());
  e.clear();
  EXPECT_FALSE(e.is_set());
}

TEST_P(SyncTest, EventWakesWaitingChildren) {
  mpxx::Event e, s1, s2;
  mpxx::Process a(opts(), wait_event, e, s1), b(opts(), wait_event, e, s2);
  a.start();
  b.start();
  ASSERT_TRUE(s1.wait(10s));
  ASSERT_TRUE(s2.wait(10s));
  e.set();
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), 0);
  EXPECT_EQ(b.exitcode(), 0);
}

TEST_P(SyncTest, EventSetByChild) {
  mpxx::Event e;
  mpxx::Process p(opts(), set_event_after, e, 50);
  p.start();
  EXPECT_TRUE(e.wait(10s));
  p.join();
}

// --------------------------------------------------------------- Condition

TEST(Condition, RequiresTheLock) {
  mpxx::Condition c;
  EXPECT_THROW(c.notify(), mpxx::RuntimeError);
  EXPECT_THROW(c.wait(10ms), mpxx::RuntimeError);
  std::scoped_lock g(c);
  double t = seconds([&] { EXPECT_FALSE(c.wait(200ms)); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  EXPECT_FALSE(c.wait_for([] { return false; }, 100ms));
  EXPECT_TRUE(c.wait_for([] { return true; }, 100ms));
  c.notify_all();
}

TEST(Condition, WaitReleasesEveryRLockLevel) {
  mpxx::RLock r;
  mpxx::Condition c(r);
  r.acquire();
  r.acquire();
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    std::scoped_lock g(c);  // possible only if wait released both levels
    c.notify();
  });
  EXPECT_TRUE(c.wait(10s));
  r.release();
  EXPECT_TRUE(r.locked());  // the second level came back
  r.release();
  EXPECT_FALSE(r.locked());
  t.join();
}

TEST_P(SyncTest, ConditionNotifiesAcrossProcesses) {
  mpxx::Condition c(mpxx::Lock{});
  mpxx::RawValue<int> flag(0);
  mpxx::Semaphore ready(0);
  mpxx::Process a(opts(), condition_waiter, c, flag, ready), b(opts(), condition_waiter, c, flag, ready);
  a.start();
  b.start();
  ASSERT_TRUE(ready.acquire(10s));
  ASSERT_TRUE(ready.acquire(10s));
  {
    std::scoped_lock g(c);
    flag.value() = 1;
    c.notify_all();
  }
  a.join();
  b.join();
  EXPECT_EQ(a.exitcode(), 0);
  EXPECT_EQ(b.exitcode(), 0);
}

TEST(ConditionDeath, KilledWaiterDoesNotBlockNotify) {
  mpxx::Condition c;
  mpxx::RawValue<int> flag(0);
  mpxx::Semaphore ready(0);
  mpxx::Process doomed(condition_waiter_forever, c, ready);
  doomed.start();
  ASSERT_TRUE(ready.acquire(10s));
  // The waiter releases the lock inside wait(); take it to be sure it sleeps.
  { std::scoped_lock g(c); }
  doomed.kill();
  doomed.join();
  {
    std::scoped_lock g(c);
    double t = seconds([&] { c.notify(); c.notify_all(); });
    EXPECT_LT(t, 1.0);
  }
  mpxx::Process later(condition_waiter, c, flag, ready);
  later.start();
  ASSERT_TRUE(ready.acquire(10s));
  {
    std::scoped_lock g(c);
    flag.value() = 1;
    c.notify();
  }
  later.join();
  EXPECT_EQ(later.exitcode(), 0);
}

// ----------------------------------------------------------------- Barrier

TEST_P(SyncTest, BarrierGivesDistinctIndexesAndRunsTheActionOnce) {
  mpxx::RawValue<int> calls(0);
  mpxx::Barrier b(3, mpxx::partial(count_action, calls));
  mpxx::RawArray<int> seen{-1, -1, -1};
  mpxx::Process p1(opts(), barrier_party, b, seen, 0), p2(opts(), barrier_party, b, seen, 1);
  p1.start();
  p2.start();
  seen[2] = b.wait(10s);
  p1.join();
  p2.join();
  std::vector<int> got(seen.begin(), seen.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(calls.value(), 1);
  EXPECT_EQ(b.parties(), 3);
  EXPECT_EQ(b.n_waiting(), 0);
  EXPECT_FALSE(b.broken());
}

TEST(Barrier, TimeoutBreaksIt) {
  mpxx::Barrier b(2);
  double t = seconds([&] { EXPECT_THROW(b.wait(200ms), mpxx::BrokenBarrierError); });
  EXPECT_GE(t, 0.2);
  EXPECT_LT(t, 5.0);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(1s), mpxx::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
}

TEST(Barrier, DefaultTimeoutAndThrowingAction) {
  mpxx::Barrier timed(2, nullptr, 100ms);
  EXPECT_THROW(timed.wait(), mpxx::BrokenBarrierError);
  mpxx::Barrier b(1, [] { throw std::runtime_error("action failed"); });
  EXPECT_THROW(b.wait(), std::runtime_error);
  EXPECT_TRUE(b.broken());
}

TEST(Barrier, AbortAndResetWakeWaiters) {
  mpxx::Barrier b(3);
  mpxx::Process w1(barrier_expect_broken, b), w2(barrier_expect_broken, b);
  w1.start();
  w2.start();
  wait_for_parties(b, 2);
  ASSERT_EQ(b.n_waiting(), 2);
  b.abort();
  w1.join();
  w2.join();
  EXPECT_EQ(w1.exitcode(), 0);
  EXPECT_EQ(w2.exitcode(), 0);
  b.reset();
  mpxx::Process w3(barrier_expect_broken, b);
  w3.start();
  wait_for_parties(b, 1);
  b.reset();  // a reset with a waiter breaks that wait
  w3.join();
  EXPECT_EQ(w3.exitcode(), 0);
  EXPECT_FALSE(b.broken());
}

TEST_P(SyncTest, PartyKilledInsideWaitBreaksTheBarrier) {
  // Four parties: the test itself is the third to arrive, so only the dead
  // party's absence can end the wait.
  mpxx::Barrier b(4);
  mpxx::Event arrived;
  mpxx::Process doomed(opts(), barrier_wait_forever, b, arrived);
  mpxx::Process other(opts(), barrier_expect_broken, b);
  doomed.start();
  ASSERT_TRUE(arrived.wait(10s));
  other.start();
  wait_for_parties(b, 2);
  ASSERT_EQ(b.n_waiting(), 2);
  doomed.kill();
  doomed.join();
  double t = seconds([&] { EXPECT_THROW(b.wait(10s), mpxx::BrokenBarrierError); });
  EXPECT_LT(t, 2.0);
  other.join();
  EXPECT_EQ(other.exitcode(), 0);
}

// Barrier(3), one party SIGKILLed inside wait(), in every arrival order: the
// two live parties (a child and this test) must get BrokenBarrierError, never
// pass. The last arrival comes right after the others (well within a waiter's
// 50 ms liveness slice), so only its own check can stop it passing.
TEST_P(SyncTest, BarrierPartyKilledInsideWaitBreaksItInEveryArrivalOrder) {
  enum class Order { killed_first, killed_while_others_wait, killed_last_but_one };
  for (Order order : {Order::killed_first, Order::killed_while_others_wait, Order::killed_last_but_one}) {
    SCOPED_TRACE(static_cast<int>(order));
    mpxx::Barrier b(3);
    mpxx::Event arrived;
    mpxx::Process doomed(opts(), barrier_wait_forever, b, arrived);
    mpxx::Process other(opts(), barrier_expect_broken, b);
    auto kill_doomed = [&] {
      doomed.kill();
      doomed.join();
    };
    if (order == Order::killed_last_but_one) {
      other.start();
      ASSERT_TRUE(wait_for_parties(b, 1));
    }
    doomed.start();
    ASSERT_TRUE(arrived.wait(10s));
    ASSERT_TRUE(wait_for_parties(b, order == Order::killed_last_but_one ? 2 : 1));
    if (order == Order::killed_first) kill_doomed();
    if (order != Order::killed_last_but_one) {
      other.start();
      ASSERT_TRUE(wait_for_parties(b, 2));
    }
    if (order != Order::killed_first) kill_doomed();
    EXPECT_THROW(b.wait(10s), mpxx::BrokenBarrierError);
    EXPECT_TRUE(b.broken());
    other.join();
    EXPECT_EQ(other.exitcode(), 0);
  }
}

// --------------------------------------------------------- Value and Array

TEST_P(SyncTest, ValueAndArrayAreShared) {
  mpxx::Value<double> num(0.0);
  mpxx::Array<int> arr(std::views::iota(0, 11));
  mpxx::Process p(opts(), array_negate, num, arr);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_DOUBLE_EQ(num.value(), 3.333333333333333);
  std::vector<int> want;
  for (int i = 0; i < 11; ++i) want.push_back(-i);
  EXPECT_EQ(arr.to_vector(), want);
}

TEST_P(SyncTest, LockedIncrementsAreExact) {
  mpxx::Value<long> v(0);
  mpxx::Process a(opts(), value_add, v, 10000), b(opts(), value_add, v, 10000);
  a.start();
  b.start();
  value_add(v, 10000);
  a.join();
  b.join();
  EXPECT_EQ(v.value(), 30000);
}

TEST(SharedArrays, BoundsAndRawForms) {
  mpxx::Array<int> a{1, 2, 3};
  EXPECT_EQ(a.size(), 3u);
  EXPECT_THROW(a[3] = 1, mpxx::IndexError);
  EXPECT_THROW((void)static_cast<const mpxx::Array<int>&>(a)[7], mpxx::IndexError);
  int sum = 0;
  for (int x : a) sum += x;
  EXPECT_EQ(sum, 6);
  {
    std::scoped_lock g(a.get_lock());
    a[0] += 10;  // recursive lock: fine while held
  }
  EXPECT_EQ(a[0], 11);
  mpxx::RawArray<double> r(4);
  EXPECT_THROW(r[4], mpxx::IndexError);
  r[1] = 2.5;
  EXPECT_EQ(r.get_obj()[1], 2.5);
  mpxx::RawValue<int> rv(7);
  EXPECT_EQ(rv.value(), 7);
  mpxx::Array<long> empty(0);
  EXPECT_EQ(empty.size(), 0u);
}

struct Sample {
  double x;
  int n;
};

TEST(SharedArrays, StructsAndCopiesShareMemory) {
  mpxx::Value<Sample> s(Sample{1.5, 2});
  mpxx::Value<Sample> copy = s;
  copy.value() = Sample{3.5, 4};
  EXPECT_EQ(s.value().get().n, 4);
  EXPECT_EQ(std::as_const(s).value().x, 3.5);
}

TEST(SharedWire, WrongKindOfObjectIsRejected) {
  mpxx::Lock l;
  mpxx::detail::wire::Writer w;
  mpxx::detail::wire::encode(w, l);
  std::vector<int> fds;
  for (int fd : w.fds()) fds.push_back(::dup(fd));
  mpxx::detail::wire::Reader r(w.bytes());
  r.set_fds(fds);
  EXPECT_THROW(mpxx::detail::wire::decode<mpxx::Event>(r), mpxx::ProtocolError);
}

}  // namespace
