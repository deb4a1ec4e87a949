// The child side: becoming a child, running its body like Python's
// Process._bootstrap, and the entry points that mpxx::init() branches to.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <stdio_ext.h>
#ifdef __GLIBCXX__
#include <ext/stdio_sync_filebuf.h>
#endif
#include <stdio_ext.h>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "mpxx/context.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/log.hpp"
#include "process/state.hpp"
#include "wire/stream.hpp"

namespace mpxx {
namespace detail {

namespace {

std::vector<std::string>& argv_store() {
  static auto* v = new std::vector<std::string>;
  return *v;
}
bool g_initialized = false;
std::optional<StartMethod> g_default_method;

void write_stderr(const std::string& s) noexcept {
  try {
    sys::write_full(2, s.data(), s.size());
  } catch (...) {  // nowhere left to report it
  }
}

// Parses "fd:pid" from an environment variable.
bool parse_fd_pid(const char* v, int& fd, pid_t& pid) {
  char* end = nullptr;
  long f = std::strtol(v, &end, 10);
  if (!end || *end != ':') return false;
  long p = std::strtol(end + 1, &end, 10);
  if (!end || *end != '\0' || f < 0 || p <= 0) return false;
  fd = static_cast<int>(f);
  pid = static_cast<pid_t>(p);
  return true;
}

}  // namespace

const std::vector<std::string>& saved_argv() { return argv_store(); }
std::optional<StartMethod> default_start_method_if_set() { return g_default_method; }
StartMethod default_start_method() { return g_default_method.value_or(StartMethod::fork); }
void set_default_start_method_raw(std::optional<StartMethod> m) { g_default_method = m; }

void become_child(const std::vector<int>& identity, const std::string& name, bool daemon,
                  const std::string& authkey, pid_t parent_pid, const std::string& parent_name) {
  // Every page a forked child writes to is copied by the kernel (on this
  // kind of VM, ~5 us each), so unchanged fields are left alone.
  Self& me = self();
  me.identity = identity;
  me.name = name;
  me.daemon = daemon;
  if (me.authkey != authkey) me.authkey = authkey;
  me.parent_pid = parent_pid;
  if (me.parent_name != parent_name) me.parent_name = parent_name;
  me.counter = 0;
  if (me.self_state) me.self_state.reset();
  if (me.parent_state) me.parent_state.reset();
  reset_children_after_fork();
  forkserver_after_fork();
  // As in Python, a child does not share the parent's standard input.
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) {
    if (devnull != 0) {
      ::dup2(devnull, 0);
      ::close(devnull);
    } else {
      sys::set_cloexec(0, false);
    }
  }
}

int run_child_body(void (*body)(void*), void* arg) noexcept {
  Logger& log = get_logger();
  int code = 0;
  try {
    ThrowTrace trace;
    log.info("child process calling self.run()");
    try {
      body(arg);
      code = 0;
    } catch (const SystemExit& e) {
      code = e.code();
    } catch (...) {
      ExceptionInfo e = describe_current_exception();
      std::cout.flush();
      write_stderr("Process " + self().name + ":\nTraceback (most recent call last):\n" +
                   e.backtrace + e.type + ": " + e.message + "\n");
      code = 1;
    }
  } catch (...) {
    code = 1;
  }
  join_all_children_at_exit();
  log.logf(log::INFO, "process exiting with exitcode ", code);
  return code;
}

void exit_child(int code) noexcept {
  // As Python's child does before os._exit: flush the standard streams.
  // (With the default sync_with_stdio, std::cout writes straight into
  // stdout's buffer, so checking stdio's pending bytes covers both.)
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  if (__fpending(stdout) > 0) std::fflush(stdout);
  if (__fpending(stderr) > 0) std::fflush(stderr);
  ::_exit(code & 0xff);
}

void encode_boot(wire::Writer& w, const ProcessState& s) {
  std::size_t at = wire::begin_frame(w, wire::FrameKind::boot);
  wire::encode(w, s.identity);
  wire::encode(w, s.name);
  wire::encode(w, static_cast<std::uint8_t>(s.daemon));
  wire::encode(w, s.authkey);
  wire::encode(w, static_cast<std::int32_t>(::getpid()));
  wire::encode(w, self().name);
  wire::encode(w, static_cast<std::int32_t>(get_logger().level()));
  auto m = default_start_method_if_set();
  wire::encode(w, static_cast<std::int32_t>(m ? static_cast<int>(*m) : -1));
  bool has_call = s.has_target;
  wire::encode(w, static_cast<std::uint8_t>(has_call));
  if (has_call) s.target.encode(w);
  wire::end_frame(w, at);
}

namespace {
struct BootCall {
  wire::Reader* reader;
};
void run_boot_call(void* p) {
  auto* c = static_cast<BootCall*>(p);
  invoke_call(*c->reader, nullptr);
}
}  // namespace

void run_boot_from(int fd, pid_t expected_parent) noexcept {
  // Die with the parent; if it is already gone, do not start at all.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != expected_parent) ::_exit(1);
  int code = 1;
  try {
    wire::FrameHeader h{};
    wire::Writer payload;
    std::vector<int> fds;
    if (!wire::recv_frame(fd, h, payload, fds)) ::_exit(1);  // parent gave up before sending
    ::close(fd);
    wire::Reader r(payload.bytes());
    r.set_fds(std::move(fds));
    if (h.kind != wire::FrameKind::boot)
      throw ProtocolError(std::string("mpxx: expected a boot frame, got ") +
                          wire::frame_kind_name(h.kind));
    auto identity = wire::decode<std::vector<int>>(r);
    auto name = wire::decode<std::string>(r);
    bool daemon = wire::decode<std::uint8_t>(r) != 0;
    auto authkey = wire::decode<std::string>(r);
    pid_t parent = wire::decode<std::int32_t>(r);
    auto parent_name = wire::decode<std::string>(r);
    int level = wire::decode<std::int32_t>(r);
    int method = wire::decode<std::int32_t>(r);
    bool has_call = wire::decode<std::uint8_t>(r) != 0;
    become_child(identity, name, daemon, authkey, parent, parent_name);
    get_logger().set_level(level);
    if (method >= 0 && method <= 2)
      set_default_start_method_raw(static_cast<StartMethod>(method));
    if (has_call) {
      BootCall c{&r};
      code = run_child_body(&run_boot_call, &c);
    } else {
      code = run_child_body([](void*) {}, nullptr);
    }
  } catch (const std::exception& e) {
    write_stderr(std::string("mpxx: child could not start: ") + e.what() + "\n");
    code = 1;
  }
  exit_child(code);
}

}  // namespace detail

// ---------------------------------------------------------------- context

std::string_view to_string(StartMethod m) noexcept {
  switch (m) {
    case StartMethod::fork: return "fork";
    case StartMethod::spawn: return "spawn";
    case StartMethod::forkserver: return "forkserver";
  }
  return "?";
}

StartMethod parse_start_method(std::string_view name) {
  if (name == "fork") return StartMethod::fork;
  if (name == "spawn") return StartMethod::spawn;
  if (name == "forkserver") return StartMethod::forkserver;
  throw ValueError("mpxx: cannot find context for '" + std::string(name) +
                   "' (the start methods are 'fork', 'spawn' and 'forkserver')");
}

void init(int argc, char** argv) {
  auto& store = detail::argv_store();
  store.clear();
  for (int i = 0; i < argc && argv[i]; ++i) store.emplace_back(argv[i]);
  detail::g_initialized = true;
  int fd;
  pid_t ppid;
  if (const char* v = std::getenv("MPXX_SPAWN")) {
    if (!detail::parse_fd_pid(v, fd, ppid)) {
      detail::write_stderr("mpxx: malformed MPXX_SPAWN in the environment\n");
      ::_exit(1);
    }
    ::unsetenv("MPXX_SPAWN");
    detail::run_boot_from(fd, ppid);
  }
  if (const char* v = std::getenv("MPXX_FORKSERVER")) {
    if (!detail::parse_fd_pid(v, fd, ppid)) {
      detail::write_stderr("mpxx: malformed MPXX_FORKSERVER in the environment\n");
      ::_exit(1);
    }
    ::unsetenv("MPXX_FORKSERVER");
    detail::forkserver_main(fd, ppid);
  }
  detail::install_exit_handler();
}

bool initialized() noexcept { return detail::g_initialized; }

void set_start_method(StartMethod method, bool force) {
  if (detail::g_default_method && !force)
    throw ProcessError("mpxx: context has already been set (to '" +
                       std::string(to_string(*detail::g_default_method)) +
                       "'); pass force=true to change it");
  detail::set_default_start_method_raw(method);
}

void set_start_method(std::string_view method, bool force) {
  set_start_method(parse_start_method(method), force);
}

std::string get_start_method() { return std::string(to_string(detail::default_start_method())); }

std::optional<std::string> get_start_method(bool allow_none) {
  if (auto m = detail::default_start_method_if_set()) return std::string(to_string(*m));
  if (allow_none) return std::nullopt;
  return get_start_method();
}

std::vector<std::string> get_all_start_methods() { return {"fork", "spawn", "forkserver"}; }

const Context& get_context(StartMethod method) {
  static const Context fork_ctx(StartMethod::fork), spawn_ctx(StartMethod::spawn),
      forkserver_ctx(StartMethod::forkserver);
  switch (method) {
    case StartMethod::fork: return fork_ctx;
    case StartMethod::spawn: return spawn_ctx;
    case StartMethod::forkserver: return forkserver_ctx;
  }
  return fork_ctx;
}

const Context& get_context(std::string_view method) { return get_context(parse_start_method(method)); }
const Context& get_context() { return get_context(detail::default_start_method()); }

}  // namespace mpxx
