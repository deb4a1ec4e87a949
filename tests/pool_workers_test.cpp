// Pools of many workers on a machine with few cores: Pool(64) and Pool(256)
// start, map, close and join, or terminate, and leave nothing behind; a task
// queued behind a running one can be cancelled on every worker; a worker that
// fails its set-up makes the constructor raise. (The fds a
// pool needs, at the limit: tests/exhaustion_test.cpp.)
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <numeric>
#include <ranges>
#include <set>
#include <thread>

#include "process/start.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using mpxx_test::seconds;

namespace {

int square(int x) { return x * x; }
int my_pid(int) { return static_cast<int>(::getpid()); }
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// Waits (bounded) until `path` exists: a task that holds its worker.
int hold_until(std::string path) {
  for (int i = 0; i < 4000 && !exists(path); ++i) std::this_thread::sleep_for(5ms);
  return 0;
}
// Leaves a file: the task ran.
int touch(std::string path) {
  std::ofstream(path) << "ran";
  return 1;
}

#ifdef MPXX_TEST_SANITIZED
constexpr int kMostSpawned = 0;
#else
constexpr int kMostSpawned = 64;
#endif

class PoolWorkersTest : public mpxx_test::StartMethodTest {
 protected:
  mpxx::PoolOptions popts(int n) { return {.processes = n, .context = &mpxx::get_context(GetParam())}; }

  // Spawning re-executes the program for each worker: 256 of them (any, under
  // the sanitizers) take minutes here, the cost of exec, not of the pool.
  bool too_many_to_spawn(int n) { return GetParam() == mpxx::StartMethod::spawn && n > kMostSpawned; }

  void map_close_and_join(int n) {
    if (too_many_to_spawn(n)) GTEST_SKIP() << n << " spawned workers take minutes on this machine";
    mpxx::Pool pool(popts(n));
    const std::vector<pid_t> pids = pool.worker_pids();
    ASSERT_EQ(pids.size(), static_cast<std::size_t>(n));  // they exist when the constructor returns
    const std::set<pid_t> distinct(pids.begin(), pids.end());
    EXPECT_EQ(distinct.size(), pids.size());
    for (pid_t pid : pids) EXPECT_EQ(::kill(pid, 0), 0) << "worker " << pid;

    std::vector<int> in(static_cast<std::size_t>(20 * n));
    std::iota(in.begin(), in.end(), 0);
    std::vector<int> expected;
    for (int x : in) expected.push_back(x * x);
    EXPECT_EQ(pool.map(square, in, {.chunksize = 1}), expected);
    EXPECT_EQ(pool.map(square, in), expected);
    for (int pid : pool.map(my_pid, std::views::iota(0, 4 * n), {.chunksize = 1}))
      EXPECT_TRUE(distinct.count(pid)) << "a task ran in " << pid << ", not one of the pool's workers";

    pool.close();
    pool.join();
    for (pid_t pid : pids) EXPECT_TRUE(mpxx_test::wait_gone(pid, 0ms)) << "worker " << pid << " after join()";
  }

  void terminate_stops_them_all(int n) {
    if (too_many_to_spawn(n)) GTEST_SKIP() << n << " spawned workers take minutes on this machine";
    mpxx::Pool pool(popts(n));
    const std::vector<pid_t> pids = pool.worker_pids();
    ASSERT_EQ(pids.size(), static_cast<std::size_t>(n));
    auto busy = pool.map_async(sleep_ms, std::vector<int>(static_cast<std::size_t>(2 * n), 60000),
                               {.chunksize = 1});
    const double t = seconds([&] { pool.terminate(); });
    EXPECT_LT(t, 20);
    EXPECT_THROW(busy.get(5s), mpxx::CancelledError);
    for (pid_t pid : pids) EXPECT_TRUE(mpxx_test::wait_gone(pid, 0ms)) << "worker " << pid << " after terminate()";
  }
};

}  // namespace

TEST_P(PoolWorkersTest, SixtyFourWorkersMapCloseAndJoin) { map_close_and_join(64); }

TEST_P(PoolWorkersTest, SixtyFourWorkersTerminate) { terminate_stops_them_all(64); }

TEST_P(PoolWorkersTest, TwoHundredFiftySixWorkersMapCloseAndJoin) { map_close_and_join(256); }

TEST_P(PoolWorkersTest, TwoHundredFiftySixWorkersTerminate) { terminate_stops_them_all(256); }

// Each worker has its own cells for "skip this task" (a row of one block for
// the pool): a task queued in any worker's ring behind a running one is
// cancelled without running.
TEST_P(PoolWorkersTest, ATaskQueuedBehindARunningOneIsCancelledOnEveryWorker) {
  constexpr int n = 4;
  mpxx_test::TempDir dir;
  mpxx::Pool pool(popts(n));
  // Short tasks first: each worker then takes several tasks at a time, so
  // the ones below wait in the workers' rings, not in the parent.
  pool.map(square, std::views::iota(0, 2000), {.chunksize = 1});
  std::vector<std::string> victims;
  for (int i = 0; i < n; ++i) victims.push_back(dir.path("ran-" + std::to_string(i)));
  // One holder per worker, then one victim per worker behind it.
  auto held = pool.map_async(hold_until, std::vector<std::string>(n, dir.path("release")), {.chunksize = 1});
  auto doomed = pool.map_async(touch, victims, {.chunksize = 1});
  EXPECT_TRUE(doomed.cancel());
  EXPECT_THROW(doomed.get(5s), mpxx::CancelledError);
  std::ofstream(dir.path("release")) << "go";
  held.get(20s);
  // Every worker has gone past its victim once the pool has stopped.
  pool.close();
  pool.join();
  for (const std::string& v : victims) EXPECT_FALSE(exists(v)) << v << ": the cancelled task ran";
}

MPXX_FOR_EACH_START_METHOD(PoolWorkersTest);

// A worker that fails its set-up (here the third of four, with an injected
// errno) makes the constructor raise that error, after stopping the workers
// already started: nothing is left running (the fixture checks it too).
TEST(PoolStart, AWorkerThatFailsItsSetUpMakesTheConstructorRaiseAndLeavesNothing) {
  struct Fault {
    Fault() {
      mpxx::detail::fork_child_fault_spared = 2;
      mpxx::detail::fork_child_fault = EMFILE;
    }
    ~Fault() {
      mpxx::detail::fork_child_fault = 0;
      mpxx::detail::fork_child_fault_spared = 0;
    }
  };
  const auto before = mpxx_test::snapshot();
  {
    Fault fault;
    try {
      mpxx::Pool pool({.processes = 4, .context = &mpxx::get_context(mpxx::StartMethod::fork)});
      ADD_FAILURE() << "Pool(4) started although a worker failed its set-up";
    } catch (const mpxx::OSError& e) {
      EXPECT_EQ(e.code(), EMFILE);
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("mpxx: cannot start a Pool of 4 processes: cannot start ForkPoolWorker-", 0), 0u)
          << what;
      EXPECT_NE(what.find("setting up the child's runtime"), std::string::npos) << what;
    }
  }
  const auto after = mpxx_test::snapshot();
  EXPECT_EQ(after.children, before.children);
  EXPECT_EQ(after.fds, before.fds);
  mpxx::Pool pool(2);  // and the next pool starts
  EXPECT_EQ(pool.apply(square, 3), 9);
}
