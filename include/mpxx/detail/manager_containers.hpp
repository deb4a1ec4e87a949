// mpxx/detail/manager_containers.hpp - the proxies of a manager's
// containers: DictProxy, ListProxy, ArrayProxy, NamespaceProxy and
// ValueProxy. Internal: users include mpxx/managers.hpp.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "mpxx/detail/manager_proxy.hpp"

namespace mpxx {

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

}  // namespace mpxx
