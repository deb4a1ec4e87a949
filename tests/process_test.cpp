// Process, current_process, parent_process, active_children, cpu_count,
// under all three start methods.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "test_support.hpp"
#include "mpxx/mpxx.hpp"
#include "process/start.hpp"
#include "process/runtime.hpp"

using namespace std::chrono_literals;
using mpxx_test::read_file;
using mpxx_test::TempDir;
using mpxx_test::write_file;

// ----------------------------------------------------------- child targets
// External linkage, so that backtraces can name them.
namespace targets {
// Plain functions: they cross to spawn and forkserver children.

void do_nothing() {}
void exit_with(int code) { std::exit(code); }
void system_exit(int code) { throw mpxx::SystemExit(code); }
void throw_runtime(std::string msg) { throw std::runtime_error(msg); }
void segfault() { std::raise(SIGSEGV); }
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
void block_forever() {
  for (;;) ::pause();
}
void write_text(std::string path, std::string text) { write_file(path, text); }

void report_identity(std::string path) {
  auto me = mpxx::current_process();
  auto parent = mpxx::parent_process();
  std::ofstream f(path);
  f << me.name() << "\n"
    << me.pid() << "\n"
    << (parent ? parent->pid() : -1) << "\n"
    << (parent ? parent->name() : "none") << "\n"
    << (me.authkey().size()) << "\n"
    << (parent && parent->is_alive() ? "parent-alive" : "parent-dead") << "\n"
    << me.daemon() << "\n";
}

void report_authkey(std::string path) { write_file(path, mpxx::current_process().authkey()); }

// Starts a grandchild that blocks forever, reports its pid, then blocks.
void start_grandchild(std::string path, int method) {
  mpxx::Process g({.context = &mpxx::get_context(static_cast<mpxx::StartMethod>(method))},
                  block_forever);
  g.start();
  write_file(path + ".tmp", std::to_string(g.pid()));
  std::rename((path + ".tmp").c_str(), path.c_str());
  block_forever();
}

// What the child says of start methods: its default (with and without
// allow_none), its own, and the one its own Process() would use.
void report_start_method(std::string path) {
  write_file(path, mpxx::get_start_method() + " " + mpxx::get_start_method(true).value_or("none") + " " +
                       std::string(mpxx::to_string(mpxx::current_process().start_method())) + " " +
                       std::string(mpxx::to_string(mpxx::Process(do_nothing).start_method())));
}

// A daemonic child tries to create a child: Python's rule says no.
void try_child_from_daemon() {
  mpxx::Process p(do_nothing);
  try {
    p.start();
  } catch (const mpxx::ProcessError&) {
    std::exit(42);
  }
  p.join();
  std::exit(0);
}

// Starts a daemon that blocks and a normal child that writes a file after a
// pause, then returns: the exit path must terminate the one and join the
// other.
void leave_children(std::string dir) {
  mpxx::Process d({.daemon = true}, block_forever);
  d.start();
  write_file(dir + "/daemon.pid", std::to_string(d.pid()));
  mpxx::Process n(mpxx::partial(
      [](std::string path) {
        std::this_thread::sleep_for(200ms);
        write_file(path, "done");
      },
      dir + "/normal.done"));
  n.start();
}

}  // namespace targets

namespace {
using namespace targets;

std::string read_line(const std::string& text, int n) {
  std::istringstream in(text);
  std::string line;
  for (int i = 0; i <= n; ++i) std::getline(in, line);
  return line;
}

// Waits for a file to appear (written by a child), up to 10 s.
bool wait_for_file(const std::string& path) {
  for (int i = 0; i < 1000; ++i) {
    if (std::ifstream(path).good()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class ProcessTest : public mpxx_test::StartMethodTest {};
MPXX_FOR_EACH_START_METHOD(ProcessTest);

// ------------------------------------------------------------- exit codes

TEST_P(ProcessTest, ReturningTargetExitsZero) {
  mpxx::Process p(opts(), do_nothing);
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  p.join();
  ASSERT_TRUE(p.exitcode().has_value());
  EXPECT_EQ(*p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST_P(ProcessTest, ExitCodeOfExit) {
  mpxx::Process p(opts(), exit_with, 7);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(ProcessTest, SystemExitSetsExitCode) {
  mpxx::Process p(opts(), system_exit, 3);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
}

TEST_P(ProcessTest, ThrowingTargetExitsOneAndPrintsTheException) {
  mpxx_test::CaptureFd err(2);
  mpxx::Process p(opts("Thrower"), throw_runtime, "it broke");
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::string text = err.text();
  EXPECT_NE(text.find("Process Thrower:"), std::string::npos) << text;
  EXPECT_NE(text.find("Traceback"), std::string::npos) << text;
  EXPECT_NE(text.find("std::runtime_error: it broke"), std::string::npos) << text;
  // The backtrace names the function that threw.
#if !defined(MPXX_TEST_SANITIZED)
  EXPECT_NE(text.find("throw_runtime"), std::string::npos) << text;
#endif
}

TEST_P(ProcessTest, SegfaultIsMinusEleven) {
  mpxx::Process p(opts(), segfault);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGSEGV);
}

TEST_P(ProcessTest, TerminateAndKill) {
  mpxx::Process t(opts(), block_forever);
  mpxx::Process k(opts(), block_forever);
  t.start();
  k.start();
  EXPECT_TRUE(t.is_alive());
  EXPECT_FALSE(t.exitcode().has_value());
  t.terminate();
  k.kill();
  t.join();
  k.join();
  EXPECT_EQ(t.exitcode(), -SIGTERM);
  EXPECT_EQ(k.exitcode(), -SIGKILL);
  // Signalling a reaped process is a no-op, never a stray signal.
  EXPECT_NO_THROW(t.terminate());
  EXPECT_NO_THROW(k.kill());
}

TEST_P(ProcessTest, JoinTimeout) {
  mpxx::Process p(opts(), block_forever);
  p.start();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(200ms));
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  EXPECT_TRUE(p.is_alive());
  p.kill();
  EXPECT_TRUE(p.join(10s));
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_P(ProcessTest, JoinTimeoutSurvivesSignals) {
  // SIGUSR1 with a handler interrupts poll(): the wait must resume with the
  // remaining time, neither returning early nor starting over.
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  struct sigaction old {};
  ::sigaction(SIGUSR1, &sa, &old);
  mpxx::Process p(opts(), block_forever);
  p.start();
  pthread_t main_thread = ::pthread_self();
  std::thread pester([main_thread] {
    for (int i = 0; i < 10; ++i) {
      std::this_thread::sleep_for(30ms);
      ::pthread_kill(main_thread, SIGUSR1);
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  bool ended = p.join(500ms);
  auto waited = std::chrono::steady_clock::now() - t0;
  pester.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_FALSE(ended);
  EXPECT_GE(waited, 500ms);
  EXPECT_LT(waited, 5s);
  p.kill();
  p.join();
}

TEST_P(ProcessTest, SentinelIsPollable) {
  mpxx::Process p(opts(), sleep_ms, 100);
  p.start();
  pollfd pf{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&pf, 1, 0), 0);
  EXPECT_EQ(::poll(&pf, 1, 10000), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ----------------------------------------------------------- identity

TEST_P(ProcessTest, ChildSeesItsIdentityAndParent) {
  TempDir dir;
  std::string path = dir.path("id");
  mpxx::Process p(opts("Reporter"), report_identity, path);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  std::string text = read_file(path);
  EXPECT_EQ(read_line(text, 0), "Reporter");
  EXPECT_EQ(read_line(text, 1), std::to_string(p.pid()));
  EXPECT_EQ(read_line(text, 2), std::to_string(::getpid()));
  EXPECT_EQ(read_line(text, 3), "MainProcess");
  EXPECT_EQ(read_line(text, 4), "32");
  EXPECT_EQ(read_line(text, 5), "parent-alive");
  EXPECT_EQ(read_line(text, 6), "0");
}

TEST_P(ProcessTest, ChildInheritsAuthkey) {
  TempDir dir;
  mpxx::Process p(opts(), report_authkey, dir.path("key"));
  p.start();
  p.join();
  EXPECT_EQ(read_file(dir.path("key")), mpxx::current_process().authkey());
  EXPECT_EQ(p.authkey(), mpxx::current_process().authkey());
}

TEST_P(ProcessTest, DaemonicProcessMayNotHaveChildren) {
  mpxx::Process p(opts(), try_child_from_daemon);
  p.set_daemon(true);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
}

TEST_P(ProcessTest, ChildExitTerminatesDaemonsAndJoinsOthers) {
  TempDir dir;
  // The middle process needs fork for its lambda-based grandchild.
  mpxx::Process p(leave_children, dir.path(""));
  (void)opts();
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(read_file(dir.path("normal.done")), "done");
  pid_t daemon_pid = std::atoi(read_file(dir.path("daemon.pid")).c_str());
  ASSERT_GT(daemon_pid, 0);
  EXPECT_TRUE(mpxx_test::wait_gone(daemon_pid, 5s));
}

TEST_P(ProcessTest, GrandchildDiesWhenItsParentIsKilled) {
  TempDir dir;
  std::string path = dir.path("grandchild.pid");
  mpxx::Process p(opts(), start_grandchild, path, static_cast<int>(GetParam()));
  p.start();
  ASSERT_TRUE(wait_for_file(path));
  pid_t grandchild = std::atoi(read_file(path).c_str());
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(mpxx_test::proc_state(grandchild) != 0);
  p.kill();
  p.join();
  EXPECT_TRUE(mpxx_test::wait_gone(grandchild, 5s)) << "grandchild " << grandchild << " survived";
}

TEST_P(ProcessTest, NoZombieAfterJoin) {
  mpxx::Process p(opts(), do_nothing);
  p.start();
  pid_t pid = p.pid();
  p.join();
  EXPECT_EQ(mpxx_test::proc_state(pid), 0);
}

TEST_P(ProcessTest, SpawnedChildNeverReachesTheRestOfMain) {
  // If a spawn or forkserver child fell through mpxx::init, it would run this
  // whole test suite and print GoogleTest's banner.
  mpxx_test::CaptureFd out(1);
  mpxx::Process p(opts(), do_nothing);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(out.text().find("[=========="), std::string::npos);
}

TEST_P(ProcessTest, LogToStderrShowsTheLifecycle) {
  mpxx_test::CaptureFd err(2);
  mpxx::log_to_stderr(mpxx::log::INFO);
  mpxx::Process p(opts("Logged"), do_nothing);
  p.start();
  p.join();
  mpxx::get_logger().set_level(mpxx::log::OFF);
  std::string text = err.text();
  EXPECT_NE(text.find("[INFO/MainProcess] Logged started with pid"), std::string::npos) << text;
  EXPECT_NE(text.find("[INFO/Logged] child process calling self.run()"), std::string::npos) << text;
  EXPECT_NE(text.find("[INFO/Logged] process exiting with exitcode 0"), std::string::npos) << text;
}

TEST_P(ProcessTest, CapturingLambdaOnlyUnderFork) {
  TempDir dir;
  std::string path = dir.path("out");
  mpxx::Process p(opts(), [path] { write_file(path, "captured"); });
  if (GetParam() == mpxx::StartMethod::fork) {
    p.start();
    p.join();
    EXPECT_EQ(read_file(path), "captured");
  } else {
    try {
      p.start();
      FAIL() << "a capturing lambda must be rejected under " << mpxx::to_string(GetParam());
    } catch (const mpxx::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("capturing lambda"), std::string::npos) << e.what();
    }
  }
}

TEST_P(ProcessTest, CaptureFreeLambdaAndPartialCrossEveryMethod) {
  TempDir dir;
  mpxx::Process a(opts(), [](std::string p) { write_file(p, "lambda"); }, dir.path("a"));
  mpxx::Process b(opts(), mpxx::partial(write_text, dir.path("b")), "partial");
  a.start();
  b.start();
  a.join();
  b.join();
  EXPECT_EQ(read_file(dir.path("a")), "lambda");
  EXPECT_EQ(read_file(dir.path("b")), "partial");
}

struct Stamp {
  std::string path;
  int times = 0;
  void operator()(std::string text) const {
    std::string s;
    for (int i = 0; i < times; ++i) s += text;
    write_file(path, s);
  }
  template <class A>
  void serialize(A& a) {
    a(path, times);
  }
};

TEST_P(ProcessTest, SerializableFunctionObjectCrosses) {
  TempDir dir;
  mpxx::Process p(opts(), Stamp{dir.path("s"), 3}, "ab");
  p.start();
  p.join();
  EXPECT_EQ(read_file(dir.path("s")), "ababab");
}

struct Clock : mpxx::Process {
  Clock(std::string path, mpxx::ProcessOptions o) : mpxx::Process(std::move(o)), path_(std::move(path)) {}
  void run() override { write_file(path_, "ran " + mpxx::current_process().name()); }
  std::string path_;
};

TEST_P(ProcessTest, SubclassOverridingRun) {
  TempDir dir;
  Clock c(dir.path("clock"), opts());
  EXPECT_EQ(c.name().rfind("Clock-", 0), 0u) << c.name();  // Python: type(self).__name__
  if (GetParam() == mpxx::StartMethod::fork) {
    c.start();
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
    EXPECT_EQ(read_file(dir.path("clock")), "ran " + c.name());
  } else {
    EXPECT_THROW(c.start(), mpxx::ProcessError);
  }
}

// ------------------------------------------------------------- misuse

TEST(ProcessMisuse, PythonsAnswers) {
  mpxx::Process p(do_nothing);
  EXPECT_THROW(p.join(), mpxx::ProcessError);       // join before start
  EXPECT_THROW(p.sentinel(), mpxx::ValueError);     // no sentinel yet
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.pid(), 0);
  p.start();
  EXPECT_THROW(p.start(), mpxx::ProcessError);      // start twice
  EXPECT_THROW(p.set_daemon(true), mpxx::ProcessError);
  p.join();
  p.close();
  EXPECT_THROW(p.is_alive(), mpxx::ValueError);     // closed
  EXPECT_THROW(p.join(), mpxx::ValueError);
  EXPECT_THROW(p.start(), mpxx::ValueError);
}

TEST(ProcessMisuse, CloseOfARunningProcessIsAValueError) {
  mpxx::Process p(block_forever);
  p.start();
  try {
    p.close();
    FAIL() << "close() of a running process returned";
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(p.name()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(p.is_alive());  // the refused close() left the object usable
  p.kill();
  p.join();
  EXPECT_NO_THROW(p.close());
}

TEST(ProcessMisuse, SentinelBeforeStartIsAValueError) {
  mpxx::Process p(do_nothing);
  try {
    p.sentinel();
    FAIL() << "sentinel() before start() returned";
  } catch (const mpxx::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("not started"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mpxx::current_process().sentinel(), mpxx::ValueError);
}

TEST(ProcessMisuse, PidAfterCloseIsAValueErrorWhileTheNameStaysReadable) {
  mpxx::Process p({.name = "closer"}, do_nothing);
  p.start();
  p.join();
  p.close();
  EXPECT_THROW(p.pid(), mpxx::ValueError);
  EXPECT_THROW(p.ident(), mpxx::ValueError);
  EXPECT_EQ(p.name(), "closer");  // Python's name, daemon and authkey outlive close()
  EXPECT_FALSE(p.daemon());
  EXPECT_FALSE(p.authkey().empty());
}

TEST(ProcessTimeouts, JoinWithANegativeTimeoutReturnsAtOnce) {
  mpxx::Process p(block_forever);
  p.start();
  double t = mpxx_test::seconds([&] {
    EXPECT_FALSE(p.join(-1s));
    EXPECT_FALSE(p.join(std::chrono::duration<double>(-0.5)));
    EXPECT_FALSE(p.join(0s));
  });
  EXPECT_LT(t, 1.0);
  EXPECT_TRUE(p.is_alive());  // the child keeps running, as in Python
  p.kill();
  EXPECT_TRUE(p.join(10s));
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(ProcessTimeouts, JoinWithAnEnormousTimeoutWaitsForTheEnd) {
  // hours::max() overflows a count of nanoseconds: it must mean "forever",
  // not a negative or garbage timeout.
  mpxx::Process p(sleep_ms, 100);
  p.start();
  EXPECT_TRUE(p.join(std::chrono::hours::max()));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessMisuse, CurrentProcessCannotJoinItself) {
  EXPECT_THROW(mpxx::current_process().join(), mpxx::ProcessError);
  EXPECT_TRUE(mpxx::current_process().is_alive());
  EXPECT_EQ(mpxx::current_process().name(), "MainProcess");
  EXPECT_FALSE(mpxx::parent_process().has_value());
}

// ------------------------------------------------------ names and children

// A fork child that fails before its target makes start() raise OSError with
// the child's errno and the step, and leaves the object startable.
TEST(ProcessStart, ForkChildSetUpFailureRaisesItsErrno) {
  struct Fault {
    Fault() { mpxx::detail::fork_child_fault = EMFILE; }
    ~Fault() { mpxx::detail::fork_child_fault = 0; }
  };
  mpxx::Process p({.context = &mpxx::get_context(mpxx::StartMethod::fork)}, targets::exit_with, 5);
  {
    Fault fault;
    try {
      p.start();
      FAIL() << "start() returned although the child failed";
    } catch (const mpxx::OSError& e) {
      EXPECT_EQ(e.code(), EMFILE);
      EXPECT_NE(std::string(e.what()).find("setting up the child's runtime"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_FALSE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_TRUE(mpxx::active_children().empty());
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 5);
}

TEST(ProcessNames, DefaultNamesCount) {
  mpxx::Process a(do_nothing), b(do_nothing);
  const std::string& na = a.name();
  const std::string& nb = b.name();
  ASSERT_EQ(na.rfind("Process-", 0), 0u);
  ASSERT_EQ(nb.rfind("Process-", 0), 0u);
  EXPECT_EQ(std::atoi(nb.c_str() + 8), std::atoi(na.c_str() + 8) + 1);
  mpxx::Process c({.name = "worker"}, do_nothing);
  EXPECT_EQ(c.name(), "worker");
  c.set_name("renamed");
  EXPECT_EQ(c.name(), "renamed");
}

TEST(ActiveChildren, ListsRunningAndReapsFinished) {
  mpxx::Process running(block_forever), done(do_nothing);
  running.start();
  done.start();
  done.join(10s);
  pid_t done_pid = done.pid();
  auto kids = mpxx::active_children();
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].pid(), running.pid());
  EXPECT_EQ(kids[0].name(), running.name());
  EXPECT_EQ(mpxx_test::proc_state(done_pid), 0);
  running.kill();
  kids[0].join();
  EXPECT_EQ(running.exitcode(), -SIGKILL);
  EXPECT_TRUE(mpxx::active_children().empty());
}

TEST(ActiveChildren, DestroyedProcessObjectIsStillTracked) {
  pid_t pid;
  {
    mpxx::Process p(sleep_ms, 100);
    p.start();
    pid = p.pid();
  }
  auto kids = mpxx::active_children();
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].pid(), pid);
  kids[0].join();
  EXPECT_EQ(kids[0].exitcode(), 0);
  EXPECT_EQ(mpxx_test::proc_state(pid), 0);
}

TEST(BufferedOutput, IsWrittenOnceNotOncePerFork) {
  TempDir dir;
  {
    mpxx_test::CaptureFd out(1);
    std::printf("parent-buffered;");  // sits in stdio's buffer
    mpxx::Process p(mpxx::partial([](int) { std::printf("child;"); }, 0));
    p.start();
    p.join();
    std::fflush(stdout);
    std::string text = out.text();
    EXPECT_EQ(text, "parent-buffered;child;");
  }
}

// -------------------------------------------------------- start methods

TEST(StartMethods, PythonsApi) {
  EXPECT_EQ(mpxx::get_all_start_methods(), (std::vector<std::string>{"fork", "spawn", "forkserver"}));
  EXPECT_FALSE(mpxx::get_start_method(true).has_value());
  EXPECT_EQ(mpxx::get_start_method(), "fork");
  mpxx::set_start_method("spawn");
  EXPECT_EQ(mpxx::get_start_method(), "spawn");
  EXPECT_THROW(mpxx::set_start_method("fork"), mpxx::ProcessError);
  mpxx::set_start_method("forkserver", /*force=*/true);
  EXPECT_EQ(mpxx::get_start_method(), "forkserver");
  mpxx::Process p(do_nothing);
  EXPECT_EQ(p.start_method(), mpxx::StartMethod::forkserver);
  EXPECT_THROW(mpxx::get_context("threads"), mpxx::ValueError);
  EXPECT_THROW(mpxx::set_start_method("bogus", true), mpxx::ValueError);
  EXPECT_EQ(mpxx::get_context("spawn").start_method(), mpxx::StartMethod::spawn);
  EXPECT_EQ(mpxx::get_context().name(), "forkserver");
  mpxx::set_start_method("fork", true);
}

// Python's child forces the method that started it as its default
// (Process._bootstrap), whatever the parent's default: a spawn child's own
// children are spawned too.
TEST_P(ProcessTest, AChildReportsTheStartMethodThatStartedIt) {
  const std::optional<std::string> saved = mpxx::get_start_method(true);
  mpxx::set_start_method(GetParam() == mpxx::StartMethod::fork ? "spawn" : "fork", true);
  TempDir dir;
  mpxx::Process p(opts(), report_start_method, dir.path("m"));
  p.start();
  p.join();
  if (saved)
    mpxx::set_start_method(*saved, true);
  else
    mpxx::detail::set_default_start_method_raw(std::nullopt);
  ASSERT_EQ(p.exitcode(), 0);
  const std::string m(mpxx::to_string(GetParam()));
  EXPECT_EQ(read_file(dir.path("m")), m + " " + m + " " + m + " " + m);
}

TEST(StartMethods, ChildInheritsTheDefault) {
  mpxx::set_start_method("spawn", true);
  TempDir dir;
  mpxx::Process p(write_text, dir.path("m"), "x");
  p.start();
  p.join();
  EXPECT_EQ(p.start_method(), mpxx::StartMethod::spawn);
  mpxx::set_start_method("fork", true);
}

// ------------------------------------------------------------ cpu count

TEST(CpuCount, AffinityIsRespected) {
  EXPECT_GE(mpxx::cpu_count(), 1);
  EXPECT_GE(mpxx::process_cpu_count(), 1);
  EXPECT_LE(mpxx::process_cpu_count(), mpxx::cpu_count());
  mpxx::Process p([] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) std::exit(2);
    std::exit(mpxx::process_cpu_count() == 1 ? 0 : 1);
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

}  // namespace
