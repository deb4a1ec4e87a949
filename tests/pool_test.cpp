// Pool: the API, worker deaths, timeouts, cancel, initializers,
// maxtasksperchild, Ctrl-C, progress bars.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <thread>

#include "test_support.hpp"

using namespace std::chrono_literals;
using mpxx_test::seconds;

namespace {

int square(int x) { return x * x; }
long identity_long(long x) { return x; }
int add(int a, int b) { return a + b; }
int fail_on_odd(int x) {
  if (x % 2) throw std::invalid_argument("odd input " + std::to_string(x));
  return x;
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int my_pid(int) { return static_cast<int>(::getpid()); }
void nothing(int) {}
std::string to_text(int x) { return std::to_string(x); }
struct Point {
  int x;
  double y;
};
double weigh(Point p) { return p.x * p.y; }

// Writes this worker's pid to `path`, then sleeps: the test knows the task
// has started once the file has content.
int announce_and_sleep(std::string path, int ms) {
  {
    std::ofstream(path + ".tmp") << ::getpid();
  }
  std::rename((path + ".tmp").c_str(), path.c_str());
  return sleep_ms(ms);
}
int die_with(int sig) {
  ::raise(sig);
  return 0;
}
int crash(int) {
  volatile int* p = nullptr;
  *p = 1;  // SIGSEGV
  return 0;
}

// Waits (bounded) until a file written by a task appears; its content.
std::string await_file(const std::string& path) {
  for (int i = 0; i < 2000; ++i) {
    std::ifstream f(path);
    std::string s;
    if (f >> s) return s;
    std::this_thread::sleep_for(5ms);
  }
  ADD_FAILURE() << "no task wrote " << path;
  return "";
}

// One task of a map, by `what`: 0 sleeps (until a per-task timeout kills
// it), 1 fails at once, 2 finishes after a moment and then leaves the file
// `path`, 3 waits for the file `path`.
int map_step(int what, std::string path) {
  switch (what) {
    case 0: return sleep_ms(60000);
    case 1: throw std::invalid_argument("step 1 failed");
    case 2:
      sleep_ms(200);
      std::ofstream(path) << "done";
      return 2;
    default: await_file(path); return 3;
  }
}
bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// 0..9, except that reading item 5 throws (a generator raising mid-way).
auto input_failing_at_5() {
  return std::views::iota(0, 10) | std::views::transform([](int i) {
           if (i == 5) throw std::invalid_argument("bad input 5");
           return i;
         });
}
int square_zero_last(int x) {
  if (x == 0) sleep_ms(300);  // its result comes after the others'
  return x * x;
}

int g_init_value = 0;
void set_init_value(int v) { g_init_value = v; }
int read_init_value(int) { return g_init_value; }
void failing_init() { throw std::runtime_error("no database today"); }
void crashing_init() { ::raise(SIGKILL); }

struct Scale {
  int factor = 1;
  int operator()(int x) const { return x * factor; }
  template <class A>
  void serialize(A& a) {
    a(factor);
  }
};

class PoolTest : public mpxx_test::StartMethodTest {
 protected:
  mpxx::PoolOptions popts(int n) { return {.processes = n, .context = &mpxx::get_context(GetParam())}; }
};

}  // namespace

TEST_P(PoolTest, ApplyAndApplyAsync) {
  mpxx::Pool pool(popts(2));
  EXPECT_EQ(pool.processes(), 2);
  EXPECT_EQ(pool.apply(square, 7), 49);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  auto r = pool.apply_async(add, 20, 22);
  EXPECT_EQ(r.get(5s), 42);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  EXPECT_EQ(r.get(), 42);  // get() may be called again
  // Python's form: the arguments as a tuple.
  EXPECT_EQ(pool.apply_async(add, std::tuple{1, 2}).get(), 3);
  // Function objects with state and partial.
  EXPECT_EQ(pool.apply(Scale{3}, 5), 15);
  EXPECT_EQ(pool.apply(mpxx::partial(add, 100), 5), 105);
  EXPECT_EQ(pool.apply([](std::string s) { return s + "!"; }, "hi"), "hi!");
  pool.close();
  pool.join();
}

TEST_P(PoolTest, MapStarmapImapMatchSequentialResults) {
  mpxx::Pool pool(popts(2));
  std::vector<int> expect(1000);
  for (int i = 0; i < 1000; ++i) expect[i] = i * i;
  EXPECT_EQ(pool.map(square, std::views::iota(0, 1000)), expect);
  EXPECT_EQ(pool.map(square, std::views::iota(0, 1000), {.chunksize = 1}), expect);
  EXPECT_EQ(pool.map(square, std::views::iota(0, 1000), {.chunksize = 333}), expect);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  std::vector<std::tuple<int, int>> tuples{{1, 1}, {2, 2}};
  EXPECT_EQ(pool.starmap_async(add, tuples).get(), (std::vector<int>{2, 4}));
  pool.map(nothing, std::views::iota(0, 10));  // void: returns nothing

  std::vector<int> got;
  for (int v : pool.imap(square, std::views::iota(0, 100), {.chunksize = 7})) got.push_back(v);
  EXPECT_EQ(got, std::vector<int>(expect.begin(), expect.begin() + 100));
  got.clear();
  for (int v : pool.imap_unordered(square, std::views::iota(0, 100))) got.push_back(v);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, std::vector<int>(expect.begin(), expect.begin() + 100));
  std::vector<std::string> words{"a", "bb", "ccc"};
  auto lens = pool.map([](const std::string& s) { return s.size(); }, words);
  EXPECT_EQ(lens, (std::vector<std::size_t>{1, 2, 3}));
  // Items of trivially copyable types are read in place by the worker; the
  // results may still be of any type.
  auto texts = pool.map(to_text, std::views::iota(95, 105), {.chunksize = 3});
  EXPECT_EQ(texts.front(), "95");
  EXPECT_EQ(texts.back(), "104");
  EXPECT_EQ(texts.size(), 10u);
  std::vector<Point> points{{1, 0.5}, {2, 1.5}, {-3, 2.0}};
  EXPECT_EQ(pool.map(weigh, points), (std::vector<double>{0.5, 3.0, -6.0}));
}

TEST_P(PoolTest, TaskErrorsArriveAsRemoteErrorAndThePoolGoesOn) {
  mpxx::Pool pool(popts(2));
  try {
    pool.apply(fail_on_odd, 3);
    FAIL() << "expected RemoteError";
  } catch (const mpxx::RemoteError& e) {
    EXPECT_NE(e.type_name().find("invalid_argument"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "odd input 3");
  }
  auto r = pool.apply_async(fail_on_odd, 5);
  r.wait();
  EXPECT_FALSE(r.successful());
  EXPECT_THROW(pool.map(fail_on_odd, std::views::iota(0, 10)), mpxx::RemoteError);
  // imap raises at the failing item and goes on after it.
  std::vector<int> seen;
  int errors = 0;
  auto range = pool.imap(fail_on_odd, std::views::iota(0, 6));
  auto it = range.begin();
  while (true) {
    try {
      if (it == range.end()) break;
      seen.push_back(*it);
      ++it;
    } catch (const mpxx::RemoteError&) {
      ++errors;
      ++it;
    }
  }
  EXPECT_EQ(seen, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(errors, 3);
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST_P(PoolTest, MapWaitsForAllItsTasksThenRaisesTheFirstErrorToArrive) {
  mpxx_test::TempDir dir;
  mpxx::Pool pool(popts(3));
  // Task 0 fails last (its timeout), task 1 first; task 2 succeeds late.
  std::vector<std::tuple<int, std::string>> steps{{0, ""}, {1, ""}, {2, dir.path("done")}};
  try {
    pool.starmap(map_step, steps, {.chunksize = 1, .timeout = 3s});
    FAIL() << "expected the map to fail";
  } catch (const mpxx::RemoteError& e) {
    EXPECT_EQ(e.message(), "step 1 failed");  // not task 0's TimeoutError
  }
  EXPECT_TRUE(exists(dir.path("done"))) << "map raised before all its tasks had finished";

  // map_async: the error_callback runs once, after every task.
  std::atomic<int> calls{0};
  std::atomic<bool> all_done{false};
  std::string message;
  auto r = pool.starmap_async(map_step, std::vector<std::tuple<int, std::string>>{{1, ""}, {2, dir.path("done2")}},
                              {.chunksize = 1},
                              {.error_callback = [&](const mpxx::Error& e) {
                                ++calls;
                                all_done = exists(dir.path("done2"));
                                message = e.what();
                              }});
  EXPECT_THROW(r.get(30s), mpxx::RemoteError);
  EXPECT_FALSE(r.successful());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(all_done.load());
  EXPECT_NE(message.find("step 1 failed"), std::string::npos) << message;
}

TEST_P(PoolTest, MapWithFailFastRaisesTheFirstErrorWhileOtherTasksRun) {
  mpxx_test::TempDir dir;
  mpxx::Pool pool(popts(2));
  // Task 1 waits for a file written only after the map has raised.
  std::vector<std::tuple<int, std::string>> steps{{1, ""}, {3, dir.path("go")}};
  EXPECT_THROW(pool.starmap(map_step, steps, {.chunksize = 1, .fail_fast = true}), mpxx::RemoteError);
  std::ofstream(dir.path("go")) << "go";
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST_P(PoolTest, ImapYieldsTheResultsReadBeforeAFailingInputThenRaisesItsError) {
  mpxx::Pool pool(popts(2));
  for (bool ordered : {true, false})
    for (std::size_t cs : {1, 2, 3})
      for (std::size_t ahead : {0, 1}) {
        SCOPED_TRACE(std::string(ordered ? "imap" : "imap_unordered") + " chunksize " + std::to_string(cs) +
                     " max_inflight " + std::to_string(ahead));
        mpxx::MapOptions o{.chunksize = cs, .max_inflight = ahead};
        auto range = ordered ? pool.imap(square_zero_last, input_failing_at_5(), o)
                             : pool.imap_unordered(square_zero_last, input_failing_at_5(), o);
        std::vector<int> got;
        std::string error;
        auto it = range.begin();
        try {
          for (; it != range.end(); ++it) got.push_back(*it);
        } catch (const std::invalid_argument& e) {
          error = e.what();
          ++it;
        }
        EXPECT_EQ(error, "bad input 5");
        EXPECT_TRUE(it == range.end());  // and then it ends, as Python's does
        if (!ordered) std::sort(got.begin(), got.end());
        EXPECT_EQ(got, (std::vector<int>{0, 1, 4, 9, 16}));
      }
  // map and map_async read the input before anything runs: its error comes
  // out of the call itself.
  EXPECT_THROW(pool.map(square, input_failing_at_5()), std::invalid_argument);
  EXPECT_THROW(pool.map_async(square, input_failing_at_5(), {.chunksize = 1}), std::invalid_argument);
  EXPECT_EQ(pool.apply(square, 5), 25);
}

TEST_P(PoolTest, AMapWhoseInputThrowsPartWayLeavesNoTaskRunning) {
  mpxx::Pool pool(popts(2));
  // Enough items that the first tasks are handed to the workers before the
  // input fails; the first two would run for 20 s.
  auto input = std::views::iota(0, 1000) | std::views::transform([](int i) {
                 if (i == 600) throw std::invalid_argument("bad input 600");
                 return i < 2 ? 20000 : 0;
               });
  EXPECT_THROW(pool.map(sleep_ms, input, {.chunksize = 1}), std::invalid_argument);
  pool.close();
  double t = seconds([&] { pool.join(); });
  EXPECT_LT(t, 10);
}

TEST_P(PoolTest, CallbacksRunInTheParentInCompletionOrderOneAtATime) {
  mpxx::Pool pool(popts(2));
  std::mutex mu;
  std::vector<int> results;
  std::atomic<int> active{0}, overlap{0};
  std::set<std::thread::id> callback_threads;
  std::vector<mpxx::AsyncResult<int>> rs;
  for (int i = 0; i < 20; ++i)
    rs.push_back(pool.apply_async(square, std::tuple{i},
                                  {.callback = [&](const int& v) {
                                    if (active.fetch_add(1) != 0) ++overlap;
                                    std::this_thread::sleep_for(1ms);
                                    std::lock_guard lk(mu);
                                    results.push_back(v);
                                    callback_threads.insert(std::this_thread::get_id());
                                    active.fetch_sub(1);
                                  }}));
  std::string error_seen;
  auto bad = pool.apply_async(fail_on_odd, std::tuple{1},
                              {.error_callback = [&](const mpxx::Error& e) { error_seen = e.what(); }});
  for (auto& r : rs) r.get();
  EXPECT_THROW(bad.get(), mpxx::RemoteError);
  // The callback has run by the time get() returns.
  std::lock_guard lk(mu);
  EXPECT_EQ(results.size(), 20u);
  EXPECT_EQ(overlap.load(), 0);
  // All on the pool's handler thread, never on the thread waiting in get()
  // (which takes results itself while it spins, but leaves callbacks).
  EXPECT_EQ(callback_threads.size(), 1u);
  EXPECT_EQ(callback_threads.count(std::this_thread::get_id()), 0u);
  EXPECT_NE(error_seen.find("odd input 1"), std::string::npos) << error_seen;
  int sum = 0;
  for (int v : results) sum += v;
  EXPECT_EQ(sum, 2470);

  // Waiting on the same pool inside a callback would deadlock: an error.
  std::string nested_error;
  auto other = pool.apply_async(sleep_ms, 2000);
  pool.apply_async(square, std::tuple{2}, {.callback = [&](const int&) {
                                             try {
                                               other.get();
                                             } catch (const mpxx::RuntimeError& e) {
                                               nested_error = e.what();
                                             }
                                           }})
      .get();
  EXPECT_NE(nested_error.find("callbacks"), std::string::npos) << nested_error;
  other.cancel();

  std::vector<int> mapped;
  pool.map_async(square, std::views::iota(0, 5), {}, {.callback = [&](const std::vector<int>& v) { mapped = v; }})
      .wait();
  EXPECT_EQ(mapped, (std::vector<int>{0, 1, 4, 9, 16}));
}

// Threads waiting in get() take the workers' messages themselves, one at
// a time: many of them at once, with maps in flight, lose and mix up nothing.
TEST_P(PoolTest, ManyThreadsWaitingAtOnceGetTheirOwnResults) {
  mpxx::Pool pool(popts(2));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 150; ++i) {
        const int x = t * 1000 + i;
        if (pool.apply(square, x) != x * x) ++wrong;
        if (i % 50 == 0) {
          auto v = pool.map(square, std::views::iota(x, x + 100));
          for (int k = 0; k < 100; ++k)
            if (v[static_cast<std::size_t>(k)] != (x + k) * (x + k)) ++wrong;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// A result large enough to be reserved in huge pages (8 MiB of longs)
// comes back whole and in order.
TEST_P(PoolTest, ALargeMapResultIsWholeAndInOrder) {
  mpxx::Pool pool(popts(2));
  auto v = pool.map(identity_long, std::views::iota(0L, 1L << 20));
  ASSERT_EQ(v.size(), std::size_t{1} << 20);
  long wrong = 0;
  for (long i = 0; i < (1L << 20); ++i) wrong += v[static_cast<std::size_t>(i)] != i;
  EXPECT_EQ(wrong, 0);
}

TEST_P(PoolTest, ImapIsLazyOverAnEndlessRange) {
  mpxx::Pool pool(popts(2));
  std::atomic<long> pulled{0};
  auto endless = std::views::iota(0) | std::views::transform([&pulled](int i) {
                   ++pulled;
                   return i;
                 });
  long n = 0, sum = 0;
  for (int v : pool.imap(square, endless, {.chunksize = 4, .max_inflight = 5})) {
    sum += v;
    if (++n == 50) break;
  }
  EXPECT_EQ(sum, 40425);  // 0^2 + ... + 49^2
  // At most max_inflight chunks of 4 beyond what was consumed.
  EXPECT_LE(pulled.load(), 50 + 5 * 4 + 4);
  EXPECT_GE(pulled.load(), 50);
}

TEST_P(PoolTest, AsyncResultTimeoutAndWait) {
  mpxx::Pool pool(popts(1));
  auto r = pool.apply_async(sleep_ms, 400);
  double t = seconds([&] { EXPECT_THROW(r.get(50ms), mpxx::TimeoutError); });
  EXPECT_GE(t, 0.05);
  EXPECT_LT(t, 5);
  EXPECT_FALSE(r.ready());
  EXPECT_THROW(r.successful(), mpxx::ValueError);
  EXPECT_TRUE(r.wait(10s));
  EXPECT_EQ(r.get(), 400);
}

TEST_P(PoolTest, AWorkerKilledMidTaskFailsExactlyThatTask) {
  mpxx::Pool pool(popts(2));
  std::vector<mpxx::AsyncResult<int>> ok;
  for (int i = 0; i < 10; ++i) ok.push_back(pool.apply_async(sleep_ms, 20));
  auto lost = pool.apply_async(die_with, SIGKILL);
  for (int i = 0; i < 10; ++i) ok.push_back(pool.apply_async(sleep_ms, 20));
  try {
    lost.get(30s);
    FAIL() << "expected WorkerLostError";
  } catch (const mpxx::WorkerLostError& e) {
    EXPECT_EQ(e.exitcode(), -SIGKILL);
    EXPECT_GT(e.pid(), 0);
    EXPECT_NE(std::string(e.what()).find("SIGKILL"), std::string::npos) << e.what();
  }
  for (auto& r : ok) EXPECT_EQ(r.get(30s), 20);
  EXPECT_EQ(pool.worker_pids().size(), 2u);  // replaced
  EXPECT_EQ(pool.apply(square, 9), 81);

  // A crash (segfault, abort) is the same event.
  auto seg = pool.apply_async(crash, 0);
  try {
    seg.get(30s);
    FAIL() << "expected WorkerLostError";
  } catch (const mpxx::WorkerLostError& e) {
#ifndef MPXX_TEST_SANITIZED
    EXPECT_EQ(e.exitcode(), -SIGSEGV);
#endif
    EXPECT_NE(e.exitcode(), 0);
  }
  EXPECT_THROW(pool.apply(die_with, SIGABRT), mpxx::WorkerLostError);
  // A map with one dying chunk fails with the error; the pool survives.
  EXPECT_EQ(pool.map(square, std::views::iota(0, 50), {.chunksize = 5}).size(), 50u);
  pool.close();
  pool.join();
}

TEST_P(PoolTest, AWorkerKilledFromOutsideIsReplaced) {
  mpxx_test::TempDir dir;
  mpxx::Pool pool(popts(2));
  auto before = pool.worker_pids();
  auto r = pool.apply_async(announce_and_sleep, dir.path("started"), 20000);
  pid_t victim = std::stoi(await_file(dir.path("started")));
  EXPECT_NE(std::find(before.begin(), before.end(), victim), before.end());
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  try {
    r.get(30s);
    FAIL() << "expected WorkerLostError";
  } catch (const mpxx::WorkerLostError& e) {
    EXPECT_EQ(e.pid(), victim);
    EXPECT_EQ(e.exitcode(), -SIGKILL);
  }
  EXPECT_EQ(pool.map(square, std::views::iota(0, 20)).size(), 20u);
  auto after = pool.worker_pids();
  EXPECT_EQ(after.size(), 2u);
  EXPECT_EQ(std::find(after.begin(), after.end(), victim), after.end());
}

TEST_P(PoolTest, PerTaskTimeoutKillsAndReplacesTheWorker) {
  mpxx::Pool pool(popts(2));
  auto slow = pool.apply_async(sleep_ms, std::tuple{20000}, {.timeout = 200ms});
  auto fast = pool.apply_async(sleep_ms, std::tuple{10}, {.timeout = 10s});
  double t = seconds([&] { EXPECT_THROW(slow.get(), mpxx::TimeoutError); });
  EXPECT_GE(t, 0.15);
  EXPECT_LT(t, 5);
  EXPECT_EQ(fast.get(), 10);
  EXPECT_EQ(pool.apply(square, 3), 9);
  EXPECT_THROW(pool.map(sleep_ms, std::vector<int>{10, 20000, 10}, {.chunksize = 1, .timeout = 200ms}),
               mpxx::TimeoutError);
  EXPECT_EQ(pool.worker_pids().size(), 2u);
}

TEST_P(PoolTest, CancelQueuedAndRunningTasks) {
  mpxx_test::TempDir dir;
  mpxx::Pool pool(popts(1));
  auto running = pool.apply_async(announce_and_sleep, dir.path("started"), 20000);
  auto queued = pool.apply_async(square, 5);
  await_file(dir.path("started"));
  EXPECT_TRUE(queued.cancel());
  EXPECT_THROW(queued.get(5s), mpxx::CancelledError);
  double t = seconds([&] {
    EXPECT_TRUE(running.cancel());
    EXPECT_THROW(running.get(5s), mpxx::CancelledError);
  });
  EXPECT_LT(t, 5);
  EXPECT_FALSE(running.cancel());  // already finished
  EXPECT_EQ(pool.apply(square, 6), 36);
  auto done = pool.apply_async(square, 2);
  EXPECT_EQ(done.get(), 4);
  EXPECT_FALSE(done.cancel());
}

TEST_P(PoolTest, InitializerRunsInEveryWorker) {
  mpxx::Pool pool(popts(2), set_init_value, 17);
  auto v = pool.map(read_init_value, std::views::iota(0, 20), {.chunksize = 1});
  EXPECT_EQ(v, std::vector<int>(20, 17));
}

TEST_P(PoolTest, AFailingInitializerFailsThePoolFast) {
  mpxx::Pool pool(popts(2), failing_init);
  double t = seconds([&] {
    try {
      pool.apply(square, 2);
      FAIL() << "expected the initializer's error";
    } catch (const mpxx::RemoteError& e) {
      EXPECT_NE(std::string(e.what()).find("no database today"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("initializer"), std::string::npos) << e.what();
    }
  });
  EXPECT_LT(t, 10);
  EXPECT_THROW(pool.apply(square, 2), mpxx::RemoteError);  // no respawning loop: it stays failed
  EXPECT_TRUE(pool.worker_pids().empty() || pool.worker_pids().size() <= 2u);
}

TEST_P(PoolTest, AnInitializerThatKillsItsWorkerFailsThePool) {
  mpxx::Pool pool(popts(1), crashing_init);
  EXPECT_THROW(pool.apply(square, 2), mpxx::WorkerLostError);
  EXPECT_THROW(pool.apply(square, 2), mpxx::WorkerLostError);
}

TEST_P(PoolTest, MaxTasksPerChildReplacesWorkersWithoutLosingTasks) {
  mpxx::Pool pool({.processes = 2, .maxtasksperchild = 3, .context = &mpxx::get_context(GetParam())});
  auto pids = pool.map(my_pid, std::views::iota(0, 30), {.chunksize = 1});
  ASSERT_EQ(pids.size(), 30u);
  std::map<int, int> per_pid;
  for (int p : pids) ++per_pid[p];
  for (auto [pid, n] : per_pid) EXPECT_LE(n, 3) << "pid " << pid;
  EXPECT_GE(per_pid.size(), 10u);
  pool.close();
  pool.join();
}

TEST_P(PoolTest, CloseJoinTerminateFollowPython) {
  mpxx::Pool pool(popts(2));
  EXPECT_THROW(pool.join(), mpxx::ValueError);  // join before close
  auto r = pool.apply_async(sleep_ms, 100);
  pool.close();
  EXPECT_THROW(pool.apply_async(square, 1), mpxx::ValueError);
  pool.join();  // waits for the queued work
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), 100);

  mpxx::Pool p2(popts(2));
  auto long_task = p2.apply_async(sleep_ms, 20000);
  double t = seconds([&] { p2.terminate(); });
  EXPECT_LT(t, 5);
  EXPECT_THROW(long_task.get(5s), mpxx::CancelledError);
  p2.join();
}

TEST_P(PoolTest, DestructorTerminatesRunningWork) {
  mpxx::AsyncResult<int> r;
  std::vector<pid_t> pids;
  double t = seconds([&] {
    mpxx::Pool pool(popts(2));
    r = pool.apply_async(sleep_ms, 20000);
    pids = pool.worker_pids();
  });
  EXPECT_LT(t, 5);
  for (pid_t p : pids) EXPECT_TRUE(mpxx_test::wait_gone(p, 5000ms));
  EXPECT_THROW(r.get(1s), mpxx::CancelledError);
}

MPXX_FOR_EACH_START_METHOD(PoolTest);

TEST(Pool, BadArgumentsAreClearErrors) {
  EXPECT_THROW(mpxx::Pool(-1), mpxx::ValueError);
  EXPECT_THROW(mpxx::Pool({.processes = 1, .context = &mpxx::get_context("spawn")},
                          [x = 1] { g_init_value = x; }),
               mpxx::ValueError);
}

TEST(Pool, ZeroProcessesOrZeroMaxtasksperchildIsAValueError) {
  // Python's None is an unset option; 0 is an error, as in Python.
  EXPECT_THROW(mpxx::Pool(0), mpxx::ValueError);
  EXPECT_THROW(mpxx::Pool({.processes = 0}), mpxx::ValueError);
  try {
    mpxx::Pool({.processes = 1, .maxtasksperchild = 0});
    FAIL() << "maxtasksperchild = 0 was accepted";
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("maxtasksperchild"), std::string::npos) << e.what();
  }
}

TEST(Pool, ImapOnAPoolThatIsNotRunningIsAValueErrorAtTheCall) {
  mpxx::Pool closed(1);
  closed.close();
  EXPECT_THROW((void)closed.imap(square, std::vector<int>{1, 2}), mpxx::ValueError);
  EXPECT_THROW((void)closed.imap_unordered(square, std::vector<int>{1, 2}), mpxx::ValueError);
  closed.join();
  mpxx::Pool terminated(1);
  terminated.terminate();
  EXPECT_THROW((void)terminated.imap(square, std::vector<int>{1}), mpxx::ValueError);
}

TEST(Pool, AnEmptyMapOnAPoolThatIsNotRunningIsAValueError) {
  mpxx::Pool pool(1);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());  // running: an empty map is []
  pool.close();
  EXPECT_THROW((void)pool.map(square, std::vector<int>{}), mpxx::ValueError);
  EXPECT_THROW((void)pool.map_async(square, std::vector<int>{}), mpxx::ValueError);
  EXPECT_THROW((void)pool.starmap(add, std::vector<std::pair<int, int>>{}), mpxx::ValueError);
  pool.join();
}

TEST(Pool, AsyncResultWithANegativeTimeoutDoesNotWait) {
  mpxx::Pool pool(1);
  auto r = pool.apply_async(sleep_ms, 20000);
  double t = seconds([&] {
    try {
      (void)r.get(-1s);
      ADD_FAILURE() << "get(-1s) returned";
    } catch (const mpxx::TimeoutError& e) {
      EXPECT_NE(std::string(e.what()).find("within 0.000000 s"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(r.wait(-1s));
    EXPECT_FALSE(r.wait(std::chrono::duration<double>(-0.5)));
  });
  EXPECT_LT(t, 1.0);
  pool.terminate();
}

// A per-task timeout of nanoseconds::max() is no timeout: the task runs
// to its end, and the handler thread sleeps meanwhile instead of spinning
// on a deadline that wrapped around.
TEST(Pool, ATaskTimeoutOfNanosecondsMaxNeitherFiresNorSpins) {
  mpxx::Pool pool(1);
  ASSERT_EQ(pool.apply(sleep_ms, 0), 0);  // the worker is up
  auto cpu = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
  };
  auto r = pool.apply_async(sleep_ms, std::tuple{600}, {.timeout = std::chrono::nanoseconds::max()});
  const double before = cpu();
  EXPECT_FALSE(r.wait(400ms));
  const double used = cpu() - before;
  EXPECT_EQ(r.get(10s), 600);
  EXPECT_LT(used, 0.2) << "the parent used " << used << " s of CPU while a task slept for 0.4 s";
}

TEST(Pool, ACapturingInitializerWorksUnderFork) {
  int value = 23;
  mpxx::Pool pool({.processes = 1, .context = &mpxx::get_context("fork")}, [value] { g_init_value = value; });
  EXPECT_EQ(pool.apply(read_init_value, 0), 23);
}

TEST(Pool, ProgressBarIsDrawnWhenForcedAndSilentOtherwise) {
  mpxx::Pool pool(2);
  std::string text;
  {
    mpxx_test::CaptureFd err(2);
    pool.map(square, std::views::iota(0, 100), {.chunksize = 10, .progress = mpxx::Progress::always()});
    text = err.text();
  }
  EXPECT_NE(text.find("100/100"), std::string::npos) << text;
  EXPECT_NE(text.find("100%"), std::string::npos) << text;
  EXPECT_NE(text.find("it/s"), std::string::npos) << text;
  {
    mpxx_test::CaptureFd err(2);  // not a terminal: .progress = true stays silent
    pool.map(square, std::views::iota(0, 100), {.progress = true});
    EXPECT_EQ(err.text(), "");
  }
  {
    mpxx_test::CaptureFd err(2);
    long n = 0;
    for (int v : pool.imap(square, std::views::iota(0, 30), {.progress = mpxx::Progress::always()})) n += v >= 0;
    EXPECT_EQ(n, 30);
    EXPECT_NE(err.text().find("30/30"), std::string::npos) << err.text();
  }
  using mpxx::detail::ProgressBar;
  EXPECT_EQ(ProgressBar::render("map", 5, 10, 1.0, 60).substr(0, 9), "map:  50%");
  EXPECT_NE(ProgressBar::render("map", 5, 10, 1.0, 60).find("5/10 [00:01<00:01, 5.00it/s]"), std::string::npos);
  EXPECT_EQ(ProgressBar::render("imap", 7, -1, 2.0, 60), "imap: 7it [00:02, 3.50it/s]");
}

// The core calls a task's completion only if it is set, and moves it
// around before: a moved-from completion must be empty, or it would run
// twice (or on nothing).
TEST(PoolCompletion, SharesAContextMovesAndEmptiesWhenMovedFrom) {
  using mpxx::detail::Completion;
  using mpxx::detail::TaskOutcome;
  struct Ctx {
    long sum = 0;
    int calls = 0;
  };
  auto ctx = std::make_shared<Ctx>();
  Completion a(ctx, 5, [](Ctx& c, long k, const TaskOutcome& o) {
    c.sum += k + static_cast<long>(o.payload.size());
    ++c.calls;
  });
  Completion b(ctx, 7, [](Ctx& c, long k, const TaskOutcome&) {
    c.sum += k;
    ++c.calls;
  });
  EXPECT_EQ(ctx.use_count(), 3);
  const std::byte bytes[3]{};
  Completion moved = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): that is the point
  ASSERT_TRUE(moved);
  moved(TaskOutcome{bytes, nullptr});
  b(TaskOutcome{{}, nullptr});
  EXPECT_EQ(ctx->sum, 5 + 3 + 7);
  EXPECT_EQ(ctx->calls, 2);
  b = std::move(moved);
  EXPECT_FALSE(moved);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(ctx.use_count(), 2);  // b's old context reference was released
  b(TaskOutcome{bytes, nullptr});  // now a's function, number and context
  EXPECT_EQ(ctx->sum, 5 + 3 + 7 + 5 + 3);
  EXPECT_EQ(ctx->calls, 3);
  EXPECT_THROW(moved(TaskOutcome{}), std::bad_function_call);  // NOLINT(bugprone-use-after-move)
  static_assert(!std::is_copy_constructible_v<Completion>);
  static_assert(std::is_nothrow_move_constructible_v<Completion>);
  static_assert(!std::is_constructible_v<Completion, Completion&>);

  // Any callable, kept in a context of its own; and the empty one.
  std::string seen;
  Completion f = [&seen](const TaskOutcome& o) { seen = o.error ? "error" : "ok"; };
  f(TaskOutcome{{}, std::make_exception_ptr(std::runtime_error("x"))});
  EXPECT_EQ(seen, "error");
  EXPECT_FALSE(Completion{});
  EXPECT_FALSE(Completion(nullptr));
}

namespace {
// The body of the Ctrl-C tests: a program that maps slow tasks in its own
// process group; reports its workers' pids on `out`.
// noexcept: an exception leaving it is uncaught, as if it escaped main().
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wterminate"
[[noreturn]] void interrupted_program(int out, bool catch_it) noexcept {
  ::setpgid(0, 0);
  mpxx::Pool pool(2);
  auto pids = pool.worker_pids();
  while (pids.size() < 2) pids = pool.worker_pids();
  std::string line = std::to_string(pids[0]) + " " + std::to_string(pids[1]) + "\n";
  try {
    auto r = pool.map_async(sleep_ms, std::vector<int>(200, 100), {.chunksize = 1});
    [[maybe_unused]] auto n = ::write(out, line.data(), line.size());
    r.get();
  } catch (const mpxx::KeyboardInterrupt&) {
    if (catch_it) {
      bool none = mpxx::active_children().empty();
      std::fprintf(stderr, "caught KeyboardInterrupt\n");
      ::_exit(none ? 42 : 43);
    }
    throw;
  }
  ::_exit(1);
}
#pragma GCC diagnostic pop

struct InterruptRun {
  int status;
  double seconds_after_sigint;
  std::string err;
  std::vector<pid_t> workers;
};

InterruptRun run_interrupted(bool catch_it) {
  mpxx_test::TempDir dir;
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    int fd = ::open(dir.path("stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    interrupted_program(p[1], catch_it);
  }
  ::close(p[1]);
  InterruptRun run{};
  std::string line;
  char c;
  while (::read(p[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(p[0]);
  pid_t a = 0, b = 0;
  std::sscanf(line.c_str(), "%d %d", &a, &b);
  run.workers = {a, b};
  std::this_thread::sleep_for(100ms);  // let the map get going (not synchronization: either way works)
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(::kill(-child, SIGINT), 0);  // the whole process group, as a terminal does
  for (int i = 0; i < 1000; ++i) {
    if (::waitpid(child, &run.status, WNOHANG) == child) break;
    std::this_thread::sleep_for(10ms);
    if (i == 999) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &run.status, 0);
      ADD_FAILURE() << "the interrupted program did not end";
    }
  }
  run.seconds_after_sigint = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.err = mpxx_test::read_file(dir.path("stderr"));
  return run;
}
}  // namespace

TEST(PoolInterrupt, CtrlCDuringMapRaisesKeyboardInterruptAndStopsTheWorkers) {
  InterruptRun run = run_interrupted(true);
  ASSERT_TRUE(WIFEXITED(run.status)) << run.status << " " << run.err;
  EXPECT_EQ(WEXITSTATUS(run.status), 42) << run.err;  // caught, no worker left
  EXPECT_LT(run.seconds_after_sigint, 3.0);
  EXPECT_EQ(run.err, "caught KeyboardInterrupt\n");
  for (pid_t w : run.workers) EXPECT_TRUE(mpxx_test::wait_gone(w, 5000ms)) << w;
}

TEST(PoolInterrupt, AnUncaughtKeyboardInterruptEndsTheProgramLikeCtrlC) {
  InterruptRun run = run_interrupted(false);
  ASSERT_TRUE(WIFSIGNALED(run.status)) << run.status << " " << run.err;
  EXPECT_EQ(WTERMSIG(run.status), SIGINT);
  EXPECT_LT(run.seconds_after_sigint, 3.0);
  EXPECT_EQ(run.err, "KeyboardInterrupt\n");  // one report, not one per worker
  for (pid_t w : run.workers) EXPECT_TRUE(mpxx_test::wait_gone(w, 5000ms)) << w;
}
