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
// another managed object is data: it does not keep its object alive
// (CPython's nested proxies do). Named objects live as long as the server.
// shutdown(), or the destructor of the manager that started the server,
// stops it (Python's `with Manager() as m:`); the server also ends when the
// process that started it ends, however it ends (it watches it through a
// pidfd, so a manager started from a short-lived thread outlives the
// thread).
//
// Security: a proxy carries its manager's authkey, so that a child or a
// receiver can connect; whoever can read a proxy's bytes (sent through a
// Queue, stored in another manager) can use that manager. CPython only
// sends it to the children it spawns.
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
#include "mpxx/detail/manager_core.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/sync.hpp"

namespace mpxx {

class BaseManager;

namespace detail::mgr {

inline std::chrono::nanoseconds ns_of(bool block) { return block ? kForever : nanos::zero(); }
template <class Rep, class Period>
std::chrono::nanoseconds ns_of(std::chrono::duration<Rep, Period> d) {
  return to_nanos(d);  // the sync primitives' rule: <= 0 no wait, a century or more forever
}

inline wire::Reader reader(const std::string& s) {
  return wire::Reader(std::as_bytes(std::span(s.data(), s.size())));
}

// What every proxy is: a shared reference to one server object.
class ProxyBase {
 public:
  // The object's id on its server, and the server's address.
  std::uint64_t id() const { return ref().token.id; }
  Address address() const { return ref().token.address(); }
  explicit operator bool() const noexcept { return ref_ != nullptr; }
  Kind kind() const noexcept { return kind_; }
  friend bool operator==(const ProxyBase& a, const ProxyBase& b) noexcept {
    return a.ref_ && b.ref_ && a.ref_->token.id == b.ref_->token.id &&
           a.ref_->token.host == b.ref_->token.host && a.ref_->token.port == b.ref_->token.port;
  }

  void save(wire::OutArchive& ar) const { ar(ref().token); }
  void load(wire::InArchive& ar) {
    Token t;
    ar(t);
    if (t.kind != kind_) throw ProtocolError("mpxx: a proxy of another kind arrived");
    ref_ = std::make_shared<Ref>(std::move(t), true);
  }

 protected:
  explicit ProxyBase(Kind kind) noexcept : kind_(kind) {}
  ProxyBase(Kind kind, std::shared_ptr<Ref> ref) noexcept : ref_(std::move(ref)), kind_(kind) {}

  const Ref& ref() const;
  const Token& token() const { return ref().token; }

  // One call: [call][id][method][what fill writes] -> the result bytes.
  template <class Fill>
  std::string call(Method m, Fill&& fill) const {
    wire::Writer w;
    begin(w, Op::call, id());
    w.pod(m);
    fill(w);
    return transact(token(), w);
  }
  std::string call(Method m) const {
    return call(m, [](wire::Writer&) {});
  }
  template <class Fill>
  std::string typed(std::uint64_t op, Fill&& fill) const {
    wire::Writer w;
    begin(w, Op::typed, id());
    w.pod(op);
    fill(w);
    return transact(token(), w);
  }
  bool call_bool(Method m, std::int64_t arg) const {
    auto r = call(m, [&](wire::Writer& w) { w.pod(arg); });
    auto rd = reader(r);
    return rd.pod<std::uint8_t>() != 0;
  }
  std::int64_t call_int(Method m) const {
    auto r = call(m);
    auto rd = reader(r);
    return rd.pod<std::int64_t>();
  }

  std::shared_ptr<Ref> ref_;
  Kind kind_;
};

// c[key] (a dict item, a list or array element) read and written through
// the server: each use is one round trip, and a compound assignment is two
// (read, then write), so not atomic, as in Python.
template <class C, class K, class V>
class ItemRef {
 public:
  ItemRef(C* c, K k) : c_(c), k_(std::move(k)) {}
  operator V() const { return c_->at(k_); }
  V get() const { return c_->at(k_); }
  ItemRef& operator=(const V& v) {
    c_->set(k_, v);
    return *this;
  }
  ItemRef& operator=(const ItemRef& o) { return *this = o.get(); }
  template <class X>
  ItemRef& operator+=(const X& x) { return *this = static_cast<V>(get() + x); }
  template <class X>
  ItemRef& operator-=(const X& x) { return *this = static_cast<V>(get() - x); }
  template <class X>
  ItemRef& operator*=(const X& x) { return *this = static_cast<V>(get() * x); }
  template <class X>
  ItemRef& operator/=(const X& x) { return *this = static_cast<V>(get() / x); }

 private:
  C* c_;
  K k_;
};

}  // namespace detail::mgr

// --------------------------------------------------------------------- dict

// A dict on the server, keys in insertion order (Python's dict).
// Atomic on the server: every method. Two round trips, not atomic:
// `d[k] op= x` (ItemRef's compound assignments). Atomic read-modify-write:
// fetch_add and update(key, fn).
template <class K, class V>
class DictProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  DictProxy() noexcept : ProxyBase(detail::mgr::Kind::dict) {}
  explicit DictProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::dict, std::move(r)) {}

  // d[k]: KeyError if missing.
  V at(const K& k) const {
    try {
      auto r = call(M::d_get, [&](auto& w) { detail::mgr::put_value(w, k); });
      auto rd = detail::mgr::reader(r);
      return detail::mgr::take_value<V>(rd);
    } catch (const KeyError&) {
      throw key_error(k);
    }
  }
  // d.get(k): std::nullopt if missing; d.get(k, default).
  std::optional<V> get(const K& k) const {
    auto r = call(M::d_find, [&](auto& w) { detail::mgr::put_value(w, k); });
    auto rd = detail::mgr::reader(r);
    if (!rd.template pod<std::uint8_t>()) return std::nullopt;
    return detail::mgr::take_value<V>(rd);
  }
  V get(const K& k, const V& def) const { return get(k).value_or(def); }
  void set(const K& k, const V& v) {
    call(M::d_set, [&](auto& w) {
      detail::mgr::put_value(w, k);
      detail::mgr::put_value(w, v);
    });
  }

  // d[k] read and written through the server; each use is a round trip.
  using ItemRef = detail::mgr::ItemRef<DictProxy, K, V>;
  ItemRef operator[](const K& k) { return ItemRef(this, k); }
  V operator[](const K& k) const { return at(k); }

  bool contains(const K& k) const {
    auto r = call(M::d_contains, [&](auto& w) { detail::mgr::put_value(w, k); });
    auto rd = detail::mgr::reader(r);
    return rd.template pod<std::uint8_t>() != 0;
  }
  // d.pop(k): KeyError if missing; d.pop(k, default).
  V pop(const K& k) {
    if (auto v = take(k)) return std::move(*v);
    throw key_error(k);
  }
  V pop(const K& k, const V& def) { return take(k).value_or(def); }
  // del d[k] without the KeyError: whether it was there.
  bool erase(const K& k) { return take(k).has_value(); }
  // The last inserted item, removed (KeyError if empty).
  std::pair<K, V> popitem() {
    auto r = call(M::d_popitem);
    auto rd = detail::mgr::reader(r);
    K k = detail::mgr::take_value<K>(rd);
    return {std::move(k), detail::mgr::take_value<V>(rd)};
  }
  V setdefault(const K& k, const V& def = V{}) {
    auto r = call(M::d_setdefault, [&](auto& w) {
      detail::mgr::put_value(w, k);
      detail::mgr::put_value(w, def);
    });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<V>(rd);
  }
  // d.update(mapping): one atomic call.
  template <class Map>
    requires requires(const Map& m) { m.begin()->first; m.begin()->second; }
  void update(const Map& items) {
    call(M::d_update, [&](auto& w) { put_items(w, items); });
  }
  void update(std::initializer_list<std::pair<const K, V>> items) {
    call(M::d_update, [&](auto& w) { put_items(w, items); });
  }
  // Atomic on the server: d[k] = fn(d[k]) (fn: V(V) or void(V&)), a missing
  // key starting from V{}; returns the new value. fn must be transferable
  // (a function, a captureless lambda, mpxx::partial, ...).
  template <class F>
    requires(std::is_invocable_r_v<V, const std::decay_t<F>&, V> ||
             std::is_invocable_v<const std::decay_t<F>&, V&>)
  V update(const K& k, F&& fn) {
    using Op = detail::mgr::UpdateWith<V, std::decay_t<F>>;
    static_assert(detail::CallableCodec<std::decay_t<F>>::transferable,
                  "mpxx: update() runs fn on the server: use a function, a captureless lambda, "
                  "a serializable function object or mpxx::partial");
    auto r = typed(Op::id, [&](auto& w) {
      detail::mgr::put_value(w, k);
      detail::CallableCodec<std::decay_t<F>>::encode(w, fn);
    });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<V>(rd);
  }
  // Atomic on the server: d[k] += n (a missing key starts from V{});
  // returns the value before.
  V fetch_add(const K& k, V n)
    requires(std::is_arithmetic_v<V> && !std::is_same_v<V, bool>)
  {
    auto r = typed(detail::mgr::FetchAdd<V>::id, [&](auto& w) {
      detail::mgr::put_value(w, k);
      detail::wire::encode(w, n);
    });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<V>(rd);
  }

  std::vector<K> keys() const { return list_of<K>(M::d_keys); }
  std::vector<V> values() const { return list_of<V>(M::d_values); }
  std::vector<std::pair<K, V>> items() const {
    auto r = call(M::d_items);
    auto rd = detail::mgr::reader(r);
    auto n = rd.template pod<std::uint64_t>();
    detail::wire::check_size_prefix(rd, n);
    std::vector<std::pair<K, V>> out;
    out.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t i = 0; i < n; ++i) {
      K k = detail::mgr::take_value<K>(rd);
      out.emplace_back(std::move(k), detail::mgr::take_value<V>(rd));
    }
    return out;
  }
  // A copy, as Python's d.copy() / dict(d).
  std::map<K, V> copy() const {
    std::map<K, V> m;
    for (auto& [k, v] : items()) m.insert_or_assign(std::move(k), std::move(v));
    return m;
  }
  std::size_t size() const { return static_cast<std::size_t>(call_int(M::d_len)); }
  bool empty() const { return size() == 0; }
  void clear() { call(M::d_clear); }

  friend std::ostream& operator<<(std::ostream& os, const DictProxy& d) {
    auto items = d.items();
    detail::mgr::repr_items<K, V>(os, items.begin(), items.end());
    return os;
  }

 private:
  static KeyError key_error(const K& k) {
    std::ostringstream s;
    detail::mgr::repr(s, k);
    return KeyError(s.str());
  }
  std::optional<V> take(const K& k) {
    auto r = call(M::d_take, [&](auto& w) { detail::mgr::put_value(w, k); });
    auto rd = detail::mgr::reader(r);
    if (!rd.template pod<std::uint8_t>()) return std::nullopt;
    return detail::mgr::take_value<V>(rd);
  }
  template <class Items>
  static void put_items(detail::wire::Writer& w, const Items& items) {
    std::size_t at = w.size();
    w.pod(std::uint64_t{0});
    std::uint64_t n = 0;
    for (const auto& [k, v] : items) {
      detail::mgr::put_value(w, static_cast<const K&>(k));
      detail::mgr::put_value(w, static_cast<const V&>(v));
      ++n;
    }
    std::memcpy(w.data() + at, &n, sizeof n);
  }
  template <class T>
  std::vector<T> list_of(M m) const {
    auto r = call(m);
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_values<T>(rd);
  }
};

// --------------------------------------------------------------- list, Array

namespace detail::mgr {
inline constexpr std::int64_t kNone = INT64_MIN;  // a missing slice bound

// What ListProxy and ArrayProxy share: indexing, slices, copies.
template <class T>
class SequenceProxy : public ProxyBase {
 public:
  // l[i] (negative counts from the end): IndexError outside.
  T at(std::int64_t i) const {
    auto r = call(Method::l_get, [&](auto& w) { w.pod(i); });
    auto rd = reader(r);
    return take_value<T>(rd);
  }
  T get(std::int64_t i) const { return at(i); }
  void set(std::int64_t i, const T& v) {
    call(Method::l_set, [&](auto& w) {
      w.pod(i);
      put_value(w, v);
    });
  }
  using ItemRef = detail::mgr::ItemRef<SequenceProxy, std::int64_t, T>;
  ItemRef operator[](std::int64_t i) { return ItemRef(this, i); }
  T operator[](std::int64_t i) const { return at(i); }

  // l[start:stop:step] as a copy; std::nullopt is an omitted bound.
  std::vector<T> slice(std::optional<std::int64_t> start, std::optional<std::int64_t> stop,
                       std::int64_t step = 1) const {
    if (step == 0) throw ValueError("mpxx: slice step cannot be zero");
    auto r = call(Method::l_slice, [&](auto& w) {
      w.pod(start.value_or(kNone));
      w.pod(stop.value_or(kNone));
      w.pod(step);
    });
    auto rd = reader(r);
    return take_values<T>(rd);
  }
  // list(l): a copy of every element.
  std::vector<T> copy() const { return slice(std::nullopt, std::nullopt); }
  std::size_t size() const { return static_cast<std::size_t>(call_int(Method::l_len)); }
  bool empty() const { return size() == 0; }

  friend std::ostream& operator<<(std::ostream& os, const SequenceProxy& s) {
    repr(os, s.copy());
    return os;
  }

 protected:
  using ProxyBase::ProxyBase;
};
}  // namespace detail::mgr

// A list on the server. Atomic on the server: every method (sort included).
// Not atomic: `l[i] op= x` (two round trips).
template <class T>
class ListProxy : public detail::mgr::SequenceProxy<T> {
  using M = detail::mgr::Method;

 public:
  ListProxy() noexcept : detail::mgr::SequenceProxy<T>(detail::mgr::Kind::list) {}
  explicit ListProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : detail::mgr::SequenceProxy<T>(detail::mgr::Kind::list, std::move(r)) {}

  void append(const T& v) {
    this->call(M::l_append, [&](auto& w) { detail::mgr::put_value(w, v); });
  }
  template <class R = std::initializer_list<T>>
  void extend(const R& values) {
    this->call(M::l_extend, [&](auto& w) { detail::mgr::put_values(w, std::begin(values), std::end(values)); });
  }
  void insert(std::int64_t i, const T& v) {
    this->call(M::l_insert, [&](auto& w) {
      w.pod(i);
      detail::mgr::put_value(w, v);
    });
  }
  // l.pop(i=-1): IndexError on an empty list or a bad index.
  T pop(std::int64_t i = -1) {
    auto r = this->call(M::l_pop, [&](auto& w) { w.pod(i); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  // del l[i].
  void erase(std::int64_t i) {
    this->call(M::l_erase, [&](auto& w) { w.pod(i); });
  }
  // Removes the first element equal to v: ValueError if none is.
  void remove(const T& v) {
    this->call(M::l_remove, [&](auto& w) { detail::mgr::put_value(w, v); });
  }
  // The first position of v in [start, stop): ValueError if absent.
  std::int64_t index(const T& v, std::int64_t start = 0,
                     std::int64_t stop = std::numeric_limits<std::int64_t>::max()) const {
    auto r = this->call(M::l_index, [&](auto& w) {
      detail::mgr::put_value(w, v);
      w.pod(start);
      w.pod(stop);
    });
    auto rd = detail::mgr::reader(r);
    return rd.template pod<std::int64_t>();
  }
  std::size_t count(const T& v) const {
    auto r = this->call(M::l_count, [&](auto& w) { detail::mgr::put_value(w, v); });
    auto rd = detail::mgr::reader(r);
    return static_cast<std::size_t>(rd.template pod<std::uint64_t>());
  }
  void reverse() { this->call(M::l_reverse); }
  // Stable sort with operator< on the server (one atomic call).
  void sort(bool reverse = false)
    requires requires(const T& a, const T& b) { a < b; }
  {
    this->typed(detail::mgr::SortItems<T>::id, [&](auto& w) { detail::wire::encode(w, reverse); });
  }
  void clear() { this->call(M::l_clear); }
};

// A fixed-size array on the server (a manager's Array('i', ...)).
template <class T>
class ArrayProxy : public detail::mgr::SequenceProxy<T> {
 public:
  ArrayProxy() noexcept : detail::mgr::SequenceProxy<T>(detail::mgr::Kind::array) {}
  explicit ArrayProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : detail::mgr::SequenceProxy<T>(detail::mgr::Kind::array, std::move(r)) {}
};

// ---------------------------------------------------------------- Namespace

// Named attributes of any transferable type (Python's Namespace):
//   ns.set("x", 10); int x = ns.get<int>("x");   // ns.x = 10; ns.x
// get() of a missing attribute: AttributeError; of another type than was
// set: ProtocolError. Each call is atomic; a get then set is two.
class NamespaceProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  NamespaceProxy() noexcept : ProxyBase(detail::mgr::Kind::ns) {}
  explicit NamespaceProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::ns, std::move(r)) {}

  template <class T>
  T get(const std::string& name) const {
    auto r = call(M::n_get, [&](auto& w) { detail::mgr::put_str(w, name); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  template <class T>
  void set(const std::string& name, const T& v) {
    call(M::n_set, [&](auto& w) {
      detail::mgr::put_str(w, name);
      detail::mgr::put_value(w, detail::arg_t<T>(v));
    });
  }
  // del ns.name: AttributeError if missing.
  void del(const std::string& name) {
    call(M::n_del, [&](auto& w) { detail::mgr::put_str(w, name); });
  }
  bool has(const std::string& name) const {
    auto r = call(M::n_has, [&](auto& w) { detail::mgr::put_str(w, name); });
    auto rd = detail::mgr::reader(r);
    return rd.pod<std::uint8_t>() != 0;
  }
  // The attribute names, in the order they were first set.
  std::vector<std::string> names() const {
    auto r = call(M::n_names);
    auto rd = detail::mgr::reader(r);
    auto n = rd.pod<std::uint64_t>();
    detail::wire::check_size_prefix(rd, n);
    std::vector<std::string> out;
    for (std::uint64_t i = 0; i < n; ++i) out.push_back(detail::mgr::get_str(rd));
    return out;
  }
};

// -------------------------------------------------------------------- Value

// A single value on the server (a manager's Value('i', 0)). get/set are
// atomic; `v.set(v.get() + 1)` is two calls, fetch_add and update are one.
template <class T>
class ValueProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  using value_type = T;
  ValueProxy() noexcept : ProxyBase(detail::mgr::Kind::value) {}
  explicit ValueProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::value, std::move(r)) {}

  T get() const {
    auto r = call(M::v_get);
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  T value() const { return get(); }
  void set(const T& v) {
    call(M::v_set, [&](auto& w) { detail::mgr::put_value(w, v); });
  }
  // Atomic: returns the value before.
  T fetch_add(T n)
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
  {
    auto r = typed(detail::mgr::FetchAdd<T>::id, [&](auto& w) { detail::wire::encode(w, n); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  // Atomic: value = fn(value) (fn: T(T) or void(T&)); returns the new value.
  template <class F>
  T update(F&& fn) {
    using Op = detail::mgr::UpdateWith<T, std::decay_t<F>>;
    auto r = typed(Op::id, [&](auto& w) { detail::CallableCodec<std::decay_t<F>>::encode(w, fn); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  friend std::ostream& operator<<(std::ostream& os, const ValueProxy& v) {
    os << "Value(";
    detail::mgr::repr(os, v.get());
    return os << ')';
  }
};

// ---------------------------------------------------------------- sync proxies

// A manager's Lock, RLock, Semaphore or BoundedSemaphore (Python's
// AcquirerProxy). Lockable, so std::scoped_lock works. An RLock belongs to
// the thread that acquired it; if that thread's process dies, the server
// releases its Locks and RLocks.
class AcquirerProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  AcquirerProxy() noexcept : ProxyBase(detail::mgr::Kind::lock) {}
  AcquirerProxy(detail::mgr::Kind kind, std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(kind, std::move(r)) {}

  bool acquire(bool block = true) { return acquire_ns(detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_ns(detail::mgr::ns_of(timeout));
  }
  // RuntimeError when not held (or, for an RLock, held by another thread);
  // ValueError when a BoundedSemaphore would go above its initial value.
  void release() { call(M::a_release); }
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(d);
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    kind_ = t.kind;
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }

 private:
  bool acquire_ns(std::chrono::nanoseconds t) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(t));
  }
};

// A manager's Condition, over its own RLock or a given Lock/RLock proxy.
class ConditionProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  ConditionProxy() noexcept : ProxyBase(detail::mgr::Kind::condition) {}
  explicit ConditionProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::condition, std::move(r)) {}

  bool acquire(bool block = true) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(detail::mgr::ns_of(block)));
  }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::a_acquire, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void release() { call(M::a_release); }
  void lock() { acquire(); }
  bool try_lock() { return acquire(false); }
  void unlock() { release(); }

  // Releases the lock, waits for a notify (or the timeout), re-acquires;
  // false on timeout. RuntimeError without the lock.
  bool wait() { return call_bool(M::c_wait, -1); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::c_wait, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  // Waits until pred() (evaluated here, with the lock held) is true.
  template <class Pred>
  bool wait_for(Pred pred) {
    return detail::wait_for_predicate(pred, detail::kForever, [this](detail::nanos t) { wait_ns(t); });
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_for_predicate(pred, detail::to_nanos(timeout), [this](detail::nanos t) { wait_ns(t); });
  }
  void notify(int n = 1) { call(M::c_notify, [&](auto& w) { w.pod(std::int64_t{n}); }); }
  void notify_all() { call(M::c_notify, [](auto& w) { w.pod(std::int64_t{-1}); }); }

 private:
  bool wait_ns(std::chrono::nanoseconds t) { return call_bool(M::c_wait, detail::mgr::wire_timeout(t)); }
};

class EventProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  EventProxy() noexcept : ProxyBase(detail::mgr::Kind::event) {}
  explicit EventProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::event, std::move(r)) {}

  bool is_set() const { return call_bool(M::e_is_set, 0); }
  void set() { call(M::e_set); }
  void clear() { call(M::e_clear); }
  bool wait() { return call_bool(M::e_wait, -1); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return call_bool(M::e_wait, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
};

// A manager's Barrier. A timeout, abort(), reset() during a wait, or a
// waiting client that dies breaks it: BrokenBarrierError for every waiter.
class BarrierProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  BarrierProxy() noexcept : ProxyBase(detail::mgr::Kind::barrier) {}
  explicit BarrierProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::barrier, std::move(r)) {}

  // Returns this party's index in [0, parties).
  int wait() { return wait_raw(-2); }  // -2: the barrier's default timeout
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_raw(detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void abort() { call(M::b_abort); }
  void reset() { call(M::b_reset); }
  int parties() const { return static_cast<int>(call_int(M::b_parties)); }
  int n_waiting() const { return static_cast<int>(call_int(M::b_n_waiting)); }
  bool broken() const { return call_bool(M::b_broken, 0); }

 private:
  int wait_raw(std::int64_t t) {
    auto r = call(M::b_wait, [&](auto& w) { w.pod(t); });
    auto rd = detail::mgr::reader(r);
    return static_cast<int>(rd.pod<std::int64_t>());
  }
};

// ------------------------------------------------------------------ queues

// A queue.Queue on the server: put/get with block and timeout, Full/Empty.
// Unlike mpxx::Queue it lives in the manager, so it can be shared with
// processes that are not children (a remote manager's clients).
template <class T>
class QueueProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  QueueProxy() noexcept : ProxyBase(detail::mgr::Kind::queue) {}
  explicit QueueProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::queue, std::move(r)) {}

  void put(const T& v, bool block = true) { put_ns(v, detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  void put(const T& v, std::chrono::duration<Rep, Period> timeout) {
    put_ns(v, detail::mgr::ns_of(timeout));
  }
  void put_nowait(const T& v) { put(v, false); }
  T get(bool block = true) { return get_ns(detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_ns(detail::mgr::ns_of(timeout));
  }
  T get_nowait() { return get(false); }
  std::int64_t qsize() const { return sizes().first; }
  bool empty() const { return qsize() == 0; }
  bool full() const {
    auto [n, max] = sizes();
    return max > 0 && n >= max;
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    if (t.kind != detail::mgr::Kind::queue && t.kind != detail::mgr::Kind::joinable_queue)
      throw ProtocolError("mpxx: a proxy of another kind arrived");
    kind_ = t.kind;
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }

 protected:
  QueueProxy(detail::mgr::Kind k, std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(k, std::move(r)) {}

 private:
  void put_ns(const T& v, std::chrono::nanoseconds t) {
    call(M::q_put, [&](auto& w) {
      detail::mgr::put_value(w, v);
      w.pod(detail::mgr::wire_timeout(t));
    });
  }
  T get_ns(std::chrono::nanoseconds t) {
    auto r = call(M::q_get, [&](auto& w) { w.pod(detail::mgr::wire_timeout(t)); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  std::pair<std::int64_t, std::int64_t> sizes() const {
    auto r = call(M::q_qsize);
    auto rd = detail::mgr::reader(r);
    auto n = rd.template pod<std::int64_t>();
    return {n, rd.template pod<std::int64_t>()};
  }
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
  using M = detail::mgr::Method;

 public:
  JoinableQueueProxy() noexcept : QueueProxy<T>(detail::mgr::Kind::joinable_queue, nullptr) {}
  explicit JoinableQueueProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : QueueProxy<T>(detail::mgr::Kind::joinable_queue, std::move(r)) {}
  // ValueError when called more times than items were taken.
  void task_done() { this->call(M::q_task_done); }
  void join() { this->call_bool(M::q_join, -1); }
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->call_bool(M::q_join, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void load(detail::wire::InArchive& ar) { detail::mgr::ProxyBase::load(ar); }
};

// ------------------------------------------------------- registered types

// A proxy to an object of a type registered with BaseManager::register_type.
//   auto c = m.create<Counter>("Counter", 10);
//   int n = c.call<&Counter::add>(5);
// Each call runs the method on the server; with the registration's default
// {.serialize_calls = true} calls to one object never overlap. An exception
// the method throws arrives as RemoteError.
template <class T>
class Proxy : public detail::mgr::ProxyBase {
 public:
  Proxy() noexcept : ProxyBase(detail::mgr::Kind::user) {}
  explicit Proxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::user, std::move(r)) {}

  template <auto Method, class... A>
  auto call(A&&... args) const {
    using Op = detail::mgr::CallMethod<Method>;
    static_assert(std::is_same_v<typename Op::T, T>, "mpxx: call<&X::method>: X is not this proxy's type");
    using R = std::decay_t<typename Op::R>;
    auto r = this->typed(Op::id, [&](auto& w) {
      detail::wire::encode(w, typename Op::Args(std::forward<A>(args)...));
    });
    if constexpr (!std::is_void_v<R>) {
      auto rd = detail::mgr::reader(r);
      return detail::mgr::take_value<R>(rd);
    }
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    if (t.kind != detail::mgr::Kind::user || t.type_tag != detail::wire::type_tag<T>())
      throw ProtocolError("mpxx: a proxy to another type arrived, not " + detail::wire::type_name<T>());
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }
};

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
