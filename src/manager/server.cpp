// The manager's server: an accept loop, a thread per client connection, an
// object table, and the built-in objects. Values are opaque blobs here
// (see detail/manager_core.hpp); only typed operations decode them.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include "channel/connection_state.hpp"
#include "sys/fd.hpp"
#include "manager/channel.hpp"
#include "manager/protocol.hpp"
#include "mpxx/detail/exception.hpp"
#include "mpxx/log.hpp"

namespace mpxx::detail::mgr {

namespace {

using Clock = std::chrono::steady_clock;
using Blob = std::string;

Blob blob(wire::Reader& r) {
  auto b = get_blob(r);
  return Blob(reinterpret_cast<const char*>(b.data()), b.size());
}
void put(wire::Writer& w, const Blob& b) { put_blob(w, std::as_bytes(std::span(b.data(), b.size()))); }
void put_u8(wire::Writer& w, bool b) { w.pod(static_cast<std::uint8_t>(b)); }

// Thrown inside a blocking wait when its client has gone away or the server
// is stopping: the call is abandoned without a reply.
struct Abandoned {};

struct ServerFail {
  ErrKind kind;
  std::string message;
};
[[noreturn]] void fail(ErrKind k, std::string m) { throw ServerFail{k, std::move(m)}; }

struct Obj;

// The client connection a request came from.
struct Ctx {
  std::uint64_t client = 0;
  int fd = -1;
  const std::atomic<bool>* stopping = nullptr;
  // Locks this client took, released if it goes.
  std::unordered_map<const Obj*, std::weak_ptr<Obj>> held;
  std::function<void()>* before_block = nullptr;  // run once before a wait sleeps or user code runs
  bool never_block = false;                       // (the fuzzer's server)

  void hold(const std::shared_ptr<Obj>& o) {
    if (held.size() > 64)
      std::erase_if(held, [](const auto& kv) { return kv.second.expired(); });
    held.emplace(o.get(), o);
  }
  void ensure_acceptor() {
    if (before_block) (*std::exchange(before_block, nullptr))();
  }

  bool peer_gone() const {
    pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }
  // Waits until pred() (true), the timeout (false: -1 none, 0 no wait), the
  // client leaving or the server stopping (Abandoned).
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, std::int64_t timeout,
            Pred pred) {
    if (pred()) return true;
    if (timeout == 0) return false;
    if (never_block) throw Abandoned{};
    if (before_block) {
      lk.unlock();
      ensure_acceptor();
      lk.lock();
      if (pred()) return true;
    }
    // Beyond a century is forever (and a hostile value cannot overflow).
    constexpr std::int64_t kCentury = 100LL * 365 * 24 * 3600 * 1000000000LL;
    auto deadline = timeout < 0 || timeout > kCentury ? Clock::time_point::max()
                                                      : Clock::now() + std::chrono::nanoseconds(timeout);
    for (;;) {
      auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds(100));
      if (cv.wait_until(lk, slice, pred)) {
        // Woken for a client that has gone: leave what woke it (a unit, an
        // item, the lock) to the next waiter instead of consuming it.
        if (peer_gone()) {
          cv.notify_one();
          throw Abandoned{};
        }
        return true;
      }
      if (Clock::now() >= deadline) return false;
      if (stopping->load() || peer_gone()) throw Abandoned{};
    }
  }
};

struct Obj : std::enable_shared_from_this<Obj> {
  Kind kind;
  std::uint64_t type_tag = 0;
  std::atomic<std::int64_t> refs{1};
  bool pinned = false;  // named: lives as long as the server
  explicit Obj(Kind k) : kind(k) {}
  virtual ~Obj() = default;
  virtual void call(Ctx&, Method m, wire::Reader&, wire::Writer&) {
    fail(ErrKind::remote, "mpxx: method " + std::to_string(static_cast<int>(m)) + " does not apply here");
  }
  virtual void typed(Ctx&, const OpDef& op, wire::Reader&, wire::Writer&) {
    throw ProtocolError(std::string("mpxx: operation '") + op.name + "' does not apply to this object");
  }
  virtual void client_gone(std::uint64_t) {}
};

std::uint64_t random_id() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return (v >> 2) | (std::uint64_t{1} << 32);  // far from 0 and from wrapping
}

[[noreturn]] void bad_method(Method m, const char* what) {
  throw ProtocolError("mpxx: unknown method " + std::to_string(static_cast<int>(m)) + " for a " + what);
}

// ------------------------------------------------------------------- dict

struct Dict : Obj {
  std::mutex mu;
  std::vector<std::optional<std::pair<Blob, Blob>>> entries;  // insertion order, holes
  std::unordered_map<Blob, std::size_t> index;
  Dict() : Obj(Kind::dict) {}

  std::pair<Blob, Blob>* find(const Blob& k) {
    auto it = index.find(k);
    return it == index.end() ? nullptr : &*entries[it->second];
  }
  void set(Blob k, Blob v) {
    if (auto* e = find(k)) {
      e->second = std::move(v);
      return;
    }
    index.emplace(k, entries.size());
    entries.emplace_back(std::pair{std::move(k), std::move(v)});
  }
  std::optional<Blob> take(const Blob& k) {
    auto it = index.find(k);
    if (it == index.end()) return std::nullopt;
    Blob v = std::move(entries[it->second]->second);
    entries[it->second].reset();
    index.erase(it);
    compact();
    return v;
  }
  void compact() {
    while (!entries.empty() && !entries.back()) entries.pop_back();
    if (entries.size() < 2 * index.size() + 16) return;
    std::vector<std::optional<std::pair<Blob, Blob>>> live;
    live.reserve(index.size());
    for (auto& e : entries)
      if (e) {
        index[e->first] = live.size();
        live.push_back(std::move(e));
      }
    entries = std::move(live);
  }
  template <class F>
  void each(F f) {
    for (auto& e : entries)
      if (e) f(*e);
  }

  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::d_get: {
        auto* e = find(blob(in));
        if (!e) fail(ErrKind::key, "key not found");
        put(out, e->second);
        return;
      }
      case Method::d_find: {
        auto* e = find(blob(in));
        put_u8(out, e != nullptr);
        if (e) put(out, e->second);
        return;
      }
      case Method::d_set: {
        Blob k = blob(in);
        set(std::move(k), blob(in));
        return;
      }
      case Method::d_contains: put_u8(out, find(blob(in)) != nullptr); return;
      case Method::d_take: {
        auto v = take(blob(in));
        put_u8(out, v.has_value());
        if (v) put(out, *v);
        return;
      }
      case Method::d_setdefault: {
        Blob k = blob(in);
        Blob v = blob(in);
        if (auto* e = find(k)) {
          put(out, e->second);
        } else {
          put(out, v);
          set(std::move(k), std::move(v));
        }
        return;
      }
      case Method::d_update: {
        auto n = in.pod<std::uint64_t>();
        wire::check_size_prefix(in, n);
        std::vector<std::pair<Blob, Blob>> items;  // all decoded before any is applied
        for (std::uint64_t i = 0; i < n; ++i) {
          Blob k = blob(in);
          items.emplace_back(std::move(k), blob(in));
        }
        for (auto& [k, v] : items) set(std::move(k), std::move(v));
        return;
      }
      case Method::d_keys:
      case Method::d_values: {
        out.pod(static_cast<std::uint64_t>(index.size()));
        each([&](auto& e) { put(out, m == Method::d_keys ? e.first : e.second); });
        return;
      }
      case Method::d_items: {
        out.pod(static_cast<std::uint64_t>(index.size()));
        each([&](auto& e) {
          put(out, e.first);
          put(out, e.second);
        });
        return;
      }
      case Method::d_len: out.pod(static_cast<std::int64_t>(index.size())); return;
      case Method::d_clear:
        entries.clear();
        index.clear();
        return;
      case Method::d_popitem: {
        if (index.empty()) fail(ErrKind::key, "popitem(): dictionary is empty");
        Blob k = entries.back()->first;
        put(out, k);
        put(out, *take(k));
        return;
      }
      default: bad_method(m, "dict");
    }
  }

  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::slot) Obj::typed(ctx, op, in, out);
    Blob k = blob(in);
    std::lock_guard g(mu);
    auto* e = find(k);
    Blob slot = e ? e->second : Blob();
    bool present = e != nullptr;
    op.slot(slot, present, in, out);
    if (present) set(std::move(k), std::move(slot));
  }
};

// --------------------------------------------------------- list and Array

struct List : Obj {
  std::mutex mu;
  std::vector<Blob> items;
  explicit List(Kind k) : Obj(k) {}

  std::size_t at(std::int64_t i, const char* what) const {
    auto n = static_cast<std::int64_t>(items.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) fail(ErrKind::index, std::string(kind == Kind::array ? "array" : "list") + what);
    return static_cast<std::size_t>(i);
  }
  // Python's slice.indices for one bound.
  static std::int64_t clamp(std::int64_t i, std::int64_t n, std::int64_t lo, std::int64_t hi) {
    if (i < 0) i += n;
    return std::clamp(i, lo, hi);
  }
  void growable(Method m) const {
    if (kind == Kind::array)
      fail(ErrKind::value, "mpxx: an Array has a fixed size (method " + std::to_string(static_cast<int>(m)) + ")");
  }

  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    auto n = static_cast<std::int64_t>(items.size());
    switch (m) {
      case Method::l_get: put(out, items[at(in.pod<std::int64_t>(), " index out of range")]); return;
      case Method::l_set: {
        std::size_t i = at(in.pod<std::int64_t>(), " assignment index out of range");
        items[i] = blob(in);
        return;
      }
      case Method::l_len: out.pod(n); return;
      case Method::l_slice: {
        auto start = in.pod<std::int64_t>(), stop = in.pod<std::int64_t>(), step = in.pod<std::int64_t>();
        if (step == 0) fail(ErrKind::value, "slice step cannot be zero");
        step = std::clamp<std::int64_t>(step, -(n + 1), n + 1);  // same slice, no overflow
        std::vector<std::size_t> idx;
        if (step > 0) {
          std::int64_t b = start == kNone ? 0 : clamp(start, n, 0, n);
          std::int64_t e = stop == kNone ? n : clamp(stop, n, 0, n);
          for (std::int64_t i = b; i < e; i += step) idx.push_back(static_cast<std::size_t>(i));
        } else {
          std::int64_t b = start == kNone ? n - 1 : clamp(start, n, -1, n - 1);
          std::int64_t e = stop == kNone ? -1 : clamp(stop, n, -1, n - 1);
          for (std::int64_t i = b; i > e; i += step) idx.push_back(static_cast<std::size_t>(i));
        }
        out.pod(static_cast<std::uint64_t>(idx.size()));
        for (auto i : idx) put(out, items[i]);
        return;
      }
      default: break;
    }
    growable(m);
    switch (m) {
      case Method::l_append: items.push_back(blob(in)); return;
      case Method::l_extend: {
        auto k = in.pod<std::uint64_t>();
        wire::check_size_prefix(in, k);
        std::vector<Blob> more;
        for (std::uint64_t i = 0; i < k; ++i) more.push_back(blob(in));
        for (auto& b : more) items.push_back(std::move(b));
        return;
      }
      case Method::l_insert: {
        auto i = clamp(in.pod<std::int64_t>(), n, 0, n);
        items.insert(items.begin() + i, blob(in));
        return;
      }
      case Method::l_pop: {
        auto i = in.pod<std::int64_t>();
        if (items.empty()) fail(ErrKind::index, "pop from empty list");
        std::size_t k = at(i, " pop index out of range");
        put(out, items[k]);
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(k));
        return;
      }
      case Method::l_erase: {
        std::size_t k = at(in.pod<std::int64_t>(), " assignment index out of range");
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(k));
        return;
      }
      case Method::l_remove: {
        auto it = std::find(items.begin(), items.end(), blob(in));
        if (it == items.end()) fail(ErrKind::value, "list.remove(x): x not in list");
        items.erase(it);
        return;
      }
      case Method::l_index: {
        Blob v = blob(in);
        auto b = clamp(in.pod<std::int64_t>(), n, 0, n), e = clamp(in.pod<std::int64_t>(), n, 0, n);
        for (auto i = b; i < e; ++i)
          if (items[static_cast<std::size_t>(i)] == v) {
            out.pod(i);
            return;
          }
        fail(ErrKind::value, "x is not in list");
      }
      case Method::l_count: {
        Blob v = blob(in);
        out.pod(static_cast<std::uint64_t>(std::count(items.begin(), items.end(), v)));
        return;
      }
      case Method::l_reverse: std::reverse(items.begin(), items.end()); return;
      case Method::l_clear: items.clear(); return;
      default: bad_method(m, "list");
    }
  }

  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::items) Obj::typed(ctx, op, in, out);
    std::lock_guard g(mu);
    op.items(items, in, out);
  }
};

// -------------------------------------------------------- Namespace, Value

struct Namespace : Obj {
  std::mutex mu;
  std::vector<std::pair<std::string, Blob>> attrs;  // in the order first set
  Namespace() : Obj(Kind::ns) {}
  std::pair<std::string, Blob>* find(const std::string& name) {
    for (auto& a : attrs)
      if (a.first == name) return &a;
    return nullptr;
  }
  [[noreturn]] static void missing(const std::string& name) {
    fail(ErrKind::attribute, "'Namespace' object has no attribute '" + name + "'");
  }
  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::n_get: {
        std::string name = get_str(in);
        auto* a = find(name);
        if (!a) missing(name);
        put(out, a->second);
        return;
      }
      case Method::n_set: {
        std::string name = get_str(in);
        Blob v = blob(in);
        if (auto* a = find(name))
          a->second = std::move(v);
        else
          attrs.emplace_back(std::move(name), std::move(v));
        return;
      }
      case Method::n_del: {
        std::string name = get_str(in);
        auto* a = find(name);
        if (!a) missing(name);
        attrs.erase(attrs.begin() + (a - attrs.data()));
        return;
      }
      case Method::n_has: put_u8(out, find(get_str(in)) != nullptr); return;
      case Method::n_names:
        out.pod(static_cast<std::uint64_t>(attrs.size()));
        for (auto& a : attrs) put_str(out, a.first);
        return;
      default: bad_method(m, "Namespace");
    }
  }
};

struct Value : Obj {
  std::mutex mu;
  Blob v;
  Value() : Obj(Kind::value) {}
  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::v_get: put(out, v); return;
      case Method::v_set: v = blob(in); return;
      default: bad_method(m, "Value");
    }
  }
  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::slot) Obj::typed(ctx, op, in, out);
    std::lock_guard g(mu);
    Blob slot = v;
    bool present = true;
    op.slot(slot, present, in, out);
    v = std::move(slot);
  }
};

// ------------------------------------------------------------------- sync

// All synchronization objects of a server share one mutex, so that a
// Condition can release its lock and start waiting in one step.
std::mutex& sync_mu() {
  static auto* m = new std::mutex;
  return *m;
}

struct LockObj : Obj {
  bool recursive;
  std::uint64_t owner = 0;
  std::int64_t count = 0;
  std::condition_variable cv;
  explicit LockObj(bool rec) : Obj(rec ? Kind::rlock : Kind::lock), recursive(rec) {}

  bool acquire(Ctx& ctx, std::unique_lock<std::mutex>& lk, std::int64_t timeout) {
    if (recursive && count > 0 && owner == ctx.client) {
      if (count == INT64_MAX) fail(ErrKind::runtime, "RLock acquired too many times");
      ++count;
      return true;
    }
    if (!ctx.wait(lk, cv, timeout, [&] { return count == 0; })) return false;
    take(ctx, 1);
    return true;
  }
  void take(Ctx& ctx, std::int64_t n) {
    owner = ctx.client;
    count = n;
    ctx.hold(shared_from_this());
  }
  void release(Ctx& ctx) {
    if (count == 0) fail(ErrKind::runtime, recursive ? "cannot release un-acquired lock" : "release unlocked lock");
    if (recursive && owner != ctx.client) fail(ErrKind::runtime, "cannot release un-acquired lock");
    if (--count == 0) {
      owner = 0;
      cv.notify_one();
    }
  }
  bool owned_by(const Ctx& ctx) const { return count > 0 && owner == ctx.client; }
  void client_gone(std::uint64_t client) override {
    std::lock_guard g(sync_mu());
    if (count > 0 && owner == client) {
      count = 0;
      owner = 0;
      cv.notify_one();
      get_logger().warning("mpxx: a manager client died holding a lock; the lock was released");
    }
  }
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: put_u8(out, acquire(ctx, lk, in.pod<std::int64_t>())); return;
      case Method::a_release: release(ctx); return;
      case Method::a_locked: put_u8(out, count > 0); return;
      default: bad_method(m, "lock");
    }
  }
};

struct SemObj : Obj {
  std::int64_t value, max;  // max < 0: unbounded
  std::condition_variable cv;
  SemObj(Kind k, std::int64_t v) : Obj(k), value(v), max(k == Kind::bounded_semaphore ? v : -1) {}
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: {
        bool ok = ctx.wait(lk, cv, in.pod<std::int64_t>(), [&] { return value > 0; });
        if (ok) --value;
        put_u8(out, ok);
        return;
      }
      case Method::a_release:
        if ((max >= 0 && value >= max) || value == INT64_MAX)
          fail(ErrKind::value, "Semaphore released too many times");
        ++value;
        cv.notify_one();
        return;
      case Method::a_locked: put_u8(out, value == 0); return;
      default: bad_method(m, "semaphore");
    }
  }
};

struct CondObj : Obj {
  std::shared_ptr<LockObj> lock;
  struct Waiter {
    bool notified = false;
  };
  std::deque<std::shared_ptr<Waiter>> waiters;
  std::condition_variable cv;
  explicit CondObj(std::shared_ptr<LockObj> l) : Obj(Kind::condition), lock(std::move(l)) {}

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::a_acquire: put_u8(out, lock->acquire(ctx, lk, in.pod<std::int64_t>())); return;
      case Method::a_release: lock->release(ctx); return;
      case Method::c_wait: {
        auto timeout = in.pod<std::int64_t>();
        if (!lock->owned_by(ctx)) fail(ErrKind::runtime, "cannot wait on un-acquired lock");
        auto w = std::make_shared<Waiter>();
        waiters.push_back(w);
        std::int64_t saved = lock->count;
        lock->count = 0;
        lock->owner = 0;
        lock->cv.notify_one();
        bool got;
        try {
          got = ctx.wait(lk, cv, timeout, [&] { return w->notified; });
        } catch (...) {
          if (w->notified && !waiters.empty()) {  // a notify meant for someone: pass it on
            waiters.front()->notified = true;
            waiters.pop_front();
            cv.notify_all();
          }
          std::erase(waiters, w);
          throw;
        }
        if (!got) std::erase(waiters, w);
        // Re-acquire, however long it takes, as threading.Condition does.
        ctx.wait(lk, lock->cv, -1, [&] { return lock->count == 0; });
        lock->take(ctx, saved);
        put_u8(out, got);
        return;
      }
      case Method::c_notify: {
        auto n = in.pod<std::int64_t>();
        if (!lock->owned_by(ctx) && lock->recursive)
          fail(ErrKind::runtime, "cannot notify on un-acquired lock");
        if (lock->count == 0) fail(ErrKind::runtime, "cannot notify on un-acquired lock");
        for (; !waiters.empty() && n != 0; --n) {
          waiters.front()->notified = true;
          waiters.pop_front();
        }
        cv.notify_all();
        return;
      }
      default: bad_method(m, "Condition");
    }
  }
};

struct EventObj : Obj {
  bool flag = false;
  std::condition_variable cv;
  EventObj() : Obj(Kind::event) {}
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::e_is_set: in.pod<std::int64_t>(); put_u8(out, flag); return;
      case Method::e_set: flag = true; cv.notify_all(); return;
      case Method::e_clear: flag = false; return;
      case Method::e_wait: put_u8(out, ctx.wait(lk, cv, in.pod<std::int64_t>(), [&] { return flag; })); return;
      default: bad_method(m, "Event");
    }
  }
};

struct BarrierObj : Obj {
  // One record per round; waiters hold theirs, so an abort or a reset ends
  // exactly the round they are in, whatever happens after.
  struct Round {
    bool passed = false, broken = false;
  };
  std::int64_t parties, timeout;
  std::int64_t count = 0;
  std::shared_ptr<Round> round = std::make_shared<Round>();
  std::condition_variable cv;
  BarrierObj(std::int64_t p, std::int64_t t) : Obj(Kind::barrier), parties(p), timeout(t) {}

  void break_round() {
    round->broken = true;
    count = 0;
    cv.notify_all();
  }
  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(sync_mu());
    switch (m) {
      case Method::b_wait: {
        auto t = in.pod<std::int64_t>();
        if (t == -2) t = timeout;
        if (round->broken) fail(ErrKind::broken_barrier, "barrier is broken");
        auto mine = round;
        std::int64_t index = count++;
        if (count == parties) {
          mine->passed = true;
          round = std::make_shared<Round>();
          count = 0;
          cv.notify_all();
          out.pod(index);
          return;
        }
        bool ok;
        try {
          ok = ctx.wait(lk, cv, t, [&] { return mine->passed || mine->broken; });
        } catch (...) {
          if (!mine->passed && !mine->broken) break_round();  // a party left: nobody passes
          throw;
        }
        if (mine->passed) {
          out.pod(index);
          return;
        }
        if (!ok && !mine->broken) break_round();  // this party's timeout breaks it for all
        fail(ErrKind::broken_barrier, "barrier is broken");
      }
      case Method::b_abort: break_round(); return;
      case Method::b_reset:
        if (count > 0) break_round();  // the current waiters get BrokenBarrierError
        round = std::make_shared<Round>();
        count = 0;
        return;
      case Method::b_parties: out.pod(parties); return;
      case Method::b_n_waiting: out.pod(count); return;
      case Method::b_broken: in.pod<std::int64_t>(); put_u8(out, round->broken); return;
      default: bad_method(m, "Barrier");
    }
  }
};

// ------------------------------------------------------------------- queue

struct QueueObj : Obj {
  std::mutex mu;
  std::condition_variable not_empty, not_full, all_done;
  std::deque<Blob> items;
  std::int64_t maxsize, unfinished = 0;
  QueueObj(Kind k, std::int64_t max) : Obj(k), maxsize(max) {}

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(mu);
    switch (m) {
      case Method::q_put: {
        Blob v = blob(in);
        auto t = in.pod<std::int64_t>();
        auto room = [&] { return maxsize <= 0 || static_cast<std::int64_t>(items.size()) < maxsize; };
        if (!ctx.wait(lk, not_full, t, room)) fail(ErrKind::full, "queue is full");
        items.push_back(std::move(v));
        ++unfinished;
        not_empty.notify_one();
        return;
      }
      case Method::q_get: {
        auto t = in.pod<std::int64_t>();
        if (!ctx.wait(lk, not_empty, t, [&] { return !items.empty(); })) fail(ErrKind::empty, "queue is empty");
        put(out, items.front());
        items.pop_front();
        not_full.notify_one();
        return;
      }
      case Method::q_qsize:
        out.pod(static_cast<std::int64_t>(items.size()));
        out.pod(maxsize);
        return;
      case Method::q_task_done:
        if (kind != Kind::joinable_queue) bad_method(m, "Queue");
        if (unfinished <= 0) fail(ErrKind::value, "task_done() called too many times");
        if (--unfinished == 0) all_done.notify_all();
        return;
      case Method::q_join:
        if (kind != Kind::joinable_queue) bad_method(m, "Queue");
        put_u8(out, ctx.wait(lk, all_done, in.pod<std::int64_t>(), [&] { return unfinished == 0; }));
        return;
      default: bad_method(m, "Queue");
    }
  }
};

// ------------------------------------------------------- registered types

struct UserObj : Obj {
  std::shared_ptr<void> obj;
  std::shared_ptr<std::mutex> mu;  // one per T object, however many ids name it; null: calls overlap
  const Registration* reg;         // lives as long as the server
  UserObj(std::shared_ptr<void> o, std::uint64_t tag, std::shared_ptr<std::mutex> m, const Registration* r)
      : Obj(Kind::user), obj(std::move(o)), mu(std::move(m)), reg(r) {
    type_tag = tag;
  }
  void check_exposed(std::uint64_t op_id) const {
    if (!reg->exposed.empty() && std::find(reg->exposed.begin(), reg->exposed.end(), op_id) == reg->exposed.end())
      throw ProtocolError("mpxx: '" + reg->type_id + "' does not expose this method");
  }
  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::method || op.type_tag != type_tag) Obj::typed(ctx, op, in, out);
    std::unique_lock<std::mutex> lk;
    if (mu) lk = std::unique_lock(*mu);
    op.method(obj.get(), in, out);
  }
};

}  // namespace

// ------------------------------------------------------------------ server

struct ServerState {
  Address address;
  std::string authkey;
  std::unordered_map<std::string, Registration> types;
  std::optional<Listener> listener;
  std::atomic<bool> stopping{false};
  std::atomic<bool> accepting{false};  // serve() runs
  sys::UniqueFd parent;  // a pidfd of the process that started this server, if any

  std::mutex mu;  // objects, names, clients
  std::unordered_map<std::uint64_t, std::shared_ptr<Obj>> objects;
  std::unordered_map<std::string, std::uint64_t> names;
  // Ids start at a random point, so a proxy that outlived its server does
  // not name an object of a new server at the same address.
  std::uint64_t next_id = random_id();
  std::unordered_map<std::uint64_t, int> clients;  // id -> fd
  std::uint64_t next_client = 1;
  // The call mutex of each registered-type object (a factory may hand out
  // one object under many ids).
  std::unordered_map<const void*, std::weak_ptr<std::mutex>> call_mutexes;

  std::shared_ptr<std::mutex> call_mutex(const void* obj) {
    std::lock_guard g(mu);
    if (call_mutexes.size() > 64)
      std::erase_if(call_mutexes, [](const auto& kv) { return kv.second.expired(); });
    auto& w = call_mutexes[obj];
    auto m = w.lock();
    if (!m) w = m = std::make_shared<std::mutex>();
    return m;
  }

  std::shared_ptr<Obj> find(std::uint64_t id) {
    std::lock_guard g(mu);
    auto it = objects.find(id);
    if (it == objects.end())
      throw ProtocolError("mpxx: no object " + std::to_string(id) + " on this manager (it was freed, or the id is wrong)");
    return it->second;
  }
  std::uint64_t add(std::shared_ptr<Obj> o) {
    std::lock_guard g(mu);
    std::uint64_t id = next_id++;
    objects.emplace(id, std::move(o));
    return id;
  }

  std::shared_ptr<Obj> make(Kind kind, wire::Reader& in) {
    switch (kind) {
      case Kind::dict: return std::make_shared<Dict>();
      case Kind::list:
      case Kind::array: {
        auto l = std::make_shared<List>(kind);
        if (in.done()) return l;
        auto n = in.pod<std::uint64_t>();
        wire::check_size_prefix(in, n);
        for (std::uint64_t i = 0; i < n; ++i) l->items.push_back(blob(in));
        return l;
      }
      case Kind::ns: return std::make_shared<Namespace>();
      case Kind::value: {
        auto v = std::make_shared<Value>();
        v->v = blob(in);
        return v;
      }
      case Kind::lock: return std::make_shared<LockObj>(false);
      case Kind::rlock: return std::make_shared<LockObj>(true);
      case Kind::semaphore:
      case Kind::bounded_semaphore: {
        auto v = in.pod<std::int64_t>();
        if (v < 0) fail(ErrKind::value, "semaphore initial value must be >= 0");
        return std::make_shared<SemObj>(kind, v);
      }
      case Kind::condition: {
        auto lock_id = in.pod<std::uint64_t>();
        if (lock_id == 0) return std::make_shared<CondObj>(std::make_shared<LockObj>(true));
        auto l = std::dynamic_pointer_cast<LockObj>(find(lock_id));
        if (!l) fail(ErrKind::value, "mpxx: a Condition needs a Lock or an RLock");
        return std::make_shared<CondObj>(std::move(l));
      }
      case Kind::event: return std::make_shared<EventObj>();
      case Kind::barrier: {
        auto parties = in.pod<std::int64_t>();
        auto timeout = in.pod<std::int64_t>();
        if (parties < 1) fail(ErrKind::value, "parties must be > 0");
        return std::make_shared<BarrierObj>(parties, timeout);
      }
      case Kind::queue:
      case Kind::joinable_queue: return std::make_shared<QueueObj>(kind, in.pod<std::int64_t>());
      case Kind::user: {
        std::string type_id = get_str(in);
        auto it = types.find(type_id);
        if (it == types.end()) throw ProtocolError("mpxx: this manager has no type registered as '" + type_id + "'");
        const Registration& reg = it->second;
        wire::Reader state(std::as_bytes(std::span(reg.factory.data(), reg.factory.size())));
        const OpDef* op = find_op(state.pod<std::uint64_t>());
        if (!op || op->kind != OpKind::factory)
          throw ProtocolError("mpxx: the factory of '" + type_id + "' is not in this program");
        auto obj = op->factory(state, in);
        if (!obj) throw ValueError("mpxx: the factory of '" + type_id + "' returned a null pointer");
        auto m = reg.serialize_calls ? call_mutex(obj.get()) : nullptr;
        return std::make_shared<UserObj>(std::move(obj), op->type_tag, std::move(m), &reg);
      }
    }
    throw ProtocolError("mpxx: unknown object kind " + std::to_string(static_cast<int>(kind)));
  }

  // Handles one request; false when the client is to be dropped.
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
        if (obj->kind == Kind::user) static_cast<const UserObj&>(*obj).check_exposed(op_id);
        ctx.ensure_acceptor();  // user code may wait for other clients
        obj->typed(ctx, *def, in, out);
        in.expect_done("a request");
        return;
      }
      case Op::incref:
      case Op::decref: {
        reply = false;
        std::lock_guard g(mu);
        auto it = objects.find(id);
        if (it == objects.end()) return;
        if (op == Op::incref)
          it->second->refs.fetch_add(1);
        else if (it->second->refs.fetch_sub(1) == 1 && !it->second->pinned)
          objects.erase(it);
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
    if (!accepting.load()) return;
    // Wake the accept loop.
    try {
      Client(address);
    } catch (...) {
    }
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
      if (!authkey.empty() && !trusted) server_handshake(conn, authkey, std::chrono::milliseconds(5000));
      Channel& c = channel.emplace(std::move(conn));
      wire::Writer out;
      // The trusted connection's thread starts the accepting thread (a new
      // thread costs ~0.5 ms in a fresh process, the whole of a short-lived
      // manager's work) only once it matters: when its client idles for a
      // millisecond, is about to block, or 2 ms have passed.
      std::function<void()> accept_others = [&] {
        if (!trusted || !start_accepting) return;
        try {
          start_accepting();
          start_accepting = nullptr;
        } catch (const std::exception& e) {  // no thread to be had: try again later
          get_logger().warning(std::string("mpxx: manager server: cannot start accepting: ") + e.what());
        }
      };
      if (trusted && start_accepting) ctx.before_block = &accept_others;
      auto accept_by = Clock::now() + std::chrono::milliseconds(2);
      for (;;) {
        if (trusted && start_accepting) {
          pollfd p{ctx.fd, POLLIN, 0};
          if (Clock::now() > accept_by || (!c.buffered() && ::poll(&p, 1, 1) == 0)) accept_others();
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
        if (stop_now) {
          stop();
          break;
        }
      }
    } catch (...) {
      // The client left (EOF, a reset, a failed handshake): its thread ends.
    }
    auto held = std::move(ctx.held);
    for (auto& [_, w] : held)
      if (auto o = w.lock()) o->client_gone(ctx.client);
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
  s->listener.emplace(Address{cfg.host, cfg.port}, std::nullopt, 128);
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
  }
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
  s->accepting = true;
  while (!s->stopping.load()) {
    if (s->parent) {
      // Wait for a client or for the end of the process that started the
      // server, whichever comes first; the server does not outlive it.
      pollfd p[2] = {{s->listener->fileno(), POLLIN, 0}, {s->parent.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents) {
        s->stop();
        break;
      }
    }
    Connection c;
    try {
      c = s->listener->accept();
    } catch (const std::exception& e) {
      if (s->stopping.load()) break;
      get_logger().warning(std::string("mpxx: manager server: accept failed: ") + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (s->stopping.load()) break;
    try {
      std::thread([s, c = std::move(c)]() mutable { s->serve_client(std::move(c), false); }).detach();
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
