// mpxx/process.hpp - Process, current_process, parent_process,
// active_children, cpu_count.
//
// A Process runs a callable in a child process, as Python's
// multiprocessing.Process does:
//
//   void greet(const std::string& name) { std::cout << "hello " << name << "\n"; }
//
//   mpxx::Process p(greet, "bob");          // Process(target=greet, args=("bob",))
//   p.start();
//   p.join();                               // p.exitcode() == 0
//
// Options (Python's keyword arguments) come first, in braces:
//   mpxx::Process w({.name = "block", .daemon = true}, wait_for_event, e);
// and a subclass may override run() instead of passing a target (with the
// fork start method: a spawned child could not rebuild the subclass object,
// so spawn and forkserver refuse it at start() with a ProcessError):
//   struct Clock : mpxx::Process { void run() override { ... } };
//
// Exit codes follow Python: std::nullopt while running, 0 when the target
// returned, 1 when it threw (the exception's type, message and backtrace are
// printed to the child's stderr), n after exit(n) or `throw
// mpxx::SystemExit(n)`, and -N when the child was killed by signal N.
//
// What crosses the boundary: under fork, the target and arguments are copied
// with the process, so anything works. Under spawn and forkserver they travel
// as bytes: a function, a captureless lambda, a serializable function object
// or mpxx::partial, with arguments that can be serialized (task.hpp);
// anything else is a ProcessError at start() that says why.
//
// Lifetime: a child never outlives its parent. Children are started with
// PR_SET_PDEATHSIG(SIGKILL), so they die when the parent dies, even by
// SIGKILL; note that Linux ties this to the *thread* that started the child,
// so start long-lived children from a thread that outlives them. Destroying a
// Process object does not stop its child (as in Python): mpxx keeps track of
// it, active_children() still lists it, and at normal exit daemonic children
// are terminated and the others joined. No zombie outlives join(),
// is_alive() after the exit, active_children(), or program exit.
// Waiting, signalling and reaping all go through a pidfd, so a recycled pid
// can never be signalled by mistake.
//
// Thread safety: like Python's, one Process object is not meant to be used
// from several threads at once; different Process objects are independent.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"

namespace mpxx {

struct ProcessOptions {
  std::string name{};             // default "Process-N" (N counts per parent)
  std::optional<bool> daemon{};   // default: the current process's daemon flag
  const Context* context = nullptr;  // default: get_context()
};

namespace detail {
struct ProcessState;
struct ProcessAccess;
}  // namespace detail

// A handle to a process: a child, the current process or the parent. Cheap
// to copy; every copy refers to the same process. current_process(),
// parent_process() and active_children() return these; Process is one.
class ProcessHandle {
 public:
  ProcessHandle() = default;

  const std::string& name() const;
  // The child's pid; 0 before start(), ValueError after close().
  pid_t pid() const;
  pid_t ident() const { return pid(); }
  bool daemon() const;
  // std::nullopt until the process has ended and been waited for.
  std::optional<int> exitcode() const;
  const std::string& authkey() const;
  // Reaps the child if it has ended.
  bool is_alive() const;
  // Waits for the process to end. join() blocks; join(timeout) returns true
  // if it ended within the timeout (zero or negative: checks once, without
  // waiting). A signal arriving meanwhile does not cut the wait short.
  void join() const;
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return join_for(detail::to_nanos(timeout));
  }
  // SIGTERM / SIGKILL; no-ops once the process has been reaped.
  void terminate() const;
  void kill() const;
  // A pidfd, readable (poll/epoll) once the process has ended. ValueError
  // before start(), as in Python.
  int sentinel() const;
  StartMethod start_method() const;

  explicit operator bool() const noexcept { return st_ != nullptr; }
  friend bool operator==(const ProcessHandle& a, const ProcessHandle& b) noexcept {
    return a.st_ == b.st_;
  }

 protected:
  explicit ProcessHandle(std::shared_ptr<detail::ProcessState> st) noexcept : st_(std::move(st)) {}
  bool join_for(std::chrono::nanoseconds timeout) const;
  detail::ProcessState& state() const;
  std::shared_ptr<detail::ProcessState> st_;

  friend struct detail::ProcessAccess;
  friend ProcessHandle current_process();
  friend std::optional<ProcessHandle> parent_process();
  friend std::vector<ProcessHandle> active_children();
};

class Process : public ProcessHandle {
 public:
  // For subclasses that override run().
  Process();
  explicit Process(ProcessOptions opts);

  // Process(target, args...): target(args...) runs in the child. Arguments
  // are copied (string literals become std::string).
  template <class F, class... A>
    requires std::is_invocable_v<std::decay_t<F>&, detail::arg_t<A>&...>
  explicit Process(F&& f, A&&... a)
      : Process(ProcessOptions{}, detail::make_target(std::forward<F>(f), std::forward<A>(a)...)) {}
  template <class F, class... A>
    requires std::is_invocable_v<std::decay_t<F>&, detail::arg_t<A>&...>
  Process(ProcessOptions opts, F&& f, A&&... a)
      : Process(std::move(opts), detail::make_target(std::forward<F>(f), std::forward<A>(a)...)) {}

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  virtual ~Process();

  // Starts the child. Throws ProcessError when called twice, from a daemonic
  // process, or when the target cannot cross to a spawn or forkserver child;
  // ValueError on a closed object; OSError when the system refuses.
  void start();
  // What the child runs: the target, unless overridden.
  virtual void run();
  // Releases the pidfd and other resources. ValueError if still running, as
  // in Python; afterwards every method but name(), daemon() and authkey()
  // raises ValueError.
  void close();

  // "Process-N" by default, or "<Subclass>-N" for a subclass (Python's
  // type(self).__name__).
  const std::string& name() const;
  void set_name(std::string name);
  // Only before start(), as in Python.
  void set_daemon(bool daemon);
  using ProcessHandle::daemon;

 private:
  Process(ProcessOptions opts, detail::Target target);
};

// The process this code runs in ("MainProcess" in the main program).
ProcessHandle current_process();
// The process that started this one; std::nullopt in the main program.
std::optional<ProcessHandle> parent_process();
// Children started by this process that are still running; reaps the
// others.
std::vector<ProcessHandle> active_children();

// Number of CPUs in the system (Python's os.cpu_count()).
int cpu_count();
// CPUs this process may actually use: the affinity mask, capped by a cgroup
// CPU quota (cpu.max / cfs_quota_us), at least 1. Pool's default size.
int process_cpu_count();

}  // namespace mpxx
