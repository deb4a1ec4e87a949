// src/manager/server.cpp - the manager's server: an accept loop, a thread
// per client connection, the object table (ids, names, reference counts),
// the dispatch of requests to the objects (see object.hpp; each family of
// object kinds has a file of its own) and shutdown.
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "channel/connection_state.hpp"
#include "sys/fd.hpp"
#include "manager/channel.hpp"
#include "manager/object.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/log.hpp"

namespace mpxx::detail::mgr {

namespace {

std::uint64_t random_id() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return (v >> 2) | (std::uint64_t{1} << 32);  // far from 0 and from wrapping
}

// Destroys objects no longer referenced. An object's destructor gives back
// what its values held and may free more: those are destroyed by the same
// loop, not by recursion, so a long chain of nested containers cannot
// exhaust the stack.
void free_objects(std::vector<std::shared_ptr<Obj>> dead) noexcept {
  thread_local std::vector<std::shared_ptr<Obj>>* freeing = nullptr;
  if (freeing) {
    for (auto& o : dead) freeing->push_back(std::move(o));
    return;
  }
  std::vector<std::shared_ptr<Obj>> pending = std::move(dead);
  freeing = &pending;
  while (!pending.empty()) {
    std::shared_ptr<Obj> o = std::move(pending.back());
    pending.pop_back();
    o.reset();
  }
  freeing = nullptr;
}

}  // namespace

struct ServerState final : Keeper {
  Address address;
  std::string authkey;
  std::unordered_map<std::string, Registration> types;
  std::optional<Listener> listener;
  std::atomic<bool> stopping{false};
  sys::UniqueFd parent;  // a pidfd of the process that started this server, if any
  sys::UniqueFd wake;    // an eventfd: stop() wakes the accept loop through it

  std::mutex mu;  // objects, names, clients
  std::unordered_map<std::uint64_t, std::shared_ptr<Obj>> objects;
  std::unordered_map<std::string, std::uint64_t> names;
  // Ids start at a random point, so a proxy that outlived its server does
  // not name an object of a new server at the same address.
  std::uint64_t next_id = random_id();
  std::unordered_map<std::uint64_t, int> clients;  // id -> fd
  std::uint64_t next_client = 1;
  CallMutexes call_mutexes;  // of the registered-type objects

  // Objects destroyed with the server give nothing back.
  std::atomic<bool> closing{false};
  ~ServerState() override { closing = true; }

  // The ids a stored value's header names.
  static std::vector<std::uint64_t> ids_of(const Blob& v) {
    std::uint64_t n;
    auto bytes = held_ids(std::as_bytes(std::span(v.data(), v.size())), n);
    std::vector<std::uint64_t> ids(static_cast<std::size_t>(n));
    if (n) std::memcpy(ids.data(), bytes.data(), bytes.size());
    return ids;
  }
  void keep_ids(const Blob& v) override {
    const auto ids = ids_of(v);
    std::lock_guard g(mu);
    for (std::uint64_t id : ids)
      if (!objects.count(id))
        fail(ErrKind::value, "mpxx: the value holds a proxy of object " + std::to_string(id) +
                                 ", which this manager has freed");
    for (std::uint64_t id : ids) objects.at(id)->refs.fetch_add(1);
  }
  void release_ids(const Blob& v) noexcept override {
    if (closing.load()) return;
    std::vector<std::shared_ptr<Obj>> dead;
    try {
      const auto ids = ids_of(v);
      std::lock_guard g(mu);
      for (std::uint64_t id : ids) decref_locked(id, dead);
    } catch (...) {  // a header that was checked when the value was kept
    }
    free_objects(std::move(dead));
  }
  // One reference less (mu held); an object left with none goes to `dead`.
  void decref_locked(std::uint64_t id, std::vector<std::shared_ptr<Obj>>& dead) {
    auto it = objects.find(id);
    if (it == objects.end()) return;
    if (it->second->refs.fetch_sub(1) == 1 && !it->second->pinned) {
      dead.push_back(std::move(it->second));
      objects.erase(it);
    }
  }

  std::shared_ptr<Obj> find(std::uint64_t id) {
    std::lock_guard g(mu);
    auto it = objects.find(id);
    if (it == objects.end())
      throw ProtocolError("mpxx: no object " + std::to_string(id) + " on this manager (it was freed, or the id is wrong)");
    return it->second;
  }
  std::uint64_t add(std::shared_ptr<Obj> o) {
    o->keeper = this;
    std::lock_guard g(mu);
    std::uint64_t id = next_id++;
    objects.emplace(id, std::move(o));
    return id;
  }

  std::shared_ptr<Obj> make(Kind kind, wire::Reader& in) {
    std::shared_ptr<Obj> o = make_kind(kind, in);
    o->keeper = this;
    try {
      o->keep_initial();
    } catch (...) {
      o->keeper = nullptr;  // kept nothing: gives nothing back
      throw;
    }
    return o;
  }
  std::shared_ptr<Obj> make_kind(Kind kind, wire::Reader& in) {
    switch (kind) {
      case Kind::dict: return make_dict();
      case Kind::list:
      case Kind::array: return make_list(kind, in);
      case Kind::ns: return make_namespace();
      case Kind::value: return make_value(in);
      case Kind::lock: return make_lock(false);
      case Kind::rlock: return make_lock(true);
      case Kind::semaphore:
      case Kind::bounded_semaphore: return make_semaphore(kind, in);
      case Kind::condition: return make_condition(in, [this](std::uint64_t id) { return find(id); });
      case Kind::event: return make_event();
      case Kind::barrier: return make_barrier(in);
      case Kind::queue:
      case Kind::joinable_queue: return make_queue(kind, in);
      case Kind::user: {
        std::string type_id = get_str(in);
        auto it = types.find(type_id);
        if (it == types.end()) throw ProtocolError("mpxx: this manager has no type registered as '" + type_id + "'");
        return make_user(it->second, in, call_mutexes);
      }
    }
    throw ProtocolError("mpxx: unknown object kind " + std::to_string(static_cast<int>(kind)));
  }

  // Handles one request; clears `reply` when none is sent, sets `stop` on a
  // shutdown request.
  void handle(Ctx& ctx, wire::Reader& in, wire::Writer& out, bool& reply, bool& stop) {
    auto op = in.pod<Op>();
    auto id = in.pod<std::uint64_t>();
    switch (op) {
      case Op::create: {
        auto kind = in.pod<Kind>();
        std::string name = get_str(in);
        if (!name.empty()) {
          std::lock_guard g(mu);
          auto it = names.find(name);
          if (it != names.end()) {
            auto& o = objects.at(it->second);
            if (o->kind != kind)
              fail(ErrKind::value, "mpxx: the manager's object '" + name + "' is of another kind");
            o->refs.fetch_add(1);
            out.pod(it->second);
            out.pod(o->type_tag);
            return;
          }
        }
        if (kind == Kind::user) ctx.ensure_acceptor();  // user code may wait for other clients
        auto obj = make(kind, in);
        in.expect_done("a create request");
        std::uint64_t tag = obj->type_tag;
        std::lock_guard g(mu);
        if (!name.empty()) {
          if (auto it = names.find(name); it != names.end()) {  // made meanwhile by another client
            if (objects.at(it->second)->kind != kind)
              fail(ErrKind::value, "mpxx: the manager's object '" + name + "' is of another kind");
            objects.at(it->second)->refs.fetch_add(1);
            out.pod(it->second);
            out.pod(objects.at(it->second)->type_tag);
            return;
          }
          obj->pinned = true;
        }
        std::uint64_t oid = next_id++;
        objects.emplace(oid, std::move(obj));
        if (!name.empty()) names.emplace(name, oid);
        out.pod(oid);
        out.pod(tag);
        return;
      }
      case Op::call: {
        auto obj = find(id);
        auto m = in.pod<Method>();
        obj->call(ctx, m, in, out);
        in.expect_done("a request");
        return;
      }
      case Op::typed: {
        auto obj = find(id);
        auto op_id = in.pod<std::uint64_t>();
        const OpDef* def = find_op(op_id);
        if (!def)
          throw ProtocolError("mpxx: unknown operation (id " + std::to_string(op_id) +
                              "): the manager's server program does not contain it");
        obj->check_exposed(op_id);
        ctx.ensure_acceptor();  // user code may wait for other clients
        obj->typed(ctx, *def, in, out);
        in.expect_done("a request");
        return;
      }
      case Op::incref:
      case Op::decref: {
        reply = false;
        std::vector<std::shared_ptr<Obj>> dead;
        {
          std::lock_guard g(mu);
          auto it = objects.find(id);
          if (it == objects.end()) return;
          if (op == Op::incref)
            it->second->refs.fetch_add(1);
          else
            decref_locked(id, dead);
        }
        free_objects(std::move(dead));  // outside mu: their destructors may give back more
        return;
      }
      case Op::shutdown: stop = true; return;
      case Op::ping: out.pod(static_cast<std::uint32_t>(::getpid())); return;
    }
    throw ProtocolError("mpxx: unknown request kind " + std::to_string(static_cast<int>(op)));
  }

  std::mutex stop_mu;
  std::condition_variable stop_cv;
  // Called once on the trusted connection's thread, after its first reply
  // or when it stays idle: starts accepting other clients.
  std::function<void()> start_accepting;

  void stop() {
    if (stopping.exchange(true)) return;
    {
      std::lock_guard g(stop_mu);
      stop_cv.notify_all();
    }
    {
      std::lock_guard g(mu);
      for (auto& [_, fd] : clients) ::shutdown(fd, SHUT_RDWR);
    }
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake.get(), &one, sizeof one);  // the accept loop's
  }
  void wait_stopped() {
    std::unique_lock lk(stop_mu);
    stop_cv.wait(lk, [&] { return stopping.load(); });
  }

  void serve_client(Connection conn, bool trusted) {
    Ctx ctx;
    ctx.fd = conn.fileno();
    ctx.stopping = &stopping;
    {
      std::lock_guard g(mu);
      ctx.client = next_client++;
      clients.emplace(ctx.client, ctx.fd);
    }
    // Leaves the table (where stop() finds fds to shut down) before the fd
    // is closed, so stop() never touches a reused fd number.
    struct Listed {
      ServerState& s;
      std::uint64_t id;
      ~Listed() {
        std::lock_guard g(s.mu);
        s.clients.erase(id);
      }
    };
    std::optional<Channel> channel;
    Listed listed{*this, ctx.client};
    ThrowTrace trace;
    try {
      Channel& c = channel.emplace(std::move(conn));
      wire::Writer out;
      // The trusted connection's thread starts the accepting thread (a new
      // thread costs ~0.5 ms in a fresh process, the whole of a short-lived
      // manager's work) only once it matters: when its client idles for a
      // millisecond, is about to block, or 2 ms have passed. Until it has
      // started, this thread never sleeps in recv(): a client that idles
      // would keep every other one out (a failed start is retried every
      // 10 ms, and said once).
      bool start_failed = false;
      std::function<void()> accept_others = [&] {
        if (!trusted || !start_accepting) return;
        try {
          start_accepting();
          start_accepting = nullptr;
        } catch (const std::exception& e) {  // no thread to be had: try again later
          if (!std::exchange(start_failed, true))
            get_logger().warning(std::string("mpxx: manager server: cannot start accepting (retrying): ") +
                                 e.what());
        }
      };
      if (trusted && start_accepting) ctx.before_block = &accept_others;
      auto accept_by = Clock::now() + std::chrono::milliseconds(2);
      for (;;) {
        while (trusted && start_accepting) {
          if (Clock::now() > accept_by) accept_others();
          if (!start_accepting || c.buffered()) break;
          pollfd p{ctx.fd, POLLIN, 0};
          if (::poll(&p, 1, start_failed ? 10 : 1) > 0) break;  // a request first
          accept_others();  // idle (or a signal): now
        }
        std::string_view msg = c.recv();
        out.clear();
        out.pod(std::uint8_t{0});
        bool reply = true, stop_now = false;
        try {
          wire::Reader in(std::as_bytes(std::span(msg.data(), msg.size())));
          handle(ctx, in, out, reply, stop_now);
        } catch (const Abandoned&) {
          break;
        } catch (const ServerFail& f) {
          error(out, f.kind, f.message);
        } catch (const KeyError& e) {
          error(out, ErrKind::key, e.what());
        } catch (const IndexError& e) {
          error(out, ErrKind::index, e.what());
        } catch (const AttributeError& e) {
          error(out, ErrKind::attribute, e.what());
        } catch (...) {
          // Everything else - a registered method's exception, a request
          // that does not decode - is the client's RemoteError.
          ExceptionInfo info = describe_current_exception();
          out.clear();
          out.pod(std::uint8_t{1});
          out.pod(ErrKind::remote);
          put_str(out, info.message);
          encode_exception(out, info);
        }
        if (reply) c.send(out.bytes());
        ctx.after_request(*this);
        if (stop_now) {
          stop();
          break;
        }
      }
    } catch (...) {
      // The client left (EOF, a reset, a corrupt stream): its thread ends.
    }
    auto held = std::move(ctx.held);
    for (auto& [_, w] : held)
      if (auto o = w.lock()) o->client_gone(ctx.client);
    ctx.after_request(*this);
    ctx.after_request(*this);
  }

  static void error(wire::Writer& out, ErrKind k, const std::string& msg) {
    out.clear();
    out.pod(std::uint8_t{1});
    out.pod(k);
    put_str(out, msg);
  }
};

std::shared_ptr<ServerState> make_server(const ServerConfig& cfg) {
  auto s = std::make_shared<ServerState>();
  if (cfg.parent > 0) s->parent = sys::pidfd_open(cfg.parent);  // ESRCH: it is gone already
  s->authkey = cfg.authkey;
  for (const auto& r : cfg.types) s->types.insert_or_assign(r.type_id, r);
  s->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->wake) sys::throw_errno("eventfd");
  // The Listener authenticates clients (many at once, none able to stall
  // another); a thread is started only for one that passed.
  s->listener.emplace(Address{cfg.host, cfg.port},
                      cfg.authkey.empty() ? std::nullopt : std::optional<std::string>(cfg.authkey), 128);
  s->address = s->listener->address();
  return s;
}

const Address& server_address(const ServerState& s) { return s.address; }

std::size_t fuzz_requests(std::span<const std::byte> input) {
  // A server with no listener and one object of each built-in kind (ids 1
  // to 14), fed the requests in `input`, each [u16 length][bytes].
  ServerState st;
  st.next_id = 1;
  Kind kinds[] = {Kind::dict, Kind::list, Kind::ns, Kind::value, Kind::array, Kind::lock, Kind::rlock,
                  Kind::semaphore, Kind::bounded_semaphore, Kind::condition, Kind::event, Kind::barrier,
                  Kind::queue, Kind::joinable_queue};
  for (Kind k : kinds) {
    wire::Writer init;
    if (k == Kind::value) put_str(init, "v");
    if (k == Kind::semaphore || k == Kind::bounded_semaphore || k == Kind::queue || k == Kind::joinable_queue)
      init.pod(std::int64_t{1});
    if (k == Kind::condition) init.pod(std::uint64_t{0});
    if (k == Kind::barrier) {
      init.pod(std::int64_t{2});
      init.pod(std::int64_t{-1});
    }
    wire::Reader r(init.bytes());
    st.add(st.make(k, r));
  }
  Ctx ctx;
  ctx.client = 1;
  ctx.stopping = &st.stopping;
  ctx.never_block = true;
  std::size_t errors = 0;
  wire::Reader all(input);
  while (all.remaining() >= 2) {
    auto n = all.pod<std::uint16_t>();
    if (n > all.remaining()) break;
    wire::Reader in(all.take(n));
    wire::Writer out;
    bool reply = true, stop = false;
    try {
      st.handle(ctx, in, out, reply, stop);
    } catch (const Abandoned&) {
      ++errors;
    } catch (const ServerFail&) {
      ++errors;
    } catch (const Error&) {
      ++errors;
    }
    ctx.after_request(st);
  }
  ctx.after_request(st);
  ctx.after_request(st);
  return errors;
}

void serve_process(const std::shared_ptr<ServerState>& s, Connection trusted) {
  s->start_accepting = [s] { std::thread([s] { serve(s); }).detach(); };
  s->serve_client(std::move(trusted), true);
  while (s->start_accepting && !s->stopping.load()) {
    try {
      std::exchange(s->start_accepting, nullptr)();
    } catch (const std::exception&) {
      s->start_accepting = [s] { std::thread([s] { serve(s); }).detach(); };
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  s->wait_stopped();
  // The process ends next, maybe before the accepting thread closes the
  // listener: a socket file must not outlive the server.
  if (s->address.is_unix() && !s->address.host.empty() && s->address.host[0] != '@')
    ::unlink(s->address.host.c_str());
}

void serve(const std::shared_ptr<ServerState>& s) {
  std::vector<int> wake{s->wake.get()};
  // The server does not outlive the process that started it.
  if (s->parent) wake.push_back(s->parent.get());
  while (!s->stopping.load()) {
    std::optional<Connection> c;
    try {
      c = ListenerAccess::accept_or_wake(*s->listener, wake);
    } catch (const OSError& e) {
      if (s->stopping.load()) break;
      int err = e.code();
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Out of a resource, not a client's fault: no busy loop meanwhile.
        get_logger().warning(std::string("mpxx: manager server: accept failed: ") + e.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;  // else one client's handshake failed: it is closed
    } catch (const Error&) {
      continue;  // a client failed authentication, stalled or sent garbage: it is closed
    } catch (const std::exception& e) {  // std::bad_alloc: the server goes on
      get_logger().warning(std::string("mpxx: manager server: accept failed: ") + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!c) {
      if (s->parent && sys::wait_readable(s->parent.get(), sys::Deadline::after({}))) s->stop();
      continue;
    }
    if (s->stopping.load()) break;
    try {
      std::thread([s, c = std::move(*c)]() mutable { s->serve_client(std::move(c), false); }).detach();
    } catch (const std::exception& e) {  // out of threads: this client is dropped, the server goes on
      get_logger().warning(std::string("mpxx: manager server: cannot serve a new client: ") + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  s->listener->close();
}

}  // namespace mpxx::detail::mgr

namespace mpxx {

void Server::serve_forever() { detail::mgr::serve(st_); }
const Address& Server::address() const { return detail::mgr::server_address(*st_); }

}  // namespace mpxx
