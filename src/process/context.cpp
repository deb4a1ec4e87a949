// src/process/context.cpp - the program's settings (mpxx/context.hpp):
// init(), which also turns a re-executed program into the child or the
// forkserver it was started as, and the default start method.
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/errors.hpp"
#include "process/boot.hpp"
#include "process/forkserver.hpp"
#include "process/runtime.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

namespace {

std::vector<std::string>& argv_store() {
  static auto* v = new std::vector<std::string>;
  return *v;
}
bool g_initialized = false;
std::optional<StartMethod> g_default_method;

// Takes "fd:pid" out of environment variable `name` (a re-executed child
// finds its role there); false if it is not set, _exit(1) if malformed.
bool take_fd_pid(const char* name, int& fd, pid_t& pid) {
  const char* v = std::getenv(name);
  if (!v) return false;
  char* end = nullptr;
  const long f = std::strtol(v, &end, 10);
  const long p = end && *end == ':' ? std::strtol(end + 1, &end, 10) : 0;
  if (!end || *end != '\0' || f < 0 || p <= 0) {
    sys::write_stderr(std::string("mpxx: malformed ") + name + " in the environment\n");
    ::_exit(1);
  }
  fd = static_cast<int>(f);
  pid = static_cast<pid_t>(p);
  ::unsetenv(name);
  return true;
}

}  // namespace

const std::vector<std::string>& saved_argv() { return argv_store(); }
std::optional<StartMethod> default_start_method_if_set() { return g_default_method; }
StartMethod default_start_method() { return g_default_method.value_or(StartMethod::fork); }
void set_default_start_method_raw(std::optional<StartMethod> m) { g_default_method = m; }

}  // namespace detail

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
  if (detail::take_fd_pid("MPXX_SPAWN", fd, ppid)) detail::run_boot_from(fd, ppid);
  if (detail::take_fd_pid("MPXX_FORKSERVER", fd, ppid)) detail::forkserver_main(fd, ppid);
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
