// Process objects, the children table and program-exit handling.
#include "sys/fd.hpp"
#include "mpxx/process.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <typeinfo>

#include "mpxx/log.hpp"
#include "process/exitcode.hpp"
#include "process/forkserver.hpp"
#include "process/runtime.hpp"
#include "process/start.hpp"
#include "process/state.hpp"
#include "shared/tracker.hpp"

namespace mpxx {
namespace detail {

namespace {


std::string random_key() {
  std::string k(32, '\0');
  std::size_t got = 0;
  while (got < k.size()) {
    ssize_t r = ::getentropy(k.data() + got, k.size() - got) == 0 ? ssize_t(k.size() - got) : -1;
    if (r < 0) sys::throw_errno("getentropy");
    got += static_cast<std::size_t>(r);
  }
  return k;
}

// Non-blocking reap under s.mu. Returns true once the exit code is known.
bool try_reap_locked(ProcessState& s) {
  if (s.exitcode) return true;
  if (!s.started) return false;
  if (s.method == StartMethod::forkserver) {
    if (!sys::wait_readable(s.status.get(), sys::Deadline::after(std::chrono::nanoseconds(0))))
      return false;
    std::int32_t code;
    if (sys::read_full(s.status.get(), &code, sizeof code))
      s.exitcode = code;
    else
      s.exitcode = -SIGKILL;  // the forkserver died, and with it the child
    // The status socket stays open (like the pidfd) until close(): another
    // thread may be polling it right now.
  } else {
    siginfo_t si{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.pidfd.get()), &si,
                 WEXITED | WNOHANG) < 0) {
      if (errno == EINTR) return false;
      sys::throw_errno("waitid(" + s.name + ")");
    }
    if (si.si_pid == 0) return false;
    s.exitcode = exitcode_from_siginfo(si.si_code, si.si_status);
  }
  if (get_logger().enabled_for(log::DEBUG))
    get_logger().logf(log::DEBUG, s.name, " (pid ", s.pid, ") reaped, ", describe_exitcode(*s.exitcode));
  return true;
}

}  // namespace

int exitcode_from_siginfo(int code, int status) noexcept {
  return (code == CLD_KILLED || code == CLD_DUMPED) ? -status : status;
}

std::string describe_exitcode(int code) {
  if (code >= 0) return "exitcode " + std::to_string(code);
  const char* n = sigabbrev_np(-code);
  return "exitcode " + std::to_string(code) + " (SIG" + (n ? n : "?") + ")";
}

bool wait_exit(ProcessState& s, sys::Deadline deadline) {
  for (;;) {
    int fd;
    {
      std::lock_guard lk(s.mu);
      if (try_reap_locked(s)) return true;
      fd = s.method == StartMethod::forkserver ? s.status.get() : s.pidfd.get();
    }
    if (!sys::wait_readable(fd, deadline)) {
      std::lock_guard lk(s.mu);
      return try_reap_locked(s);
    }
  }
}

std::string identity_suffix(const std::vector<int>& identity) {
  std::string out;
  for (std::size_t i = 0; i < identity.size(); ++i) {
    if (i) out += ':';
    out += std::to_string(identity[i]);
  }
  return out;
}

namespace {
// All per-process runtime state, in one page: a forked child writes to a
// few of these fields on its way in and out, and each page it writes costs
// a copy-on-write fault (~5 us on a VM). Never destroyed: children and
// atexit handlers use it until the very end.
struct Runtime {
  Self self;
  Children children;
  ForkServerConn server;
};
static_assert(sizeof(Runtime) <= 4096);
alignas(4096) std::byte g_runtime_storage[sizeof(Runtime)];

Runtime& runtime() {
  static Runtime* r = [] {
    auto* rt = new (g_runtime_storage) Runtime;
    rt->self.authkey = random_key();
    rt->self.identity.reserve(16);  // a forked child appends without allocating
    return rt;
  }();
  return *r;
}
}  // namespace

Self& self() { return runtime().self; }
Children& children() { return runtime().children; }
ForkServerConn& forkserver_conn() { return runtime().server; }

void add_child(std::shared_ptr<ProcessState> s) {
  Children& c = children();
  std::lock_guard lk(c.mu);
  c.list.push_back(std::move(s));
}

void cleanup_children() {
  Children& c = children();
  std::lock_guard lk(c.mu);
  if (c.list.empty()) return;
  std::erase_if(c.list, [](const std::shared_ptr<ProcessState>& s) {
    std::lock_guard slk(s->mu);
    return try_reap_locked(*s);
  });
}

std::vector<std::shared_ptr<ProcessState>> live_children() {
  cleanup_children();
  Children& c = children();
  std::lock_guard lk(c.mu);
  return c.list;
}

void reset_children_after_fork() noexcept {
  // The inherited entries are the parent's children, not ours. Their pidfds
  // are copies and closing them here does not affect the parent.
  Children& c = children();
  new (&c.mu) std::mutex;  // another thread may have held it at fork time
  if (c.list.empty()) return;  // (no write: keeps a forked child's pages shared)
  for (auto& s : c.list) {
    s->pidfd.reset();
    s->status.reset();
  }
  c.list.clear();
}

void join_all_children_at_exit() noexcept {
  try {
    Logger& log = get_logger();
    log.info("process shutting down");
    auto kids = live_children();
    for (auto& s : kids)
      if (s->daemon) {
        log.logf(log::INFO, "calling terminate() for daemon ", s->name);
        std::lock_guard lk(s->mu);
        if (!s->exitcode && s->pidfd) sys::pidfd_kill(s->pidfd.get(), SIGTERM);
      }
    for (auto& s : kids) {
      log.logf(log::INFO, "calling join() for process ", s->name);
      wait_exit(*s, sys::Deadline::never());
    }
    cleanup_children();
  } catch (const std::exception& e) {
    std::string m = std::string("mpxx: while joining children at exit: ") + e.what() + "\n";
    (void)!::write(2, m.data(), m.size());
  }
  stop_forkserver();
  stop_resource_tracker();
}

void install_exit_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit([] {
      // Only the process that registered it (children _exit instead).
      join_all_children_at_exit();
    });
  });
}

}  // namespace detail

// ------------------------------------------------------------ ProcessHandle

using detail::ProcessState;

namespace {
// What stays readable after close(), as in Python: name, daemon, authkey.
ProcessState& open_or_closed(const std::shared_ptr<ProcessState>& st) {
  if (!st) throw ValueError("mpxx: empty process handle");
  return *st;
}
}  // namespace

ProcessState& ProcessHandle::state() const {
  ProcessState& s = open_or_closed(st_);
  if (s.closed) throw ValueError("mpxx: process object " + s.name + " is closed");
  return s;
}

const std::string& ProcessHandle::name() const { return open_or_closed(st_).name; }

pid_t ProcessHandle::pid() const { return state().pid; }

bool ProcessHandle::daemon() const { return open_or_closed(st_).daemon; }

const std::string& ProcessHandle::authkey() const { return open_or_closed(st_).authkey; }

StartMethod ProcessHandle::start_method() const { return state().method; }

std::optional<int> ProcessHandle::exitcode() const {
  ProcessState& s = state();
  if (s.kind != ProcessState::Kind::child || !s.started) return std::nullopt;
  std::lock_guard lk(s.mu);
  if (s.creator == ::getpid()) detail::try_reap_locked(s);
  return s.exitcode;
}

bool ProcessHandle::is_alive() const {
  ProcessState& s = state();
  switch (s.kind) {
    case ProcessState::Kind::self:
      return true;
    case ProcessState::Kind::parent:
      return !sys::wait_readable(s.pidfd.get(), sys::Deadline::after(std::chrono::nanoseconds(0)));
    case ProcessState::Kind::child:
      break;
  }
  if (!s.started) return false;
  if (s.creator != ::getpid()) return false;  // a copy inherited from our parent
  std::lock_guard lk(s.mu);
  return !detail::try_reap_locked(s);
}

void ProcessHandle::join() const { join_for(std::chrono::nanoseconds::max()); }

bool ProcessHandle::join_for(std::chrono::nanoseconds timeout) const {
  ProcessState& s = state();
  auto deadline = timeout == std::chrono::nanoseconds::max() ? sys::Deadline::never()
                                                            : sys::Deadline::after(timeout);
  switch (s.kind) {
    case ProcessState::Kind::self:
      throw ProcessError("mpxx: a process cannot join itself");
    case ProcessState::Kind::parent:
      return sys::wait_readable(s.pidfd.get(), deadline);
    case ProcessState::Kind::child:
      break;
  }
  if (!s.started) throw ProcessError("mpxx: can only join a started process (" + s.name + ")");
  if (s.creator != ::getpid()) throw ProcessError("mpxx: can only join a child process");
  get_logger().logf(log::SUBDEBUG, "joining ", s.name);
  bool done = detail::wait_exit(s, deadline);
  if (done) detail::cleanup_children();
  return done;
}

namespace {
void send_signal(ProcessState& s, int sig, const char* what) {
  if (s.kind != ProcessState::Kind::child)
    throw ProcessError(std::string("mpxx: ") + what + "() is only for child processes");
  if (!s.started) return;
  std::lock_guard lk(s.mu);
  if (s.exitcode || !s.pidfd) return;  // already reaped: the pid may be someone else's now
  get_logger().logf(log::DEBUG, what, "() ", s.name, " (pid ", s.pid, ")");
  sys::pidfd_kill(s.pidfd.get(), sig);
}
}  // namespace

void ProcessHandle::terminate() const { send_signal(state(), SIGTERM, "terminate"); }
void ProcessHandle::kill() const { send_signal(state(), SIGKILL, "kill"); }

int ProcessHandle::sentinel() const {
  ProcessState& s = state();
  if (s.kind == ProcessState::Kind::child && !s.started)
    throw ValueError("mpxx: process not started: " + s.name + " has no sentinel before start()");
  if (!s.pidfd) throw ValueError("mpxx: " + s.name + " has no sentinel (only a started child has one)");
  return s.pidfd.get();
}

// ------------------------------------------------------------------ Process

Process::Process() : Process(ProcessOptions{}) {}

Process::Process(ProcessOptions opts) : Process(std::move(opts), detail::Target{}) {}

Process::Process(ProcessOptions opts, detail::Target target) {
  auto s = std::make_shared<ProcessState>();
  detail::Self& me = detail::self();
  s->identity = me.identity;
  s->identity.push_back(++me.counter);
  if (opts.name.empty()) {
    s->name = "Process-" + detail::identity_suffix(s->identity);
    s->name_is_default = true;
  } else {
    s->name = std::move(opts.name);
  }
  s->daemon = opts.daemon.value_or(me.daemon);
  s->authkey = me.authkey;
  s->method = opts.context ? opts.context->start_method() : detail::default_start_method();
  s->has_target = static_cast<bool>(target.local);
  s->target = std::move(target);
  s->creator = ::getpid();
  st_ = std::move(s);
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&&) noexcept = default;

Process::~Process() {
  if (!st_ || !st_->started || st_->creator != ::getpid()) return;
  // A finished child is reaped now; a running one stays in the children
  // table (Python's semantics) and is joined or terminated at exit.
  try {
    detail::cleanup_children();
  } catch (...) {
  }
}

void Process::run() {
  ProcessState& s = state();
  if (s.target.local) s.target.local();
}

const std::string& Process::name() const {
  // Python names a subclass instance after its class ("Clock-1"). The
  // dynamic type is only known once construction is over, so the default
  // name is settled at first use.
  ProcessState& s = open_or_closed(st_);
  if (s.name_is_default) {
    s.name_is_default = false;
    if (typeid(*this) != typeid(Process)) {
      std::string cls = detail::wire::demangle(typeid(*this).name());
      auto colon = cls.rfind("::");
      if (colon != std::string::npos) cls = cls.substr(colon + 2);
      s.name = cls + "-" + detail::identity_suffix(s.identity);
    }
  }
  return s.name;
}

void Process::set_name(std::string name) {
  ProcessState& s = open_or_closed(st_);
  s.name = std::move(name);
  s.name_is_default = false;
}

void Process::set_daemon(bool daemon) {
  ProcessState& s = state();
  if (s.started) throw ProcessError("mpxx: cannot set daemon after the process has started");
  s.daemon = daemon;
}

void Process::start() {
  ProcessState& s = state();
  (void)name();  // settles a subclass's default name before the child copies it
  if (s.started) throw ProcessError("mpxx: cannot start a process twice (" + s.name + ")");
  if (s.creator != ::getpid())
    throw ProcessError("mpxx: can only start a process object created by the current process");
  if (detail::self().daemon)
    throw ProcessError("mpxx: daemonic processes are not allowed to have children");
  if (s.method != StartMethod::fork) {
    if (typeid(*this) != typeid(Process))
      throw ProcessError("mpxx: " + s.name + ": a Process subclass that overrides run() can only "
                         "start with the 'fork' start method; under '" +
                         std::string(to_string(s.method)) +
                         "' pass a target instead: Process(function, args...)");
    if (s.has_target && !s.target.encode)
      throw ProcessError("mpxx: " + s.name + " cannot start with the '" +
                         std::string(to_string(s.method)) + "' start method: " + s.target.why_not);
    if (!initialized())
      throw ProcessError("mpxx: the '" + std::string(to_string(s.method)) +
                         "' start method needs mpxx::init(argc, argv) at the top of main (it "
                         "re-executes the program, and the child branches off there)");
  }
  detail::cleanup_children();
  detail::install_exit_handler();
  try {
    switch (s.method) {
      case StartMethod::fork: detail::start_fork(s, *this); break;
      case StartMethod::spawn: detail::start_spawn(s); break;
      case StartMethod::forkserver: detail::start_forkserver(s); break;
    }
  } catch (...) {
    sys::rethrow_with_context("cannot start " + s.name);
  }
  s.started = true;
  detail::add_child(st_);
  get_logger().logf(log::INFO, s.name, " started with pid ", s.pid, " (", to_string(s.method), ")");
}

void Process::close() {
  if (!st_ || st_->closed) return;
  ProcessState& s = *st_;
  if (s.started && s.creator == ::getpid()) {
    std::lock_guard lk(s.mu);
    if (!detail::try_reap_locked(s))
      throw ValueError("mpxx: cannot close " + s.name +
                         " while it is still running; call join() or terminate() first");
  }
  s.pidfd.reset();
  s.status.reset();
  s.target = {};
  s.closed = true;
  detail::cleanup_children();
}

// ------------------------------------------------------------ free functions

ProcessHandle current_process() {
  detail::Self& me = detail::self();
  if (!me.self_state || me.self_state->pid != ::getpid()) {
    auto s = std::make_shared<ProcessState>();
    s->kind = ProcessState::Kind::self;
    s->name = me.name;
    s->identity = me.identity;
    s->daemon = me.daemon;
    s->authkey = me.authkey;
    s->pid = ::getpid();
    s->creator = me.parent_pid;
    s->method = me.started_by.value_or(StartMethod::fork);
    s->started = true;
    me.self_state = std::move(s);
  }
  me.self_state->name = me.name;
  return ProcessHandle(me.self_state);
}

std::optional<ProcessHandle> parent_process() {
  detail::Self& me = detail::self();
  if (me.parent_pid == 0) return std::nullopt;
  if (!me.parent_state) {
    auto s = std::make_shared<ProcessState>();
    s->kind = ProcessState::Kind::parent;
    s->name = me.parent_name;
    s->pid = me.parent_pid;
    s->authkey = me.authkey;
    s->started = true;
    try {
      s->pidfd = sys::pidfd_open(me.parent_pid);
    } catch (const OSError&) {
      // Already gone: an fd that is always readable says "not alive".
      auto [r, w] = sys::make_pipe();
      s->pidfd = std::move(r);
    }
    me.parent_state = std::move(s);
  }
  return ProcessHandle(me.parent_state);
}

std::vector<ProcessHandle> active_children() {
  std::vector<ProcessHandle> out;
  for (auto& s : detail::live_children()) out.push_back(ProcessHandle(s));
  return out;
}

}  // namespace mpxx
