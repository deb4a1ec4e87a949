// Manager: every proxy type and method, proxies in children under every
// start method, remote managers, bad input, server and client deaths, and
// the atomic updates under contention.
#include <signal.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;
using mpxx_test::seconds;

namespace {

using StrIntDict = mpxx::DictProxy<std::string, int>;

// ------------------------------------------------------- registered types

struct Counter {
  Counter() = default;
  explicit Counter(int start) : n(start) {}
  int add(int k) { return n += k; }
  int get() const { return n; }
  void fail(std::string why) { throw std::invalid_argument(why); }
  int n = 0;
};
Counter make_counter(int start) { return Counter(start); }
std::shared_ptr<Counter> shared_counter() {
  static auto c = std::make_shared<Counter>(100);
  return c;
}

// ------------------------------------------------------- child targets

void fill_dict_and_reverse(StrIntDict d, mpxx::ListProxy<int> l) {
  d["name"] = 1;
  d.set("age", 21);
  l.reverse();
}

void add_many(StrIntDict d, int times) {
  for (int i = 0; i < times; ++i) d.fetch_add("count", 1);
}

void decrement_with_fn(StrIntDict d) {
  d.update("count", [](int v) { return v - 1; });
}

void locked_decrement(StrIntDict d, mpxx::AcquirerProxy lock, int times) {
  for (int i = 0; i < times; ++i) {
    std::scoped_lock g(lock);
    d["count"] -= 1;
  }
}

void produce(mpxx::QueueProxy<std::string> q, int n) {
  for (int i = 0; i < n; ++i) q.put("item " + std::to_string(i));
}

void hold_lock_and_die(mpxx::AcquirerProxy lock, mpxx::EventProxy held) {
  lock.acquire();
  held.set();
  ::_exit(3);
}

int wait_barrier(mpxx::BarrierProxy b) { return b.wait(10s); }

void connect_and_put(mpxx::Address a, std::string key, int n) {
  mpxx::BaseManager m(a, key);
  m.connect();
  auto q = m.named<mpxx::QueueProxy<int>>("shared-q");
  for (int i = 0; i < n; ++i) q.put(i);
}

void connect_and_sum(mpxx::Address a, std::string key, int n) {
  mpxx::BaseManager m(a, key);
  m.connect();
  auto q = m.named<mpxx::QueueProxy<int>>("shared-q");
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += q.get(20s);
  m.named<mpxx::DictProxy<std::string, int>>("results").set("sum", sum);
}

void serve_tcp(int port, std::string key) {
  mpxx::BaseManager m(mpxx::Address::tcp("127.0.0.1", port), key);
  m.register_type<Counter>("Counter");
  m.get_server().serve_forever();
}

class ManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { before_ = mpxx_test::snapshot(); }
  void TearDown() override {
    auto after = mpxx_test::snapshot();
    EXPECT_EQ(before_.children, after.children) << "a child process was left behind";
  }
  mpxx_test::Resources before_;
};

// ------------------------------------------------------------------- dict

TEST_F(ManagerTest, DictMethods) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>();
  EXPECT_TRUE(d.empty());
  d["b"] = 2;
  d.set("a", 1);
  d["c"] = 3;
  EXPECT_EQ(int(d["b"]), 2);
  EXPECT_EQ(d.at("a"), 1);
  EXPECT_EQ(d.size(), 3u);
  EXPECT_TRUE(d.contains("c"));
  EXPECT_FALSE(d.contains("zz"));
  EXPECT_EQ(d.get("zz"), std::nullopt);
  EXPECT_EQ(d.get("zz", 7), 7);
  EXPECT_EQ(d.get("a"), std::optional<int>(1));
  try {
    (void)d.at("missing");
    FAIL() << "no KeyError";
  } catch (const mpxx::KeyError& e) {
    EXPECT_STREQ(e.what(), "'missing'");
  }
  // Insertion order, as Python's dict; replacing keeps the position.
  d["b"] = 20;
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(d.values(), (std::vector<int>{20, 1, 3}));
  auto items = d.items();
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0], (std::pair<std::string, int>{"b", 20}));
  EXPECT_EQ(d.setdefault("a", 99), 1);
  EXPECT_EQ(d.setdefault("d", 4), 4);
  EXPECT_EQ(d.pop("d"), 4);
  EXPECT_THROW(d.pop("d"), mpxx::KeyError);
  EXPECT_EQ(d.pop("d", -1), -1);
  EXPECT_TRUE(d.erase("c"));
  EXPECT_FALSE(d.erase("c"));
  d.update({{"x", 10}, {"y", 11}});
  d.update(std::map<std::string, int>{{"z", 12}});
  EXPECT_EQ(d.popitem(), (std::pair<std::string, int>{"z", 12}));
  EXPECT_EQ(d.copy(), (std::map<std::string, int>{{"a", 1}, {"b", 20}, {"x", 10}, {"y", 11}}));
  d["x"] += 5;
  EXPECT_EQ(d.at("x"), 15);
  std::ostringstream s;
  s << d;
  EXPECT_EQ(s.str(), "{'b': 20, 'a': 1, 'x': 15, 'y': 11}");
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  EXPECT_THROW(d.popitem(), mpxx::KeyError);
  // Many deletions keep the order and the lookups right.
  for (int i = 0; i < 200; ++i) d.set("k" + std::to_string(i), i);
  for (int i = 0; i < 200; i += 2) d.pop("k" + std::to_string(i));
  EXPECT_EQ(d.size(), 100u);
  EXPECT_EQ(d.keys().front(), "k1");
  EXPECT_EQ(d.at("k199"), 199);
}

TEST_F(ManagerTest, DictInitialItemsAndTypeChecks) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>({{"count", 100}});
  EXPECT_EQ(d.at("count"), 100);
  // The same object read with another value type: a clear error, not garbage.
  auto other = m.dict(std::map<int, std::string>{{1, "one"}});
  EXPECT_EQ(other.at(1), "one");
  EXPECT_THROW(other.at(2), mpxx::KeyError);
}

TEST_F(ManagerTest, AtomicFetchAddAndUpdate) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>();
  EXPECT_EQ(d.fetch_add("n", 5), 0);  // missing starts from 0
  EXPECT_EQ(d.fetch_add("n", 2), 5);
  EXPECT_EQ(d.update("n", [](int v) { return v * 10; }), 70);
  EXPECT_EQ(d.update("n", [](int& v) { v += 1; }), 71);
  EXPECT_EQ(d.at("n"), 71);
  auto v = m.Value<double>(1.5);
  EXPECT_EQ(v.fetch_add(1.0), 1.5);
  EXPECT_EQ(v.update([](double x) { return x * 2; }), 5.0);
  EXPECT_EQ(v.get(), 5.0);
}

// --------------------------------------------------------------- list/array

TEST_F(ManagerTest, ListMethods) {
  auto m = mpxx::Manager();
  auto l = m.list(std::vector<int>{5, 3, 8});
  l.append(1);
  l.extend({9, 3});
  EXPECT_EQ(l.copy(), (std::vector<int>{5, 3, 8, 1, 9, 3}));
  l.insert(0, 7);
  l.insert(-1, 4);   // before the last, as Python
  l.insert(100, 6);  // clamped to the end
  EXPECT_EQ(l.copy(), (std::vector<int>{7, 5, 3, 8, 1, 9, 4, 3, 6}));
  EXPECT_EQ(l.size(), 9u);
  EXPECT_EQ(l.at(0), 7);
  EXPECT_EQ(l.at(-1), 6);
  EXPECT_THROW(l.at(9), mpxx::IndexError);
  EXPECT_THROW(l.at(-10), mpxx::IndexError);
  l[1] = 50;
  l[1] += 1;
  EXPECT_EQ(int(l[1]), 51);
  EXPECT_EQ(l.index(3), 2);
  EXPECT_EQ(l.index(3, 3), 7);
  EXPECT_THROW(l.index(42), mpxx::ValueError);
  EXPECT_EQ(l.count(3), 2u);
  l.remove(3);
  EXPECT_THROW(l.remove(42), mpxx::ValueError);
  EXPECT_EQ(l.pop(), 6);
  EXPECT_EQ(l.pop(0), 7);
  l.erase(0);
  EXPECT_EQ(l.copy(), (std::vector<int>{8, 1, 9, 4, 3}));
  // Slices, as Python's l[a:b:c].
  EXPECT_EQ(l.slice(1, 3), (std::vector<int>{1, 9}));
  EXPECT_EQ(l.slice(-2, std::nullopt), (std::vector<int>{4, 3}));
  EXPECT_EQ(l.slice(std::nullopt, std::nullopt, 2), (std::vector<int>{8, 9, 3}));
  EXPECT_EQ(l.slice(std::nullopt, std::nullopt, -1), (std::vector<int>{3, 4, 9, 1, 8}));
  EXPECT_EQ(l.slice(3, 0, -1), (std::vector<int>{4, 9, 1}));
  EXPECT_EQ(l.slice(10, 20), std::vector<int>{});
  EXPECT_THROW(l.slice(0, 1, 0), mpxx::ValueError);
  l.sort();
  EXPECT_EQ(l.copy(), (std::vector<int>{1, 3, 4, 8, 9}));
  l.sort(true);
  EXPECT_EQ(l.copy(), (std::vector<int>{9, 8, 4, 3, 1}));
  l.reverse();
  std::ostringstream s;
  s << l;
  EXPECT_EQ(s.str(), "[1, 3, 4, 8, 9]");
  l.clear();
  EXPECT_TRUE(l.empty());
  EXPECT_THROW(l.pop(), mpxx::IndexError);
  auto words = m.list<std::string>({"pear", "apple"});
  words.sort();
  EXPECT_EQ(words.copy(), (std::vector<std::string>{"apple", "pear"}));
}

TEST_F(ManagerTest, ArrayIsFixedSize) {
  auto m = mpxx::Manager();
  auto a = m.Array<int>({1, 2, 3});
  a[0] = 10;
  a.set(-1, 30);
  EXPECT_EQ(a.copy(), (std::vector<int>{10, 2, 30}));
  EXPECT_EQ(a.size(), 3u);
  EXPECT_THROW(a.at(3), mpxx::IndexError);
  EXPECT_EQ(a.slice(1, std::nullopt), (std::vector<int>{2, 30}));
}

TEST_F(ManagerTest, NamespaceAndValue) {
  auto m = mpxx::Manager();
  auto ns = m.Namespace();
  ns.set("x", 10);
  ns.set("name", "bob");
  EXPECT_EQ(ns.get<int>("x"), 10);
  EXPECT_EQ(ns.get<std::string>("name"), "bob");
  EXPECT_TRUE(ns.has("x"));
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"x", "name"}));
  EXPECT_THROW(ns.get<double>("x"), mpxx::ProtocolError);  // stored as int
  ns.del("x");
  EXPECT_FALSE(ns.has("x"));
  try {
    ns.get<int>("x");
    FAIL();
  } catch (const mpxx::AttributeError& e) {
    EXPECT_NE(std::string(e.what()).find("no attribute 'x'"), std::string::npos);
  }
  EXPECT_THROW(ns.del("x"), mpxx::AttributeError);
  auto v = m.Value<int>(3);
  EXPECT_EQ(v.value(), 3);
  v.set(4);
  EXPECT_EQ(v.get(), 4);
}

// ------------------------------------------------------------------- sync

TEST_F(ManagerTest, LockRLockSemaphore) {
  auto m = mpxx::Manager();
  auto lock = m.Lock();
  EXPECT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.acquire(false));
  auto t = seconds([&] { EXPECT_FALSE(lock.acquire(100ms)); });
  EXPECT_GE(t, 0.09);
  lock.release();
  EXPECT_THROW(lock.release(), mpxx::RuntimeError);
  {
    std::scoped_lock g(lock);
    EXPECT_FALSE(lock.try_lock());
  }
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();

  auto r = m.RLock();
  EXPECT_TRUE(r.acquire());
  EXPECT_TRUE(r.acquire());  // recursive
  r.release();
  r.release();
  EXPECT_THROW(r.release(), mpxx::RuntimeError);
  // Another thread (its own connection) cannot release it or take it.
  r.acquire();
  std::thread([r]() mutable {
    EXPECT_THROW(r.release(), mpxx::RuntimeError);
    EXPECT_FALSE(r.acquire(false));
  }).join();
  r.release();

  auto s = m.Semaphore(2);
  EXPECT_TRUE(s.acquire());
  EXPECT_TRUE(s.acquire());
  EXPECT_FALSE(s.acquire(false));
  s.release();
  s.release();
  s.release();  // unbounded
  auto b = m.BoundedSemaphore(1);
  b.acquire();
  b.release();
  EXPECT_THROW(b.release(), mpxx::ValueError);
}

TEST_F(ManagerTest, ProxyTimedCallsWithANegativeTimeoutDoNotWait) {
  // Python's queue.Queue and threading.Lock behind a manager raise
  // ValueError here; mpxx keeps one rule for every timeout: negative means
  // "do not wait" (docs/managers.md).
  auto m = mpxx::Manager();
  auto q = m.Queue<int>(1);
  auto jq = m.JoinableQueue<int>();
  jq.put(1);
  auto lock = m.Lock();
  lock.acquire();
  auto sem = m.Semaphore(0);
  auto e = m.Event();
  auto c = m.Condition();
  auto b = m.Barrier(2);
  double t = seconds([&] {
    EXPECT_THROW(q.get(-1s), mpxx::Empty);
    EXPECT_NO_THROW(q.put(1, -1s));
    EXPECT_THROW(q.put(2, -1s), mpxx::Full);
    EXPECT_FALSE(jq.join(-1s));
    EXPECT_FALSE(lock.acquire(-1s));
    EXPECT_FALSE(lock.try_lock_for(-1s));
    EXPECT_FALSE(sem.acquire(-1s));
    EXPECT_FALSE(e.wait(-1s));
    {
      std::scoped_lock g(c);
      EXPECT_FALSE(c.wait(-1s));
      EXPECT_FALSE(c.wait_for([] { return false; }, -1s));
    }
    EXPECT_THROW(b.wait(-1s), mpxx::BrokenBarrierError);
  });
  EXPECT_LT(t, 5.0);
  EXPECT_EQ(q.get(-1s), 1);
  lock.release();
  m.shutdown();
}

TEST_F(ManagerTest, ConditionEventBarrier) {
  auto m = mpxx::Manager();
  auto cond = m.Condition();
  auto ready = m.Value<int>(0);
  EXPECT_THROW(cond.wait(10ms), mpxx::RuntimeError);  // without the lock
  std::thread notifier([cond, ready]() mutable {
    std::this_thread::sleep_for(50ms);
    std::scoped_lock g(cond);
    ready.set(1);
    cond.notify_all();
  });
  {
    std::scoped_lock g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return ready.get() == 1; }, 10s));
  }
  notifier.join();
  {
    std::scoped_lock g(cond);
    EXPECT_FALSE(cond.wait(50ms));  // nobody notifies
  }
  auto over_lock = m.Lock();
  auto c2 = m.Condition(over_lock);
  c2.acquire();
  EXPECT_FALSE(over_lock.acquire(false));  // the condition holds that lock
  c2.release();

  auto e = m.Event();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(20ms));
  std::thread setter([e]() mutable {
    std::this_thread::sleep_for(30ms);
    e.set();
  });
  EXPECT_TRUE(e.wait(10s));
  setter.join();
  EXPECT_TRUE(e.is_set());
  e.clear();
  EXPECT_FALSE(e.is_set());

  auto bar = m.Barrier(3);
  EXPECT_EQ(bar.parties(), 3);
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 2; ++i) ps.emplace_back(wait_barrier, bar);
  for (auto& p : ps) p.start();
  int mine = bar.wait(10s);
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_GE(mine, 0);
  EXPECT_LT(mine, 3);
  EXPECT_FALSE(bar.broken());
  // A timeout breaks it for everyone.
  EXPECT_THROW(bar.wait(50ms), mpxx::BrokenBarrierError);
  EXPECT_TRUE(bar.broken());
  EXPECT_THROW(bar.wait(), mpxx::BrokenBarrierError);
  bar.reset();
  EXPECT_FALSE(bar.broken());
  EXPECT_EQ(bar.n_waiting(), 0);
  std::thread aborter([bar]() mutable {
    std::this_thread::sleep_for(50ms);
    bar.abort();
  });
  EXPECT_THROW(bar.wait(10s), mpxx::BrokenBarrierError);
  aborter.join();
}

// ----------------------------------------------------------------- queues

TEST_F(ManagerTest, QueueAndJoinableQueue) {
  auto m = mpxx::Manager();
  auto q = m.Queue<std::string>(2);
  EXPECT_TRUE(q.empty());
  q.put("a");
  q.put_nowait("b");
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.qsize(), 2);
  EXPECT_THROW(q.put_nowait("c"), mpxx::Full);
  auto t = seconds([&] { EXPECT_THROW(q.put("c", 100ms), mpxx::Full); });
  EXPECT_GE(t, 0.09);
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get_nowait(), "b");
  EXPECT_THROW(q.get_nowait(), mpxx::Empty);
  EXPECT_THROW(q.get(50ms), mpxx::Empty);

  auto jq = m.JoinableQueue<int>();
  jq.put(1);
  jq.put(2);
  EXPECT_FALSE(jq.join(50ms));
  jq.get();
  jq.task_done();
  jq.get();
  jq.task_done();
  EXPECT_TRUE(jq.join(1s));
  jq.join();
  EXPECT_THROW(jq.task_done(), mpxx::ValueError);
}

void consume_all(mpxx::JoinableQueueProxy<int> q, mpxx::ValueProxy<int> sum) {
  for (;;) {
    int v = q.get();
    if (v < 0) {
      q.task_done();
      return;
    }
    sum.fetch_add(v);
    q.task_done();
  }
}

TEST_F(ManagerTest, JoinableQueueAcrossProcesses) {
  mpxx::Manager m;
  auto q = m.JoinableQueue<int>(4);
  auto sum = m.Value<int>(0);
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 2; ++i) ps.emplace_back(consume_all, q, sum);
  for (auto& p : ps) p.start();
  for (int i = 1; i <= 100; ++i) q.put(i);
  q.join();  // every item taken and marked done
  EXPECT_EQ(sum.get(), 5050);
  q.put(-1);
  q.put(-1);
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

void notify_waiter(mpxx::ConditionProxy c, mpxx::ValueProxy<int> ready, mpxx::ValueProxy<int> woken) {
  std::scoped_lock g(c);
  ready.fetch_add(1);  // under the lock, which wait() releases atomically
  if (c.wait(20s)) woken.fetch_add(1);
}

TEST_F(ManagerTest, ConditionNotifyWakesExactlyN) {
  mpxx::Manager m;
  auto c = m.Condition();
  auto ready = m.Value<int>(0);
  auto woken = m.Value<int>(0);
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(notify_waiter, c, ready, woken);
  for (auto& p : ps) p.start();
  auto until = [](auto pred) {
    for (int i = 0; i < 2000 && !pred(); ++i) std::this_thread::sleep_for(5ms);
    return pred();
  };
  // Once the lock is ours and all three have counted themselves, all three wait.
  ASSERT_TRUE(until([&] {
    std::scoped_lock g(c);
    return ready.get() == 3;
  }));
  {
    std::scoped_lock g(c);
    c.notify(2);
  }
  ASSERT_TRUE(until([&] { return woken.get() == 2; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(woken.get(), 2);  // the third still waits
  {
    std::scoped_lock g(c);
    c.notify_all();
  }
  for (auto& p : ps) p.join();
  EXPECT_EQ(woken.get(), 3);
  EXPECT_THROW(c.notify(), mpxx::RuntimeError);  // without the lock
}

TEST_F(ManagerTest, NamedObjectsAreSharedByName) {
  mpxx::Manager m;
  auto a = m.named<StrIntDict>("config");
  a["x"] = 1;
  auto b = m.named<StrIntDict>("config");
  EXPECT_TRUE(a == b);
  EXPECT_EQ(b.at("x"), 1);
  auto l1 = m.named_lock("guard");
  auto l2 = m.named_lock("guard");
  EXPECT_TRUE(l1.acquire(false));
  EXPECT_FALSE(std::async(std::launch::async, [l2]() mutable { return l2.acquire(false); }).get());
  l1.release();
  auto v = m.named<mpxx::ValueProxy<int>>("counter");
  EXPECT_EQ(v.fetch_add(2), 0);
  EXPECT_EQ(m.named<mpxx::ValueProxy<int>>("counter").get(), 2);
  // A name already used by another kind of object.
  EXPECT_THROW(m.named<mpxx::ListProxy<int>>("config"), mpxx::ValueError);
  EXPECT_THROW(m.named<StrIntDict>(""), mpxx::ValueError);
}

TEST_F(ManagerTest, QueueBetweenProcesses) {
  auto m = mpxx::Manager();
  auto q = m.Queue<std::string>();
  mpxx::Process p(produce, q, 100);
  p.start();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(q.get(10s), "item " + std::to_string(i));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// -------------------------------------------------------- children, all methods

class ManagerStartMethodTest : public mpxx_test::StartMethodTest {};

TEST_P(ManagerStartMethodTest, ProxiesWorkInChildren) {
  auto m = mpxx::Manager({.context = &mpxx::get_context(GetParam())});
  auto d = m.dict<std::string, int>();
  auto l = m.list<int>({0, 1, 2, 3});
  mpxx::Process p(opts(), fill_dict_and_reverse, d, l);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(d.copy(), (std::map<std::string, int>{{"age", 21}, {"name", 1}}));
  EXPECT_EQ(l.copy(), (std::vector<int>{3, 2, 1, 0}));
}

TEST_P(ManagerStartMethodTest, FetchAddUnderContentionIsExact) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>();
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 8; ++i) ps.emplace_back(opts(), add_many, d, 50);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(d.at("count"), 400);
}

MPXX_FOR_EACH_START_METHOD(ManagerStartMethodTest);

void set_flag(StrIntDict d) { d["flag"] = 1; }

TEST_F(ManagerTest, ABusyStarterDoesNotKeepOthersOut) {
  // The starting thread never idles nor blocks: children still get in.
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>();
  mpxx::Process p(set_flag, d);
  p.start();
  auto t = seconds([&] {
    while (!d.contains("flag")) {
    }
  });
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_LT(t, 10.0);
}

TEST_F(ManagerTest, LockedAndAtomicDecrementsFromManyProcesses) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>({{"count", 100}});
  auto lock = m.Lock();
  // Under the lock, the two round trips of `d["count"] -= 1` do not interleave.
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 10; ++i) ps.emplace_back(locked_decrement, d, lock, 5);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(d.at("count"), 50);
  // The atomic form needs no lock.
  ps.clear();
  for (int i = 0; i < 50; ++i) ps.emplace_back(decrement_with_fn, d);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(d.at("count"), 0);
}

TEST_F(ManagerTest, ProxiesNestAndTravelThroughQueues) {
  auto m = mpxx::Manager();
  auto inner = m.dict<std::string, int>();
  auto outer = m.list<StrIntDict>();
  outer.append(inner);
  outer.at(0).set("via", 1);  // a proxy decoded from the server
  EXPECT_EQ(inner.at("via"), 1);
  mpxx::Queue<StrIntDict> q;
  q.put(inner);
  auto again = q.get();
  again.set("again", 2);
  EXPECT_EQ(inner.size(), 2u);
  EXPECT_TRUE(again == inner);
}

// A proxy's bytes parked in a pipe name its object without keeping it
// alive; receiving them takes a reference only if the object still exists.
// A proxy's decref travels on the same connection as this thread's later
// calls, so the server has handled it before the next call returns.
class Parked {
 public:
  template <class P>
  void park(const P& p, int copies) {
    for (int i = 0; i < copies; ++i) tx_.send(p);
  }
  // Whether the next parked object still exists.
  bool alive() {
    auto p = rx_.recv<mpxx::ListProxy<int>>();
    try {
      (void)p.size();
      return true;
    } catch (const mpxx::RemoteError& e) {
      EXPECT_NE(std::string(e.what()).find("freed"), std::string::npos) << e.what();
      return false;
    }
  }
  mpxx::ListProxy<int> take() { return rx_.recv<mpxx::ListProxy<int>>(); }

 private:
  std::pair<mpxx::Connection, mpxx::Connection> ends_ = mpxx::Pipe();
  mpxx::Connection& rx_ = ends_.first;
  mpxx::Connection& tx_ = ends_.second;
};

// A fresh list, stored by `store` only (parked keeps a way to ask whether
// it is still alive): the caller's proxy is gone when this returns.
template <class M, class Store>
void store_fresh_list(M& m, Parked& parked, Store store) {
  auto l = m.template list<int>({1});
  parked.park(l, 2);
  store(l);
}

TEST_F(ManagerTest, ObjectsAreFreedWithTheirLastProxy) {
  auto m = mpxx::Manager();
  Parked parked;
  {
    auto l = m.list<int>({1});
    parked.park(l, 2);
    EXPECT_TRUE(parked.alive());
  }
  EXPECT_FALSE(parked.alive());
}

TEST_F(ManagerTest, AProxyStoredInAManagedObjectKeepsItsObjectAlive) {
  using L = mpxx::ListProxy<std::string>;
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, L>();
  auto lists = m.list<L>();
  auto ns = m.Namespace();
  auto v = m.Value<L>(m.list<std::string>({"initial"}));
  auto q = m.Queue<L>();
  {
    auto pets = m.list<std::string>({"cat", "dog"});
    d.set("pets", pets);
    lists.append(pets);
    ns.set("pets", pets);
    q.put(pets);
  }
  // Python: d['pets'] still works after the caller's own proxy is gone.
  EXPECT_EQ(d.at("pets").size(), 2u);
  EXPECT_EQ(lists.at(0).at(1), "dog");
  EXPECT_EQ(ns.get<L>("pets").size(), 2u);
  EXPECT_EQ(v.get().at(0), "initial");  // a proxy a Value was made with
  EXPECT_EQ(q.get(5s).size(), 2u);       // one taken from a queue
  {
    auto l = m.list<L>({m.list<std::string>({"x"})});  // made with a list of proxies
    lists.extend(l.copy());
    d.update({{"u", m.list<std::string>({"y"})}});
    d.setdefault("sd", m.list<std::string>({"z"}));
  }
  EXPECT_EQ(lists.at(1).at(0), "x");
  EXPECT_EQ(d.at("u").at(0), "y");
  EXPECT_EQ(d.at("sd").at(0), "z");
  // A proxy of an object already freed cannot be stored: Python fails too.
  Parked parked;
  {
    auto gone = m.list<int>();
    parked.park(gone, 1);
  }
  auto stale = parked.take();
  auto di = m.dict<std::string, mpxx::ListProxy<int>>();
  EXPECT_THROW(di.set("x", stale), mpxx::ValueError);
  EXPECT_EQ(di.size(), 0u);
}

TEST_F(ManagerTest, AManagedObjectGivesBackTheProxiesItDrops) {
  using L = mpxx::ListProxy<int>;
  auto m = mpxx::Manager();
  Parked parked;
  auto stored = [&](auto store) { store_fresh_list(m, parked, store); };
  auto d = m.dict<std::string, L>();
  auto other = m.list<int>();

  stored([&](L l) { d.set("k", l); });
  EXPECT_TRUE(parked.alive());
  d.set("k", other);  // overwritten
  EXPECT_FALSE(parked.alive());

  stored([&](L l) { d.set("k", l); });
  EXPECT_TRUE(parked.alive());
  EXPECT_TRUE(d.erase("k"));
  EXPECT_FALSE(parked.alive());

  stored([&](L l) { d.set("k", l); });
  EXPECT_TRUE(parked.alive());
  {
    L popped = d.pop("k");  // the caller holds it now
    EXPECT_EQ(popped.size(), 1u);
  }
  EXPECT_FALSE(parked.alive());

  stored([&](L l) { d.set("k", l); });
  EXPECT_TRUE(parked.alive());
  EXPECT_EQ(d.popitem().second.size(), 1u);
  EXPECT_FALSE(parked.alive());

  stored([&](L l) { d.set("k", l); });
  EXPECT_TRUE(parked.alive());
  d.clear();
  EXPECT_FALSE(parked.alive());

  auto lst = m.list<L>();
  stored([&](L l) { lst.append(l); });
  EXPECT_TRUE(parked.alive());
  lst.set(0, other);
  EXPECT_FALSE(parked.alive());
  stored([&](L l) { lst.append(l); });
  EXPECT_TRUE(parked.alive());
  EXPECT_EQ(lst.pop().size(), 1u);
  EXPECT_FALSE(parked.alive());
  stored([&](L l) { lst.append(l); });
  EXPECT_TRUE(parked.alive());
  lst.clear();
  EXPECT_FALSE(parked.alive());

  auto ns = m.Namespace();
  stored([&](L l) { ns.set("a", l); });
  EXPECT_TRUE(parked.alive());
  ns.del("a");
  EXPECT_FALSE(parked.alive());

  auto v = m.Value<L>(other);
  stored([&](L l) { v.set(l); });
  EXPECT_TRUE(parked.alive());
  v.set(other);
  EXPECT_FALSE(parked.alive());

  // The container itself freed, and containers nested in it.
  {
    auto q = m.Queue<L>();
    stored([&](L l) { q.put(l); });
    EXPECT_TRUE(parked.alive());
  }
  EXPECT_FALSE(parked.alive());
  {
    auto outer = m.list<mpxx::DictProxy<std::string, L>>();
    {
      auto inner = m.dict<std::string, L>();
      stored([&](L l) { inner.set("k", l); });
      outer.append(inner);
    }
    EXPECT_TRUE(parked.alive());  // the outer list keeps the dict, which keeps the list
  }
  EXPECT_FALSE(parked.alive());
}

// update(fn) re-encodes the value on the server: the objects its proxies
// name stay alive as long as it is stored, and are let go with it.
TEST_F(ManagerTest, UpdateOfAValueHoldingAProxyKeepsItsObjectAlive) {
  using L = mpxx::ListProxy<int>;
  using Tagged = std::pair<int, L>;
  auto m = mpxx::Manager();
  Parked parked;
  auto stored = [&](auto store) { store_fresh_list(m, parked, store); };
  auto bump = [](Tagged t) { return Tagged{t.first + 1, t.second}; };

  auto d = m.dict<std::string, Tagged>();
  stored([&](L l) { d.set("k", Tagged{0, l}); });
  EXPECT_EQ(d.update("k", bump).first, 1);
  EXPECT_EQ(d.update("k", bump).first, 2);
  EXPECT_TRUE(parked.alive());
  EXPECT_EQ(d.at("k").second.size(), 1u);
  EXPECT_TRUE(d.erase("k"));
  EXPECT_FALSE(parked.alive());

  auto other = m.list<int>();
  auto v = m.Value<Tagged>(Tagged{0, other});
  stored([&](L l) { v.set(Tagged{0, l}); });
  EXPECT_EQ(v.update(bump).first, 1);
  EXPECT_TRUE(parked.alive());
  EXPECT_EQ(v.get().second.at(0), 1);
  v.set(Tagged{0, other});
  EXPECT_FALSE(parked.alive());
}

// ------------------------------------------------------- registered types

TEST_F(ManagerTest, RegisteredTypes) {
  mpxx::BaseManager m;
  m.register_type<Counter>("Counter");
  m.register_type<Counter>("CounterFrom", make_counter);
  m.register_type<Counter>("Shared", shared_counter);
  m.start();
  auto c = m.create<Counter>("Counter");
  EXPECT_EQ(c.call<&Counter::add>(5), 5);
  EXPECT_EQ(c.call<&Counter::add>(2), 7);
  EXPECT_EQ(c.call<&Counter::get>(), 7);
  auto c2 = m.create<Counter>("CounterFrom", 40);
  EXPECT_EQ(c2.call<&Counter::get>(), 40);
  try {
    c.call<&Counter::fail>("bad input");
    FAIL();
  } catch (const mpxx::RemoteError& e) {
    EXPECT_NE(e.type_name().find("invalid_argument"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "bad input");
  }
  // One object behind every proxy from a shared factory.
  auto s1 = m.create<Counter>("Shared");
  auto s2 = m.create<Counter>("Shared");
  s1.call<&Counter::add>(1);
  EXPECT_EQ(s2.call<&Counter::get>(), 101);
  // Unknown type, wrong arguments, wrong proxy type: errors, the server goes on.
  EXPECT_THROW(m.create<Counter>("Nope"), mpxx::RemoteError);
  EXPECT_THROW(m.create<Counter>("CounterFrom", std::string("x")), mpxx::RemoteError);
  EXPECT_THROW(m.create<std::string>("Counter"), mpxx::ValueError);
  EXPECT_EQ(c.call<&Counter::get>(), 7);
}

TEST_F(ManagerTest, OnlyExposedMethodsCanBeCalled) {
  mpxx::BaseManager m;
  m.register_type<Counter>("Counter", {.exposed = mpxx::exposed<&Counter::add, &Counter::get>()});
  m.start();
  auto c = m.create<Counter>("Counter");
  EXPECT_EQ(c.call<&Counter::add>(2), 2);
  try {
    c.call<&Counter::fail>("x");
    FAIL() << "an unexposed method ran";
  } catch (const mpxx::RemoteError& e) {
    EXPECT_NE(e.message().find("does not expose"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.call<&Counter::get>(), 2);
}

void add_to_shared(mpxx::Address a, std::string key, int times) {
  mpxx::BaseManager m(a, key);
  m.connect();
  auto c = m.create<Counter>("Shared");  // a new id for the same object each time
  for (int i = 0; i < times; ++i) c.call<&Counter::add>(1);
}

TEST_F(ManagerTest, CallsToASharedRegisteredObjectNeverOverlap) {
  mpxx::BaseManager m;
  m.register_type<Counter>("Shared", shared_counter);
  m.start();
  std::vector<mpxx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(add_to_shared, m.address(), m.authkey(), 500);
  for (auto& p : ps) p.start();
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(m.create<Counter>("Shared").call<&Counter::get>(), 100 + 3 * 500);
}

// ---------------------------------------------------------- remote managers

TEST_F(ManagerTest, RemoteManagerSharedByUnrelatedProcesses) {
  auto addr = mpxx::Address::tcp("127.0.0.1", 0);
  mpxx::BaseManager server(addr, "s3cret");
  server.start();
  auto a = server.address();
  EXPECT_GT(a.port, 0);
  // Two processes that know only the address and the key.
  mpxx::Process consumer({.context = &mpxx::get_context("spawn")}, connect_and_sum, a, "s3cret", 50);
  mpxx::Process producer({.context = &mpxx::get_context("spawn")}, connect_and_put, a, "s3cret", 50);
  consumer.start();
  producer.start();
  producer.join();
  consumer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_EQ(consumer.exitcode(), 0);
  mpxx::BaseManager client(a, "s3cret");
  client.connect();
  EXPECT_EQ(client.named<StrIntDict>("results").at("sum"), 49 * 50 / 2);
  // A wrong key: no access.
  mpxx::BaseManager intruder(a, "wrong");
  EXPECT_THROW(intruder.connect(), mpxx::AuthenticationError);
  EXPECT_THROW((intruder.dict<int, int>()), mpxx::ProcessError);  // never connected
}

TEST_F(ManagerTest, ServeForeverInAnotherProcess) {
  // A free port: bind, read it, close, hand it to the server.
  int port;
  {
    mpxx::Listener probe(mpxx::Address::tcp("127.0.0.1", 0));
    port = probe.address().port;
  }
  mpxx::Process srv(serve_tcp, port, "k");
  srv.start();
  mpxx::BaseManager m(mpxx::Address::tcp("127.0.0.1", port), "k");
  for (int i = 0;; ++i) {
    try {
      m.connect();
      break;
    } catch (const mpxx::OSError&) {
      ASSERT_LT(i, 500) << "server never came up";
      std::this_thread::sleep_for(10ms);
    }
  }
  auto c = m.create<Counter>("Counter");
  EXPECT_EQ(c.call<&Counter::add>(3), 3);
  srv.terminate();
  srv.join();
}

// ------------------------------------------------------------- bad input

TEST_F(ManagerTest, MalformedRequestsGetErrorsAndTheServerGoesOn) {
  auto m = mpxx::Manager();
  auto d = m.dict<std::string, int>();
  d["ok"] = 1;
  auto raw = mpxx::Client(m.address(), m.authkey());
  auto expect_remote_error = [&](const std::string& req) {
    raw.send_bytes(req);
    std::string reply = raw.recv_bytes();
    ASSERT_FALSE(reply.empty());
    EXPECT_EQ(reply[0], 1) << "not an error reply";
  };
  expect_remote_error("");                                   // nothing at all
  expect_remote_error(std::string("\x02\x01", 2));           // truncated call
  expect_remote_error(std::string(9, '\x7f'));               // unknown request kind
  std::string unknown_method(1, '\x02');
  std::uint64_t id = d.id();
  unknown_method.append(reinterpret_cast<const char*>(&id), 8);
  unknown_method.append("\xff\x7f", 2);
  expect_remote_error(unknown_method);
  std::string unknown_op(1, '\x03');
  unknown_op.append(reinterpret_cast<const char*>(&id), 8);
  unknown_op.append(8, '\x55');
  expect_remote_error(unknown_op);
  std::string bad_id(1, '\x02');
  std::uint64_t nope = 987654;
  bad_id.append(reinterpret_cast<const char*>(&nope), 8);
  bad_id.append("\x01\x00", 2);
  expect_remote_error(bad_id);
  // A client that disconnects in the middle of a request.
  {
    auto half = mpxx::Client(m.address(), m.authkey());
    int fd = half.fileno();
    const char partial[] = {0, 0, 0, 100, 2, 1};  // says 100 bytes, sends 2
    ASSERT_EQ(::write(fd, partial, sizeof partial), static_cast<ssize_t>(sizeof partial));
  }
  EXPECT_EQ(d.at("ok"), 1);
  EXPECT_EQ(d.size(), 1u);
}

TEST_F(ManagerTest, StoringAValueWithFdsIsRefused) {
  auto m = mpxx::Manager();
  auto l = m.list<mpxx::Lock>();
  mpxx::Lock lock;
  EXPECT_THROW(l.append(lock), mpxx::ValueError);
  EXPECT_EQ(l.size(), 0u);
}

// ------------------------------------------------------------------ deaths

TEST_F(ManagerTest, ServerDeathFailsBlockedAndLaterCallsAtOnce) {
  auto m = mpxx::Manager();
  auto q = m.Queue<int>();
  auto d = m.dict<int, int>();
  std::atomic<bool> failed{false};
  std::thread blocked([&, q]() mutable {
    try {
      q.get();
    } catch (const mpxx::Error&) {
      failed = true;
    }
  });
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(m.pid().has_value());
  ::kill(*m.pid(), SIGKILL);
  auto t = seconds([&] { blocked.join(); });
  EXPECT_TRUE(failed);
  EXPECT_LT(t, 5.0);
  t = seconds([&] { EXPECT_THROW(d.size(), mpxx::Error); });
  EXPECT_LT(t, 5.0);
  m.join();
}

TEST_F(ManagerTest, ALockHolderThatDiesReleasesTheLock) {
  auto m = mpxx::Manager();
  auto lock = m.Lock();
  auto held = m.Event();
  mpxx::Process p(hold_lock_and_die, lock, held);
  p.start();
  ASSERT_TRUE(held.wait(10s));
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
  EXPECT_TRUE(lock.acquire(10s));
  lock.release();
}

// A manager client is in the middle of a call once a thread of it sleeps in
// recv on its connection, waiting for the reply.
TEST_F(ManagerTest, AClientThatDiesInAGetConsumesNothing) {
  auto m = mpxx::Manager();
  auto q = m.Queue<int>();
  mpxx::Process p([](mpxx::QueueProxy<int> q) { q.get(); }, q);
  p.start();
  EXPECT_TRUE(mpxx_test::wait_asleep_in(p.pid(), SYS_recvfrom)) << "the child never waited for its get's reply";
  p.kill();
  p.join();
  std::this_thread::sleep_for(200ms);  // its server thread notices
  q.put(7);
  EXPECT_EQ(q.get(5s), 7);
}

void take_unit(mpxx::AcquirerProxy sem) { sem.acquire(); }

TEST_F(ManagerTest, AClientThatDiesInAnAcquireTakesNoUnit) {
  mpxx::Manager m;
  auto sem = m.Semaphore(0);
  mpxx::Process p(take_unit, sem);
  p.start();
  EXPECT_TRUE(mpxx_test::wait_asleep_in(p.pid(), SYS_recvfrom)) << "the child never waited for its acquire's reply";
  p.kill();
  p.join();
  sem.release();  // at once: its server thread may be woken by this before it notices
  EXPECT_TRUE(sem.acquire(5s));
}

TEST_F(ManagerTest, BarrierAbortThenResetStartsAFreshRound) {
  mpxx::Manager m;
  auto b = m.Barrier(3);
  std::atomic<int> broken{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i)
    ts.emplace_back([b, &broken]() mutable {
      try {
        b.wait(20s);
      } catch (const mpxx::BrokenBarrierError&) {
        ++broken;
      }
    });
  while (b.n_waiting() < 2) std::this_thread::sleep_for(1ms);
  b.abort();
  b.reset();  // possibly before the waiters woke up: they must still fail
  for (auto& t : ts) t.join();
  EXPECT_EQ(broken.load(), 2);
  EXPECT_EQ(b.n_waiting(), 0);
  EXPECT_FALSE(b.broken());
  // A fresh round needs three parties again, and gives distinct indexes.
  std::vector<int> idx(3, -1);
  std::vector<std::thread> round;
  for (int i = 0; i < 3; ++i) round.emplace_back([b, &idx, i]() mutable { idx[i] = b.wait(20s); });
  for (auto& t : round) t.join();
  std::sort(idx.begin(), idx.end());
  EXPECT_EQ(idx, (std::vector<int>{0, 1, 2}));
}

TEST_F(ManagerTest, AProxyThatOutlivedItsServerDoesNotReachTheNextOne) {
  auto addr = mpxx::Address::unix_socket("@mpxx-test-reuse-" + std::to_string(::getpid()));
  StrIntDict old;
  {
    mpxx::Manager m1({.address = addr});
    old = m1.dict<std::string, int>();
  }
  mpxx::Manager m2({.address = addr});
  auto fresh = m2.dict<std::string, int>();
  fresh["kept"] = 1;
  EXPECT_THROW(old.set("x", 1), mpxx::Error);
  EXPECT_EQ(fresh.size(), 1u);
  old = StrIntDict();  // its last reference goes to the new server: nothing happens
  EXPECT_EQ(fresh.at("kept"), 1);
}

TEST_F(ManagerTest, AManagerOutlivingItsThreadsConnectionsShutsDownCleanly) {
  // Destroyed at thread exit after the thread's connection cache (which it
  // needs for shutdown), as a static Manager is destroyed at program exit.
  pid_t pid = 0;
  std::thread([&] {
    thread_local std::optional<mpxx::Manager> m;
    m.emplace();
    m->dict<int, int>().set(1, 1);
    pid = *m->pid();
  }).join();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(mpxx_test::wait_gone(pid, 5000ms));
}

void start_in_thread(std::optional<mpxx::Manager>& m) { m.emplace(); }

TEST_F(ManagerTest, AManagerStartedByAThreadOutlivesTheThread) {
  std::optional<mpxx::Manager> m;
  std::thread(start_in_thread, std::ref(m)).join();
  auto d = m->dict<int, int>();  // the server still runs
  d.set(1, 2);
  EXPECT_EQ(d.at(1), 2);
  pid_t pid = *m->pid();
  m.reset();
  EXPECT_TRUE(mpxx_test::wait_gone(pid, 5000ms));
}

TEST_F(ManagerTest, TheServerEndsWhenItsStarterIsKilled) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    mpxx::Manager m;
    auto d = m.dict<int, int>();
    pid_t server = *m.pid();
    [[maybe_unused]] auto n = ::write(p[1], &server, sizeof server);
    for (;;) ::pause();
  }
  ::close(p[1]);
  pid_t server = 0;
  ASSERT_EQ(::read(p[0], &server, sizeof server), static_cast<ssize_t>(sizeof server));
  ::close(p[0]);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(mpxx_test::wait_gone(server, 5000ms)) << "the manager outlived its starter";
}

TEST_F(ManagerTest, ShutdownAndScope) {
  mpxx::AcquirerProxy lock;
  StrIntDict d;
  pid_t pid;
  {
    auto m = mpxx::Manager();
    pid = *m.pid();
    d = m.dict<std::string, int>();
    lock = m.Lock();
    d["x"] = 1;
  }
  EXPECT_TRUE(mpxx_test::wait_gone(pid, 5000ms));
  EXPECT_THROW(d.size(), mpxx::Error);
  EXPECT_THROW(lock.acquire(), mpxx::Error);
  StrIntDict unbound;
  EXPECT_THROW(unbound.size(), mpxx::ValueError);

  auto m = mpxx::Manager();
  m.shutdown();
  m.shutdown();  // twice is fine
  EXPECT_THROW((m.dict<int, int>()), mpxx::ProcessError);
}

}  // namespace
