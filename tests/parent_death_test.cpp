// The parent itself dies: a process that runs a Pool, a Manager, a tree of
// Processes or owns named shared memory is SIGKILLed, and everything it
// started (workers, servers, the forkserver, the tracker, grandchildren)
// must be gone within 1 s, and the named blocks unlinked.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"
#include "sys/fd.hpp"

using namespace std::chrono_literals;

namespace parent_death_targets {

void wait_forever() {
  for (;;) ::pause();
}

// A child that starts a grandchild with the same start method, reports the
// grandchild's pid and waits.
void start_grandchild(mpxx::Connection out, mpxx::StartMethod method) {
  mpxx::Process g({.context = &mpxx::get_context(method)}, wait_forever);
  g.start();
  out.send(static_cast<int>(g.pid()));
  wait_forever();
}

int square(int x) { return x * x; }

}  // namespace parent_death_targets

namespace {
using namespace parent_death_targets;

// What the doomed parent started: pids it knows of and /dev/shm names.
struct Started {
  std::vector<int> pids;
  std::vector<std::string> shm;
};

// Every descendant of `pid`, from /proc/<pid>/task/*/children.
std::set<pid_t> descendants(pid_t pid) {
  std::set<pid_t> out;
  std::vector<pid_t> todo{pid};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    const std::string task_dir = "/proc/" + std::to_string(p) + "/task";
    std::vector<std::string> tids;
    if (DIR* d = ::opendir(task_dir.c_str())) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') tids.emplace_back(e->d_name);
      ::closedir(d);
    }
    for (const std::string& tid : tids) {
      std::ifstream f(task_dir + "/" + tid + "/children");
      for (pid_t c; f >> c;)
        if (out.insert(c).second) todo.push_back(c);
    }
  }
  return out;
}

// Makes this process the reaper of its orphaned descendants for the
// lifetime of the object, so that the doomed parent's children, reparented
// here when it dies, can be reaped (and the leak check sees any left).
class Subreaper {
 public:
  Subreaper() {
    int was = 0;
    ::prctl(PR_GET_CHILD_SUBREAPER, &was);
    was_ = was;
    ok_ = ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  }
  ~Subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, was_); }
  bool ok() const { return ok_; }

 private:
  int was_ = 0;
  bool ok_ = false;
};

// Runs `setup` in a forked "parent" process, which reports what it started
// and waits; SIGKILLs that parent and checks that every process it had
// started, directly or not, exits within 1 s and that every reported name
// is unlinked by then. Returns the seconds until the last one was gone.
double kill_parent_and_check(const std::function<Started()>& setup, std::size_t min_descendants) {
  Subreaper reaper;
  EXPECT_TRUE(reaper.ok());
  auto ends = mpxx::Pipe(false);
  mpxx::Connection& rx = ends.first;
  mpxx::Connection& tx = ends.second;
  mpxx::Process parent({.name = "DoomedParent", .context = &mpxx::get_context("fork")}, [&] {
    rx.close();
    Started s = setup();
    tx.send(s.pids);
    tx.send(s.shm);
    wait_forever();
  });
  parent.start();
  tx.close();
  const auto reported = rx.recv<std::vector<int>>();
  const auto names = rx.recv<std::vector<std::string>>();
  const std::set<pid_t> tree = descendants(parent.pid());
  for (int p : reported) {
    EXPECT_TRUE(tree.count(p)) << "reported pid " << p << " is not a descendant";
    const char state = mpxx_test::proc_state(p);
    EXPECT_TRUE(state != 0 && state != 'Z') << "reported pid " << p << " is not running";
  }
  EXPECT_GE(tree.size(), min_descendants);
  std::vector<pollfd> gone;
  std::vector<pid_t> pids;
  for (pid_t p : tree) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, p, 0));
    if (fd < 0) continue;  // it exited already
    gone.push_back({fd, POLLIN, 0});
    pids.push_back(p);
  }

  const auto killed = std::chrono::steady_clock::now();
  parent.kill();
  parent.join();
  const auto deadline = killed + 1s;
  double last = 0;
  for (std::size_t i = 0; i < gone.size(); ++i) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const bool exited = ::poll(&gone[i], 1, static_cast<int>(std::max<long>(left.count(), 0))) == 1;
    EXPECT_TRUE(exited) << "process " << pids[i] << " outlived its parent by 1 s";
    if (exited)
      last = std::max(last, std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count());
  }
  for (const std::string& name : names)
    EXPECT_NE(::access(("/dev/shm/" + name).c_str(), F_OK), 0) << name << " was left in /dev/shm";

  // Clean up whatever is left, whether the checks passed or not.
  for (std::size_t i = 0; i < gone.size(); ++i) {
    if (!(gone[i].revents & POLLIN)) ::syscall(SYS_pidfd_send_signal, gone[i].fd, SIGKILL, nullptr, 0);
    siginfo_t si{};
    // Our child now (reparented here) or already reaped by its own parent (ECHILD).
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(gone[i].fd), &si, WEXITED) < 0 &&
           errno == EINTR) {
    }
    ::close(gone[i].fd);
  }
  for (const std::string& name : names) ::shm_unlink(("/" + name).c_str());
  return last;
}

class ParentDeathTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(ParentDeathTest);

TEST_P(ParentDeathTest, PoolWorkersExitWhenTheirParentIsKilled) {
  const mpxx::StartMethod method = GetParam();
  const double t = kill_parent_and_check(
      [method] {
        static std::optional<mpxx::Pool> pool;  // lives until the process is killed
        pool.emplace(mpxx::PoolOptions{.processes = 2, .context = &mpxx::get_context(method)});
        EXPECT_EQ(pool->apply(square, 3), 9);  // the workers are up
        Started s;
        for (pid_t p : pool->worker_pids()) s.pids.push_back(p);
        return s;
      },
      2);
  RecordProperty("seconds_until_gone", std::to_string(t));
}

TEST_P(ParentDeathTest, ManagerServerExitsWhenItsParentIsKilled) {
  const mpxx::StartMethod method = GetParam();
  const double t = kill_parent_and_check(
      [method] {
        static std::optional<mpxx::SyncManager> m;
        m.emplace(mpxx::ManagerOptions{.context = &mpxx::get_context(method)});
        m->start();
        auto d = m->dict<std::string, int>();
        d["up"] = 1;
        Started s;
        s.pids.push_back(*m->pid());
        return s;
      },
      1);
  RecordProperty("seconds_until_gone", std::to_string(t));
}

TEST_P(ParentDeathTest, ChildrenAndGrandchildrenExitWhenTheirParentIsKilled) {
  const mpxx::StartMethod method = GetParam();
  const double t = kill_parent_and_check(
      [method] {
        static std::vector<mpxx::Process> kids;
        Started s;
        for (int i = 0; i < 2; ++i) {
          auto [r, w] = mpxx::Pipe(false);
          kids.emplace_back(mpxx::ProcessOptions{.context = &mpxx::get_context(method)}, start_grandchild, w,
                            method);
          kids.back().start();
          w.close();
          s.pids.push_back(kids.back().pid());
          s.pids.push_back(r.recv<int>());
        }
        return s;
      },
      4);
  RecordProperty("seconds_until_gone", std::to_string(t));
}

TEST(ParentDeath, TrackerUnlinksTheNamedBlocksOfAKilledParent) {
  mpxx_test::CaptureFd err(2);
  const std::string name = "mpxx_test_parent_death_" + std::to_string(::getpid());
  const double t = kill_parent_and_check(
      [name] {
        static std::optional<mpxx::SharedMemory> shm;
        shm.emplace(mpxx::SharedMemory::create(4096, name));
        Started s;
        s.shm.push_back(name);
        return s;
      },
      1);
  RecordProperty("seconds_until_gone", std::to_string(t));
  EXPECT_NE(err.text().find(name), std::string::npos) << err.text();
}

// A Ctrl-C at the terminal reaches the whole process group, helpers that
// have just been started too. Here every process the doomed parent starts
// gets a SIGINT as its first act (spawned ones before main): the workers,
// the manager's server, the forkserver and the tracker must all survive it,
// do their work, and still end with the parent (the tracker unlinking the
// block of a creator that died of the same Ctrl-C).
TEST_P(ParentDeathTest, HelpersSurviveASigintAtTheirFirstInstruction) {
  const mpxx::StartMethod method = GetParam();
  const std::string name = "mpxx_test_sigint_at_start_" + std::to_string(::getpid());
  mpxx_test::CaptureFd err(2);
  kill_parent_and_check(
      [method, name] {
        ::setenv("MPXX_TEST_SIGNAL_AT_START", std::to_string(SIGINT).c_str(), 1);
        mpxx::sys::signal_forked_children = SIGINT;
        Started s;
        static std::optional<mpxx::Pool> pool;
        pool.emplace(mpxx::PoolOptions{.processes = 2, .context = &mpxx::get_context(method)});
        EXPECT_EQ(pool->apply_async(square, 3).get(10s), 9);
        for (pid_t p : pool->worker_pids()) s.pids.push_back(p);
        static std::optional<mpxx::SyncManager> m;
        m.emplace(mpxx::ManagerOptions{.context = &mpxx::get_context(method)});
        m->start();
        auto d = m->dict<std::string, int>();
        d["up"] = 1;
        EXPECT_EQ(d.at("up"), 1);
        s.pids.push_back(*m->pid());
        static std::optional<mpxx::SharedMemory> shm;
        shm.emplace(mpxx::SharedMemory::create(4096, name));
        s.shm.push_back(name);
        return s;
      },
      4);
  EXPECT_NE(err.text().find(name), std::string::npos) << err.text();
}

}  // namespace
