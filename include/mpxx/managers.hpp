// mpxx/managers.hpp - Manager, BaseManager and their proxies
// (multiprocessing.managers).
//
// A manager is a server process that holds objects; other processes use
// them through proxies, as in Python:
//
//   void work(mpxx::DictProxy<std::string, int> d, mpxx::ListProxy<int> l) {
//     d["name"] = 21;                       // d['name'] = 21
//     l.reverse();
//   }
//   auto m = mpxx::Manager();               // with Manager() as m:
//   auto d = m.dict<std::string, int>();
//   auto l = m.list<int>({0, 1, 2, 3});
//   mpxx::Process p(work, d, l);            // proxies are handles: any start method
//   p.start(); p.join();
//   std::cout << d << "\n" << l << "\n";     // {'name': 21}  [3, 2, 1, 0]
//
// Every proxy call is one round trip to the server (~10 us on one host) and
// each call is atomic on the server. A read-modify-write spelled as two calls
// is not: `d["count"] -= 1` reads, then writes, and two processes can
// interleave, exactly as in Python. Use a manager Lock around it, or the
// atomic forms that run entirely on the server:
//
//   d.fetch_add("count", -1);                        // returns the value before
//   d.update("count", [](int v) { return v - 1; });  // any transferable fn, returns the new value
//
// Values are stored on the server as their encoding (task.hpp says what can
// cross), so any transferable type works, keys compare by their encoding,
// and reading a value with another type than it was stored with is a
// ProtocolError, not garbage. Proxies themselves are transferable: pass them
// to a Process (fork, spawn, forkserver), send them through a Queue or a
// Pipe, or store one proxy inside another managed object. A child, or any
// thread, opens its own connection on first use.
//
// Remote managers: a BaseManager with a TCP address and an authkey serves
// clients in other processes and programs, with CPython's challenge-response
// authentication (a wrong key: AuthenticationError, no access):
//
//   // server program
//   mpxx::BaseManager m(mpxx::Address::tcp("0.0.0.0", 50000), "secret");
//   m.register_type<Counter>("Counter");
//   m.get_server().serve_forever();
//   // client program
//   mpxx::BaseManager m(mpxx::Address::tcp("server", 50000), "secret");
//   m.connect();
//   auto jobs = m.named<mpxx::QueueProxy<std::string>>("jobs");  // one queue for all clients
//   auto c = m.create<Counter>("Counter");
//   c.call<&Counter::add>(5);
//
// Failures: a server-side error comes back as the same mpxx type (KeyError,
// IndexError, Empty, Full, BrokenBarrierError, ...); an exception thrown by
// a registered type's method, an unknown type or operation, or a request the
// server cannot decode comes back as RemoteError, and the server goes on
// serving everyone else. If the server dies, every call - including one
// blocked in Queue::get or Lock::acquire - fails at once with EOFError or
// OSError, never hangs. If a client dies, the server releases the Locks and
// RLocks it held and abandons its blocked calls without consuming anything.
//
// Lifetime: an object lives while some process holds a proxy to it (each
// process that received one counts once; a forked child shares its
// parent's count, so the parent must keep its proxy - a Process object
// does, for its arguments - while the child uses it). A proxy stored inside
// another object of the same manager keeps its object alive until the
// container drops it (overwritten, erased, popped, cleared, the container
// freed), as in Python; a proxy of another manager stored there is plain
// data. Named objects live as long as the server.
// shutdown(), or the destructor of the manager that started the server,
// stops it (Python's `with Manager() as m:`); the server also ends when the
// process that started it ends, however it ends (it watches it through a
// pidfd, so a manager started from a short-lived thread outlives the
// thread).
//
// Security: a proxy carries its manager's authkey, so that a child or a
// receiver can connect; whoever can read a proxy's bytes (sent through a
// Queue, stored in another manager) can use that manager. CPython only
// sends it to the children it spawns. What a peer can do with and without
// it: docs/security.md.
//
// The proxies are in mpxx/detail/manager_*.hpp, one family a header
// (containers, sync, queues, registered types), all included here.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "mpxx/connection.hpp"
#include "mpxx/context.hpp"
#include "mpxx/detail/manager_containers.hpp"
#include "mpxx/detail/manager_core.hpp"
#include "mpxx/detail/manager_proxy.hpp"
#include "mpxx/detail/manager_queues.hpp"
#include "mpxx/detail/manager_registered.hpp"
#include "mpxx/detail/manager_sync.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/sync.hpp"

namespace mpxx {

class BaseManager;

// ------------------------------------------------------- registered types

struct TypeOptions {
  // Calls to one object run one at a time (the default), or may overlap
  // (for types that block in a method and synchronize themselves).
  bool serialize_calls = true;
  // Python's `exposed`: the only methods clients may call, as
  // mpxx::exposed<&T::add, &T::get>(); empty (the default): any method the
  // client names (it can name only public ones).
  std::vector<std::uint64_t> exposed{};
};

// The methods a registered type exposes (TypeOptions::exposed).
template <auto... Methods>
std::vector<std::uint64_t> exposed() {
  return {detail::mgr::CallMethod<Methods>::id...};
}

// ------------------------------------------------------------------ managers

struct ManagerOptions {
  // Where the server listens. Default: a fresh Unix socket in the abstract
  // namespace (nothing to clean up in the file system).
  std::optional<Address> address{};
  // Default: the current process's authkey (children inherit it).
  std::optional<std::string> authkey{};
  // How the server process starts. Default: get_context().
  const Context* context = nullptr;
};

namespace detail::mgr {
struct ServerState;
struct ManagerState;
struct Registration {
  std::string type_id;
  std::string factory;  // [factory op id][callable state]
  bool serialize_calls = true;
  std::vector<std::uint64_t> exposed;  // method op ids; empty: all
  template <class A>
  void serialize(A& a) {
    a(type_id, factory, serialize_calls, exposed);
  }
};
}  // namespace detail::mgr

// The server side of a manager, in this process (Python's get_server()).
class Server {
 public:
  // Serves clients until one sends shutdown (BaseManager::shutdown), then
  // returns.
  void serve_forever();
  const Address& address() const;

 private:
  friend class BaseManager;
  explicit Server(std::shared_ptr<detail::mgr::ServerState> s) : st_(std::move(s)) {}
  std::shared_ptr<detail::mgr::ServerState> st_;
};

// multiprocessing.managers.BaseManager: start() a server process, connect()
// to a running one, or get_server().serve_forever() in this process. It
// offers every object SyncManager does, plus registered types.
class BaseManager {
 public:
  BaseManager();
  explicit BaseManager(ManagerOptions opts);
  BaseManager(Address address, std::string authkey);
  BaseManager(BaseManager&&) noexcept;
  BaseManager& operator=(BaseManager&&) noexcept;
  // Shuts down a server this object started.
  ~BaseManager();

  // Registers a type the server can make: `create<T>(type_id, args...)`
  // calls factory(args...) on the server (a function or captureless lambda
  // returning T or std::shared_ptr<T>; returning the same shared_ptr every
  // time shares one object between all clients). Without a factory, T is
  // default-constructed. Register before start() or get_server().
  template <class T, class F>
  void register_type(std::string type_id, F factory, TypeOptions opts = {}) {
    using Fn = std::decay_t<F>;
    static_assert(detail::CallableCodec<Fn>::transferable,
                  "mpxx: a factory must be a function, a captureless lambda or a serializable "
                  "function object (it runs in the server process)");
    detail::wire::Writer w;
    w.pod(detail::mgr::Factory<T, Fn>::id);
    detail::CallableCodec<Fn>::encode(w, factory);
    add_registration({std::move(type_id), std::string(reinterpret_cast<const char*>(w.data()), w.size()),
                      opts.serialize_calls, std::move(opts.exposed)});
  }
  template <class T>
  void register_type(std::string type_id, TypeOptions opts = {}) {
    register_type<T>(std::move(type_id), detail::mgr::Construct<T>{}, opts);
  }

  // Starts the server in a new process (Python's start()).
  void start();
  // Connects to a running server (Python's connect()); raises if it cannot
  // be reached or the authkey is wrong.
  void connect();
  // A server to run in this process.
  Server get_server();
  // Stops a server this object started and waits for it (join()).
  void shutdown();
  void join();
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_ns(detail::mgr::ns_of(timeout));
  }
  const Address& address() const;
  const std::string& authkey() const;
  // The server's pid when this object started it, else std::nullopt.
  std::optional<pid_t> pid() const;

  // ------------------------------------------------------------ objects
  template <class K, class V>
  DictProxy<K, V> dict() {
    return DictProxy<K, V>(create_builtin(detail::mgr::Kind::dict, "", nullptr));
  }
  template <class K, class V>
  DictProxy<K, V> dict(std::initializer_list<std::pair<const K, V>> items) {
    return dict(std::map<K, V>(items));
  }
  template <class Map>
    requires requires(const Map& m) { m.begin()->first; m.begin()->second; }
  auto dict(const Map& items) {
    using K = std::decay_t<decltype(items.begin()->first)>;
    using V = std::decay_t<decltype(items.begin()->second)>;
    auto d = dict<K, V>();
    if (!items.empty()) d.update(items);
    return d;
  }
  template <class T>
  ListProxy<T> list() {
    return ListProxy<T>(create_builtin(detail::mgr::Kind::list, "", nullptr));
  }
  template <class T>
  ListProxy<T> list(std::initializer_list<T> items) {
    return list(std::vector<T>(items));
  }
  template <class R>
    requires requires(const R& r) { std::begin(r); std::end(r); }
  auto list(const R& items) {
    using T = std::decay_t<decltype(*std::begin(items))>;
    return ListProxy<T>(create_builtin(detail::mgr::Kind::list, "", [&](detail::wire::Writer& w) {
      detail::mgr::put_values(w, std::begin(items), std::end(items));
    }));
  }
  NamespaceProxy Namespace() { return NamespaceProxy(create_builtin(detail::mgr::Kind::ns, "", nullptr)); }
  template <class T>
  ValueProxy<T> Value(const T& initial = T{}) {
    return ValueProxy<T>(create_builtin(detail::mgr::Kind::value, "",
                                        [&](detail::wire::Writer& w) { detail::mgr::put_value(w, initial); }));
  }
  template <class T>
  ArrayProxy<T> Array(const std::vector<T>& initial) {
    return ArrayProxy<T>(create_builtin(detail::mgr::Kind::array, "", [&](detail::wire::Writer& w) {
      detail::mgr::put_values(w, initial.begin(), initial.end());
    }));
  }
  template <class T>
  ArrayProxy<T> Array(std::initializer_list<T> initial) {
    return Array(std::vector<T>(initial));
  }
  AcquirerProxy Lock() { return acquirer(detail::mgr::Kind::lock, 0); }
  AcquirerProxy RLock() { return acquirer(detail::mgr::Kind::rlock, 0); }
  AcquirerProxy Semaphore(int value = 1) { return acquirer(detail::mgr::Kind::semaphore, value); }
  AcquirerProxy BoundedSemaphore(int value = 1) {
    return acquirer(detail::mgr::Kind::bounded_semaphore, value);
  }
  // Over a new RLock, or over `lock` (a Lock or RLock of this manager).
  ConditionProxy Condition();
  ConditionProxy Condition(const AcquirerProxy& lock);
  EventProxy Event() { return EventProxy(create_builtin(detail::mgr::Kind::event, "", nullptr)); }
  BarrierProxy Barrier(int parties) { return barrier(parties, -1); }
  template <class Rep, class Period>
  BarrierProxy Barrier(int parties, std::chrono::duration<Rep, Period> timeout) {
    return barrier(parties, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  template <class T>
  QueueProxy<T> Queue(std::int64_t maxsize = 0) {
    return QueueProxy<T>(create_builtin(detail::mgr::Kind::queue, "",
                                        [&](detail::wire::Writer& w) { w.pod(maxsize); }));
  }
  template <class T>
  JoinableQueueProxy<T> JoinableQueue(std::int64_t maxsize = 0) {
    return JoinableQueueProxy<T>(create_builtin(detail::mgr::Kind::joinable_queue, "",
                                                [&](detail::wire::Writer& w) { w.pod(maxsize); }));
  }

  // An object of a registered type, made by its factory on the server.
  // RemoteError if the server does not know type_id or the arguments do
  // not match the factory's parameters.
  template <class T, class... A>
  Proxy<T> create(const std::string& type_id, A&&... args) {
    using Args = std::tuple<detail::arg_t<A>...>;
    auto ref = create_builtin(detail::mgr::Kind::user, "", [&](detail::wire::Writer& w) {
      detail::mgr::put_str(w, type_id);
      detail::mgr::put_value(w, Args(std::forward<A>(args)...));
    });
    if (ref->token.type_tag != detail::wire::type_tag<T>())
      throw ValueError("mpxx: the server's '" + type_id + "' does not make a " + detail::wire::type_name<T>());
    return Proxy<T>(std::move(ref));
  }

  // The object called `name` on the server, made on first use (with default
  // arguments) and shared by every client that asks for the name; it lives
  // as long as the server. For dict, list, Namespace, Value, Queue,
  // JoinableQueue, Lock, RLock and Event proxies:
  //   auto jobs = m.named<mpxx::QueueProxy<std::string>>("jobs");
  template <class P>
  P named(const std::string& name) {
    if (name.empty()) throw ValueError("mpxx: a named object needs a non-empty name");
    if constexpr (std::is_same_v<P, AcquirerProxy>) {
      static_assert(!sizeof(P*), "mpxx: use named_lock(name, recursive) for locks");
    } else {
      return P(create_builtin(P().kind(), name, default_args<P>()));
    }
  }
  AcquirerProxy named_lock(const std::string& name, bool recursive = false);

 private:
  using Fill = std::function<void(detail::wire::Writer&)>;
  std::shared_ptr<detail::mgr::Ref> create_builtin(detail::mgr::Kind kind, const std::string& name,
                                                   const Fill& fill);
  AcquirerProxy acquirer(detail::mgr::Kind kind, int value);
  BarrierProxy barrier(int parties, std::int64_t timeout);
  bool join_ns(std::chrono::nanoseconds timeout);
  void add_registration(detail::mgr::Registration r);
  template <class P>
  static Fill default_args() {
    if constexpr (requires { typename P::value_type; }) {
      return [](detail::wire::Writer& w) { detail::mgr::put_value(w, typename P::value_type{}); };
    } else {
      switch (P().kind()) {
        case detail::mgr::Kind::queue:
        case detail::mgr::Kind::joinable_queue:
          return [](detail::wire::Writer& w) { w.pod(std::int64_t{0}); };
        case detail::mgr::Kind::list: return [](detail::wire::Writer& w) { w.pod(std::uint64_t{0}); };
        case detail::mgr::Kind::dict:
        case detail::mgr::Kind::ns:
        case detail::mgr::Kind::event: return nullptr;
        default: throw ValueError("mpxx: this kind of object cannot be made by name");
      }
    }
  }
  std::unique_ptr<detail::mgr::ManagerState> st_;
};

// Python's SyncManager: what Manager() returns.
class SyncManager : public BaseManager {
 public:
  using BaseManager::BaseManager;
};

// multiprocessing.Manager(): a started SyncManager, shut down when it goes
// out of scope (Python's `with Manager() as m:`).
//   mpxx::Manager m;                               // or: auto m = mpxx::Manager();
//   mpxx::Manager m({.context = &mpxx::get_context("spawn")});
class Manager : public SyncManager {
 public:
  explicit Manager(ManagerOptions opts = {}) : SyncManager(std::move(opts)) { start(); }
};

}  // namespace mpxx
