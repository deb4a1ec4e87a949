// src/process/start.cpp - starting a child with fork or spawn.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <new>
#include <optional>
#include <cstring>
#include <iostream>

#include "mpxx/errors.hpp"
#include "mpxx/log.hpp"
#include "process/boot.hpp"
#include "process/runtime.hpp"
#include "process/start.hpp"
#include "process/state.hpp"
#include "wire/stream.hpp"

extern char** environ;

namespace mpxx::detail {

namespace {
void flush_std_streams() noexcept {
  // Buffered output would otherwise be written twice: once by the parent
  // and once by the forked copy of its buffer.
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

void run_process_object(void* p) { static_cast<Process*>(p)->run(); }

// Records a new child's pid and pidfd.
void adopt_child(ProcessState& s, pid_t pid) {
  s.pidfd = sys::pidfd_of_new_child(pid, s.name);
  s.pid = pid;
}
}  // namespace


namespace {
// What a fork child sends its parent once set up, before it runs the
// target: err 0, or the errno of the step that failed (the child then
// exits). Why a report and not the pipe's EOF: docs/design.md, "Starting a
// fork child".
struct StartReport {
  std::int32_t err = 0;
  std::int32_t step = 0;
};
constexpr const char* kStartSteps[] = {"", "prctl(PR_SET_PDEATHSIG)", "setting up the child's runtime"};
enum : std::int32_t { kStepDeathSignal = 1, kStepRuntime = 2 };
constexpr auto kReportSpin = std::chrono::microseconds(300);

[[noreturn]] void report_failure(int fd, int err, std::int32_t step) noexcept {
  const StartReport r{err, step};
  [[maybe_unused]] const ssize_t n = ::write(fd, &r, sizeof r);  // a parent that is gone reads nothing
  ::_exit(1);
}

// The errno that an exception escaping the child's set-up stands for.
int errno_of_current_exception() noexcept {
  try {
    throw;
  } catch (const OSError& e) {
    return e.code() ? e.code() : EIO;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (...) {
    return EIO;
  }
}

// The parent's side: waits until the child reports or exits (a child that
// dies before it reports has started; join() tells how it ended).
StartReport await_report(int report_fd, int pidfd) {
  StartReport r;
  auto read_report = [&] { return sys::retry([&] { return ::read(report_fd, &r, sizeof r); }); };
  // A child reports within tens of microseconds, less than a sleep and a
  // wake-up cost here: look for a while (yielding, should the child share
  // this CPU) before sleeping (docs/design.md, "Starting a fork child").
  ssize_t n = -1;
  for (const auto until = std::chrono::steady_clock::now() + kReportSpin;;) {
    n = read_report();
    if (n >= 0 || errno != EAGAIN || std::chrono::steady_clock::now() >= until) break;
    ::sched_yield();
  }
  if (n < 0 && errno == EAGAIN) {
    const int fds[] = {report_fd, pidfd};
    sys::wait_any(fds, sys::Deadline::never());
    n = read_report();
  }
  if (n != static_cast<ssize_t>(sizeof r)) return StartReport{};
  return r;
}
}  // namespace

std::atomic<int> fork_child_fault{0};
std::atomic<int> fork_child_fault_spared{0};

void start_fork(ProcessState& s, Process& obj) {
  flush_std_streams();
  const pid_t parent = ::getpid();
  const std::string parent_name = self().name;
  auto [report_rd, report_wr] = sys::make_pipe();
  ::fcntl(report_rd.get(), F_SETFL, O_NONBLOCK);  // the pidfd may end the wait instead
  std::optional<sys::BlockSignals> immune;
  if (s.ignores_interrupts) immune.emplace(std::initializer_list<int>{SIGINT});
  int fault = fork_child_fault.load(std::memory_order_relaxed);
  if (fault && fork_child_fault_spared.load(std::memory_order_relaxed) > 0) {
    fork_child_fault_spared.fetch_sub(1, std::memory_order_relaxed);
    fault = 0;
  }
  pid_t pid = ::fork();
  if (pid < 0) sys::throw_errno("cannot start " + s.name + ": fork");
  if (pid == 0) {
    sys::forked_child_starts();
    if (s.ignores_interrupts) sys::ignore_and_unblock({SIGINT});
    report_rd.reset();
    // Die with the parent. prctl only arms it from now on: if the parent
    // died before this line, our parent is already someone else.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) report_failure(report_wr.get(), errno, kStepDeathSignal);
    if (::getppid() != parent) ::_exit(1);
    try {
      if (fault) throw OSError(fault, "mpxx: injected fault");
      become_child(s.identity, s.name, s.daemon, s.authkey, parent, parent_name, StartMethod::fork);
    } catch (...) {
      report_failure(report_wr.get(), errno_of_current_exception(), kStepRuntime);
    }
    const StartReport ok{};
    const int ok_fd = report_wr.get();  // a lambda may not capture a structured binding (C++20, clang 14)
    if (sys::retry([&] { return ::write(ok_fd, &ok, sizeof ok); }) < 0) ::_exit(1);
    report_wr.reset();
    exit_child(run_child_body(&run_process_object, &obj));
  }
  immune.reset();
  report_wr.reset();
  adopt_child(s, pid);
  const StartReport r = await_report(report_rd.get(), s.pidfd.get());
  if (r.err == 0) return;
  // The child has exited (or is about to): reap it, and leave the object
  // as it was before start().
  siginfo_t si{};
  sys::retry([&] {
    return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.pidfd.get()), &si, WEXITED);
  });
  s.pid = 0;
  s.pidfd.reset();
  const bool known = r.step > 0 && r.step < static_cast<std::int32_t>(std::size(kStartSteps));
  sys::throw_errno(r.err, "cannot start " + s.name + ": the child failed at " +
                              (known ? kStartSteps[r.step] : "an unknown step"));
}

namespace {
// Builds "NAME=value" entries for the child's environment: ours, minus any
// mpxx bootstrap variables, plus `extra`.
std::vector<std::string> child_env(const std::string& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    if (std::strncmp(*e, "MPXX_SPAWN=", 11) == 0 || std::strncmp(*e, "MPXX_FORKSERVER=", 16) == 0)
      continue;
    env.emplace_back(*e);
  }
  env.push_back(extra);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}
}  // namespace

pid_t spawn_self(int child_fd, const std::string& env_var, bool block_interrupt) {
  // The child gets child_fd as fd 3 and nothing else beyond stdio. child_fd
  // is >= 4 (so dup2 really clears close-on-exec) and close-on-exec here.
  std::vector<std::string> args = saved_argv();
  if (args.empty()) args.push_back("mpxx-child");
  std::vector<std::string> env = child_env(env_var);
  auto argv = c_strings(args);
  auto envp = c_strings(env);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&fa, child_fd, 3);
  posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  sigset_t mask;
  sigemptyset(&mask);
  if (block_interrupt) sigaddset(&mask, SIGINT);
  posix_spawnattr_setsigmask(&attr, &mask);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) sys::throw_errno(err, "cannot re-execute /proc/self/exe");
  return pid;
}

void start_spawn(ProcessState& s) {
  wire::Writer boot;
  encode_boot(boot, s);
  auto [mine, theirs] = sys::socket_pair();
  sys::UniqueFd child_end = sys::move_above(std::move(theirs), 4);
  flush_std_streams();
  pid_t pid = spawn_self(child_end.get(), "MPXX_SPAWN=3:" + std::to_string(::getpid()), s.ignores_interrupts);
  child_end.reset();
  adopt_child(s, pid);
  // If the child died before reading, join() reports how.
  wire::send_frame(mine.get(), boot);
}

}  // namespace mpxx::detail
