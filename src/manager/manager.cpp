// BaseManager: starting, connecting to and stopping a manager's server.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <random>
#include <sys/prctl.h>
#include <thread>
#include <unistd.h>

#include "manager/protocol.hpp"
#include "sys/fd.hpp"
#include "mpxx/process.hpp"
#include "process/state.hpp"

namespace mpxx {

namespace detail::mgr {

namespace {

std::string fresh_socket_name() {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "@mpxx-%d-%u-%08x", static_cast<int>(::getpid()), counter.fetch_add(1),
                rd());
  return buf;
}

// The server process's body.
void server_main(ServerConfig cfg, Connection ready) {
  std::shared_ptr<ServerState> s;
  Ready r;
  try {
    s = make_server(cfg);  // also opens a pidfd of the starting process
    r = Ready{true, server_address(*s).host, server_address(*s).port, 0};
  } catch (const OSError& e) {
    if (e.code() == ESRCH) return;  // the starter is gone already: nobody to serve
    r = Ready{false, e.what(), -1, e.code()};
  } catch (const std::exception& e) {
    r = Ready{false, e.what(), -1, 0};
  }
  // A child dies with the *thread* that started it (PR_SET_PDEATHSIG). A
  // manager is a service that must outlive a worker thread that started
  // it: with the starting process's pidfd open, it watches that instead.
  // (Before the reply: the starting thread may end as soon as it has it.)
  if (r.ok) ::prctl(PR_SET_PDEATHSIG, 0);
  try {
    ready.send(r);
  } catch (const Error&) {
    return;  // the starter gave up waiting
  }
  if (!r.ok) return;
  // The starter keeps using this connection: it is trusted (it came with
  // the process), so its first request needs no connect and no handshake.
  serve_process(s, std::move(ready));
}

}  // namespace

struct ManagerState {
  Address address;
  std::string authkey;
  const Context* context = nullptr;
  std::vector<Registration> types;
  std::optional<Process> process;  // when this object started the server
  bool connected = false;          // started or connected
  bool shut = false;
};

}  // namespace detail::mgr

using detail::mgr::Kind;

BaseManager::BaseManager() : BaseManager(ManagerOptions{}) {}

BaseManager::BaseManager(ManagerOptions opts) : st_(std::make_unique<detail::mgr::ManagerState>()) {
  st_->address = opts.address ? *opts.address : Address::unix_socket(detail::mgr::fresh_socket_name());
  st_->authkey = opts.authkey ? *opts.authkey : current_process().authkey();
  st_->context = opts.context;
}

BaseManager::BaseManager(Address address, std::string authkey)
    : BaseManager(ManagerOptions{.address = std::move(address), .authkey = std::move(authkey)}) {}

BaseManager::BaseManager(BaseManager&&) noexcept = default;
BaseManager& BaseManager::operator=(BaseManager&& o) noexcept {
  if (this != &o) {
    try {
      shutdown();
    } catch (...) {
    }
    st_ = std::move(o.st_);
  }
  return *this;
}

BaseManager::~BaseManager() {
  try {
    shutdown();
    // A manager that connected closes this thread's connection (proxies
    // still alive reconnect if they are used again).
    if (st_ && st_->connected && !st_->process) detail::mgr::forget_connection(st_->address, st_->authkey);
  } catch (...) {
  }
}

namespace {
detail::mgr::ManagerState& state(const std::unique_ptr<detail::mgr::ManagerState>& st) {
  if (!st) throw ValueError("mpxx: this manager was moved from");
  return *st;
}
}  // namespace

void BaseManager::add_registration(detail::mgr::Registration r) {
  auto& s = state(st_);
  if (s.process) throw ProcessError("mpxx: register types before start(): the server is already running");
  s.types.push_back(std::move(r));
}

void BaseManager::start() try {
  auto& s = state(st_);
  if (s.connected) throw ProcessError("mpxx: this manager has already been started or connected");
  auto [rx, tx] = Pipe(true, {.shared_memory = false});  // its fd becomes the manager channel
  detail::mgr::ServerConfig cfg{s.address.host, s.address.port, s.authkey, s.types, ::getpid()};
  static std::atomic<int> counter{0};
  ProcessOptions po{.name = "SyncManager-" + std::to_string(counter.fetch_add(1) + 1), .daemon = true,
                    .context = s.context};
  s.process.emplace(po, &detail::mgr::server_main, std::move(cfg), tx);
  // Ctrl-C at a terminal reaches the whole process group; the manager must
  // outlive it so the program can handle the interrupt and shut it down.
  detail::ignore_interrupts_from_start(*s.process);
  s.process->start();
  tx.close();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    if (rx.poll(std::chrono::milliseconds(20))) break;
    if (!s.process->is_alive() || std::chrono::steady_clock::now() > deadline) {
      auto code = s.process->exitcode();
      s.process->kill();
      s.process->join();
      s.process.reset();
      throw ProcessError("mpxx: the manager's server process " +
                         std::string(code ? "exited with code " + std::to_string(*code) : "did not answer") +
                         " before it was ready");
    }
  }
  detail::mgr::Ready r;
  try {
    r = rx.recv<detail::mgr::Ready>();
  } catch (const EOFError&) {
    r.host_or_error = "it exited before it was ready";
  }
  if (!r.ok) {
    s.process->join(std::chrono::seconds(5));
    if (s.process->is_alive()) s.process->kill();
    s.process->join();
    s.process.reset();
    std::string why = "mpxx: the manager's server could not listen on " + s.address.to_string() + ": " + r.host_or_error;
    if (r.error) throw OSError(r.error, why);
    throw ProcessError(why);
  }
  s.address = Address{r.host_or_error, r.port};
  s.connected = true;
  detail::mgr::mark_server_dead(s.address, false);
  detail::mgr::adopt_connection(s.address, s.authkey, std::move(rx));
} catch (...) {
  sys::rethrow_with_context("cannot start a Manager");
}

void BaseManager::connect() {
  auto& s = state(st_);
  detail::mgr::Token t = detail::mgr::Token::of(s.address, s.authkey);
  detail::mgr::mark_server_dead(s.address, false);
  detail::wire::Writer w;
  detail::mgr::begin(w, detail::mgr::Op::ping, 0);
  detail::mgr::transact(t, w);
  s.connected = true;
}

Server BaseManager::get_server() {
  auto& s = state(st_);
  if (s.connected) throw ProcessError("mpxx: this manager has already been started or connected");
  auto server = detail::mgr::make_server({s.address.host, s.address.port, s.authkey, s.types});
  s.address = detail::mgr::server_address(*server);
  return Server(std::move(server));
}

void BaseManager::shutdown() {
  if (!st_ || !st_->process || st_->shut) return;
  auto& s = *st_;
  s.shut = true;
  detail::mgr::mark_server_dead(s.address, true);
  if (s.process->is_alive()) {
    detail::mgr::Token t = detail::mgr::Token::of(s.address, s.authkey);
    detail::wire::Writer w;
    detail::mgr::begin(w, detail::mgr::Op::shutdown, 0);
    try {
      detail::mgr::transact(t, w);
    } catch (const Error&) {
      // Already gone: nothing to ask.
    }
  }
  detail::mgr::forget_connection(s.address, s.authkey);
  if (!s.process->join(std::chrono::seconds(5))) {
    s.process->kill();
    s.process->join();
  }
}

void BaseManager::join() {
  auto& s = state(st_);
  if (s.process) s.process->join();
}

bool BaseManager::join_ns(std::chrono::nanoseconds timeout) {
  auto& s = state(st_);
  if (!s.process) return true;
  return s.process->join(timeout);
}

const Address& BaseManager::address() const { return state(st_).address; }
const std::string& BaseManager::authkey() const { return state(st_).authkey; }
std::optional<pid_t> BaseManager::pid() const {
  auto& s = state(st_);
  if (!s.process) return std::nullopt;
  return s.process->pid();
}

std::shared_ptr<detail::mgr::Ref> BaseManager::create_builtin(Kind kind, const std::string& name, const Fill& fill) {
  auto& s = state(st_);
  if (!s.connected)
    throw ProcessError("mpxx: the manager is not running: call start() or connect() first");
  if (s.shut) throw ProcessError("mpxx: the manager has been shut down");
  detail::mgr::Token t = detail::mgr::Token::of(s.address, s.authkey);
  t.kind = kind;
  detail::wire::Writer w;
  detail::mgr::begin(w, detail::mgr::Op::create, 0);
  w.pod(kind);
  detail::mgr::put_str(w, name);
  if (fill) {
    detail::mgr::RequestTo to(t);
    fill(w);
  }
  auto reply = detail::mgr::transact(t, w);
  auto r = detail::mgr::reader(reply);
  t.id = r.pod<std::uint64_t>();
  t.type_tag = r.pod<std::uint64_t>();
  return std::make_shared<detail::mgr::Ref>(std::move(t), false);
}

AcquirerProxy BaseManager::acquirer(Kind kind, int value) {
  if (value < 0) throw ValueError("mpxx: a semaphore's initial value must be >= 0");
  bool sem = kind == Kind::semaphore || kind == Kind::bounded_semaphore;
  auto ref = create_builtin(kind, "", [&](detail::wire::Writer& w) {
    if (sem) w.pod(std::int64_t{value});
  });
  return AcquirerProxy(kind, std::move(ref));
}

AcquirerProxy BaseManager::named_lock(const std::string& name, bool recursive) {
  if (name.empty()) throw ValueError("mpxx: a named object needs a non-empty name");
  Kind kind = recursive ? Kind::rlock : Kind::lock;
  return AcquirerProxy(kind, create_builtin(kind, name, nullptr));
}

ConditionProxy BaseManager::Condition() {
  return ConditionProxy(create_builtin(Kind::condition, "", [](detail::wire::Writer& w) { w.pod(std::uint64_t{0}); }));
}

ConditionProxy BaseManager::Condition(const AcquirerProxy& lock) {
  if (!lock || !(lock.address() == address()))
    throw ValueError("mpxx: Condition(lock) needs a Lock or RLock of the same manager");
  std::uint64_t id = lock.id();
  return ConditionProxy(create_builtin(Kind::condition, "", [&](detail::wire::Writer& w) { w.pod(id); }));
}

BarrierProxy BaseManager::barrier(int parties, std::int64_t timeout) {
  if (parties < 1) throw ValueError("mpxx: a Barrier needs parties >= 1");
  return BarrierProxy(create_builtin(Kind::barrier, "", [&](detail::wire::Writer& w) {
    w.pod(std::int64_t{parties});
    w.pod(timeout);
  }));
}

}  // namespace mpxx
