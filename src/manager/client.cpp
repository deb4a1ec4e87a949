// The client side of managers: one connection per (process, thread, server),
// requests and replies, reference counts, the typed-operation registry.
#include <atomic>
#include <mutex>
#include <new>
#include <optional>
#include <pthread.h>
#include <set>
#include <string>
#include <unistd.h>
#include <unordered_map>

#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/managers.hpp"

namespace mpxx::detail::mgr {

void value_with_fds(const std::string& type) {
  throw ValueError("mpxx: a " + type +
                   " holds file descriptors (shared memory, a lock, a connection) and cannot be "
                   "stored in a manager; store plain data or a manager proxy instead");
}

// ------------------------------------------------------ proxies in values

namespace {
thread_local HeldIds* t_held = nullptr;
thread_local const Token* t_destination = nullptr;
}  // namespace

HeldIds::HeldIds(const Token* dest) noexcept : to(dest), outer(t_held) { t_held = this; }
HeldIds::~HeldIds() { t_held = outer; }

const Token*& request_destination() noexcept { return t_destination; }

void note_encoded_proxy(const Token& t) noexcept {
  HeldIds* h = t_held;
  if (!h || !h->to || t.port != h->to->port || t.host != h->to->host) return;
  try {
    h->ids.push_back(t.id);
  } catch (...) {  // out of memory: the value is still stored, as plain data
  }
}

void insert_held_ids(wire::Writer& w, std::size_t at, const std::vector<std::uint64_t>& ids) {
  const std::uint64_t n = ids.size();
  const std::size_t head = sizeof kHeldIds + sizeof n + ids.size() * sizeof(std::uint64_t);
  const std::size_t len = w.size() - at;
  w.extend(head);
  std::byte* p = w.data() + at;
  std::memmove(p + head, p, len);
  std::memcpy(p, &kHeldIds, sizeof kHeldIds);
  std::memcpy(p + sizeof kHeldIds, &n, sizeof n);
  std::memcpy(p + sizeof kHeldIds + sizeof n, ids.data(), ids.size() * sizeof(std::uint64_t));
}

// ------------------------------------------------------------- op registry

namespace {
struct OpRegistry {
  std::unordered_map<std::uint64_t, OpDef> ops;
};
OpRegistry& op_registry() {
  static auto* r = new OpRegistry;  // leaked: used until _exit
  return *r;
}
}  // namespace

std::uint64_t register_op(const char* mangled, OpDef def) noexcept {
  std::uint64_t id = wire::type_tag_of(mangled);
  op_registry().ops.emplace(id, def);
  return id;
}

const OpDef* find_op(std::uint64_t id) noexcept {
  auto& ops = op_registry().ops;
  auto it = ops.find(id);
  return it == ops.end() ? nullptr : &it->second;
}

// ------------------------------------------------------------- connections

namespace {

thread_local bool t_cache_gone = false;

struct ConnCache {
  pid_t pid = 0;
  std::unordered_map<std::string, Channel> conns;
  ~ConnCache() { t_cache_gone = true; }
};
thread_local ConnCache t_cache;

std::string key_of(const Token& t) {
  std::string k = t.host;
  k += '\0';
  k += std::to_string(t.port);
  k += '\0';
  k += t.authkey;
  return k;
}

std::string where(const Token& t) { return "the manager at " + t.address().to_string(); }

// Addresses of servers this process shut down: their proxies' last
// references need not be returned.
struct DeadServers {
  std::mutex mu;
  std::set<std::pair<std::string, int>> addrs;
};
DeadServers& dead_servers() {
  static auto* d = new DeadServers;
  return *d;
}

// getpid() is a system call on every request otherwise; a fork updates it
// (and gives the child a fresh mutex, in case another thread held it).
std::atomic<pid_t> g_pid{0};
pid_t my_pid() {
  static const bool registered = [] {
    dead_servers();
    ::pthread_atfork(nullptr, nullptr, [] {
      g_pid.store(::getpid(), std::memory_order_relaxed);
      new (&dead_servers().mu) std::mutex;
    });
    g_pid.store(::getpid(), std::memory_order_relaxed);
    return true;
  }();
  (void)registered;
  return g_pid.load(std::memory_order_relaxed);
}

void own_pid() {
  pid_t me = my_pid();
  if (t_cache.pid != me) {
    // A forked child: the inherited sockets belong to the parent's threads.
    t_cache.conns.clear();
    t_cache.pid = me;
  }
}

Channel connect(const Token& t) {
  try {
    return Channel(Client(t.address(), t.authkey.empty() ? std::nullopt : std::optional<std::string>(t.authkey)));
  } catch (const OSError& e) {
    throw OSError(e.code(), "mpxx: cannot reach " + where(t) + ": " + e.what());
  } catch (const AuthenticationError& e) {
    throw AuthenticationError("mpxx: " + where(t) + " refused this process's authkey: " + e.what());
  }
}

// The calling thread's connection to t's server; once the thread's cache
// has been destroyed (a static's destructor at exit), a one-off in `spare`.
Channel& connection(const Token& t, std::optional<Channel>& spare) {
  if (t_cache_gone) return spare.emplace(connect(t));
  own_pid();
  std::string key = key_of(t);
  auto it = t_cache.conns.find(key);
  if (it != t_cache.conns.end()) return it->second;
  return t_cache.conns.insert_or_assign(std::move(key), connect(t)).first->second;
}

void drop(const Token& t) {
  if (!t_cache_gone && t_cache.pid == my_pid()) t_cache.conns.erase(key_of(t));
}

[[noreturn]] void raise(wire::Reader& r) {
  auto kind = r.pod<ErrKind>();
  std::string msg = get_str(r);
  switch (kind) {
    case ErrKind::key: throw KeyError(msg);
    case ErrKind::index: throw IndexError(msg);
    case ErrKind::value: throw ValueError(msg);
    case ErrKind::runtime: throw RuntimeError(msg);
    case ErrKind::empty: throw Empty(msg);
    case ErrKind::full: throw Full(msg);
    case ErrKind::timeout: throw TimeoutError(msg);
    case ErrKind::broken_barrier: throw BrokenBarrierError(msg);
    case ErrKind::attribute: throw AttributeError(msg);
    case ErrKind::protocol: throw ProtocolError(msg);
    case ErrKind::remote: throw decode_exception(r);
  }
  throw ProtocolError("mpxx: a manager replied with an unknown error kind: " + msg);
}

}  // namespace

std::string transact(const Token& t, const wire::Writer& request) {
  std::optional<Channel> spare;
  Channel& c = connection(t, spare);
  std::string reply;
  try {
    c.send(request.bytes());
    reply = c.recv();
  } catch (const EOFError&) {
    drop(t);
    throw EOFError("mpxx: lost " + where(t) + ": its server process is gone (shut down or died)");
  } catch (const OSError& e) {
    drop(t);
    throw OSError(e.code(), "mpxx: lost " + where(t) + ": " + e.what());
  } catch (...) {  // whatever else broke, the stream is no longer in step
    drop(t);
    throw;
  }
  if (reply.empty()) throw ProtocolError("mpxx: empty reply from " + where(t));
  return open_reply(std::move(reply));
}

std::string open_reply(std::string reply) {
  if (reply.empty()) throw ProtocolError("mpxx: an empty reply from a manager");
  if (reply[0] == 0) {
    reply.erase(0, 1);
    return reply;
  }
  wire::Reader r(std::as_bytes(std::span(reply.data() + 1, reply.size() - 1)));
  raise(r);
}

void notify(const Token& t, const wire::Writer& request) noexcept {
  if (t_cache_gone) return;
  try {
    std::optional<Channel> spare;
    connection(t, spare).send(request.bytes());
  } catch (...) {
    try {
      drop(t);
    } catch (...) {
    }
  }
}

void mark_server_dead(const Address& a, bool dead) {
  auto& d = dead_servers();
  std::lock_guard g(d.mu);
  if (dead)
    d.addrs.emplace(a.host, a.port);
  else
    d.addrs.erase({a.host, a.port});
}

void adopt_connection(const Address& a, const std::string& authkey, Connection c) {
  if (t_cache_gone) return;
  own_pid();
  Token t = Token::of(a, authkey);
  t_cache.conns.insert_or_assign(key_of(t), Channel(std::move(c)));
}

void forget_connection(const Address& a, const std::string& authkey) {
  Token t = Token::of(a, authkey);
  drop(t);
}

namespace {
bool server_dead(const Token& t) {
  auto& d = dead_servers();
  std::lock_guard g(d.mu);
  return d.addrs.count({t.host, t.port}) != 0;
}
}  // namespace

// ---------------------------------------------------------------- counts

Ref::Ref(Token t, bool counted) : token(std::move(t)), owner(::getpid()) {
  if (!counted) return;
  wire::Writer w;
  begin(w, Op::incref, token.id);
  notify(token, w);
}

Ref::~Ref() {
  if (owner != ::getpid() || t_cache_gone || server_dead(token)) return;
  wire::Writer w;
  begin(w, Op::decref, token.id);
  notify(token, w);
}

const Ref& ProxyBase::ref() const {
  if (!ref_) throw ValueError("mpxx: this proxy is not bound to a manager object (default-constructed)");
  return *ref_;
}

}  // namespace mpxx::detail::mgr
