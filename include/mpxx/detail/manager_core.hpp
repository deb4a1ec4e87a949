// mpxx/detail/manager_core.hpp - how a proxy talks to its manager's server.
// Internal: users name the types in mpxx/managers.hpp.
//
// One request, one reply, on a connection owned by the calling thread (each
// (process, thread) pair gets its own, as in CPython, so a blocking call in
// one thread never delays another, and a lock is owned by the thread whose
// connection took it).
//
//   request  [u8 Op][u64 object id][u16 method | u64 typed-op id][arguments]
//   reply    [u8 0][result]  or  [u8 1][u8 ErrKind][message][remote exception]
//
// The server never needs to know the C++ types of what it stores: values
// arrive as blobs (a u64 length, then the value encoded with its type tag)
// and go back as the same bytes, so a dict's keys compare by their
// encoding and a get with the wrong type is a ProtocolError on the client.
// Operations that must understand a value (an atomic update, sorting a list,
// calling a method of a registered type) travel as the id of a template
// instance, registered at static-initialization time in every process of
// the program, like the callable entries of detail/callable.hpp: a server
// built from another program that lacks the instance answers with a
// RemoteError naming the unknown operation.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mpxx/connection.hpp"
#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/codec.hpp"
#include "mpxx/errors.hpp"

namespace mpxx::detail::mgr {

enum class Op : std::uint8_t {
  create = 1,    // [Kind][name][kind's arguments]            -> [u64 id][u64 type tag]
  call = 2,      // [id][u16 Method][arguments]               -> result
  typed = 3,     // [id][u64 op id][arguments]                 -> result
  incref = 4,    // [id]                                        (no reply)
  decref = 5,    // [id]                                        (no reply)
  shutdown = 6,  // []                                          -> []
  ping = 7,      // []                                          -> [u32 pid]
};

enum class Kind : std::uint8_t {
  dict = 1, list, ns, value, array, lock, rlock, semaphore, bounded_semaphore,
  condition, event, barrier, queue, joinable_queue, user,
};

enum class Method : std::uint16_t {
  // dict
  d_get = 1, d_find, d_set, d_contains, d_pop, d_take, d_setdefault, d_update, d_keys,
  d_values, d_items, d_len, d_clear, d_popitem, d_erase,
  // list and array
  l_append = 32, l_extend, l_insert, l_pop, l_remove, l_index, l_count, l_reverse, l_get,
  l_set, l_len, l_slice, l_clear, l_erase,
  // namespace
  n_get = 64, n_set, n_del, n_has, n_names,
  // value
  v_get = 80, v_set,
  // lock, rlock, semaphore (and a condition's lock)
  a_acquire = 96, a_release, a_locked,
  // condition
  c_wait = 112, c_notify,
  // event
  e_is_set = 128, e_set, e_clear, e_wait,
  // barrier
  b_wait = 144, b_abort, b_reset, b_parties, b_n_waiting, b_broken,
  // queue
  q_put = 160, q_get, q_qsize, q_task_done, q_join,
};

// What a server-side failure becomes on the client: the same mpxx type,
// so `catch (const mpxx::KeyError&)` works as Python's `except KeyError`.
enum class ErrKind : std::uint8_t {
  remote = 0, key, index, value, runtime, empty, full, timeout, broken_barrier, attribute, protocol,
};

// ---------------------------------------------------------------- blobs

// Appends a u64-length-prefixed byte string.
inline void put_blob(wire::Writer& w, std::span<const std::byte> b) {
  w.pod(static_cast<std::uint64_t>(b.size()));
  w.put(b.data(), b.size());
}
inline void put_str(wire::Writer& w, const std::string& s) {
  put_blob(w, std::as_bytes(std::span(s.data(), s.size())));
}
inline std::span<const std::byte> get_blob(wire::Reader& r) {
  auto n = r.pod<std::uint64_t>();
  if (n > r.remaining()) r.take(r.remaining() + 1);  // throws: truncated
  return r.take(static_cast<std::size_t>(n));
}
inline std::string get_str(wire::Reader& r) {
  auto b = get_blob(r);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
[[noreturn]] void value_with_fds(const std::string& type);

// Proxies inside a stored value. A value that holds proxies of the manager
// it is sent to starts with the ids of their objects, so that the server
// keeps those objects alive as long as it stores the value:
//   [u64 kHeldIds][u64 n][n x u64 id][the tagged encoding]
// Proxies of other managers are left out (they stay plain data).
inline constexpr std::uint64_t kHeldIds = 0x4845'4c44'2e6d'7078ULL;
struct Token;
// While alive, the ids of the proxies this thread encodes are collected
// (ProxyBase::save), for a value on its way to the manager at `to`.
struct HeldIds {
  explicit HeldIds(const Token* to) noexcept;
  ~HeldIds();
  HeldIds(const HeldIds&) = delete;
  HeldIds& operator=(const HeldIds&) = delete;
  const Token* to;
  std::vector<std::uint64_t> ids;
  HeldIds* outer;
};
// The manager the calling thread's request goes to (set by the proxy call
// around writing its arguments), or nullptr.
const Token*& request_destination() noexcept;
// Sets request_destination() while alive.
struct RequestTo {
  explicit RequestTo(const Token& t) noexcept : outer(std::exchange(request_destination(), &t)) {}
  ~RequestTo() { request_destination() = outer; }
  RequestTo(const RequestTo&) = delete;
  RequestTo& operator=(const RequestTo&) = delete;
  const Token* outer;
};
// ProxyBase::save: notes a proxy being encoded.
void note_encoded_proxy(const Token& t) noexcept;
// Inserts the ids' header before the encoding that starts at `at`.
void insert_held_ids(wire::Writer& w, std::size_t at, const std::vector<std::uint64_t>& ids);
// The ids of a header (an empty span with no data() without one);
// ProtocolError if it is cut short.
inline std::span<const std::byte> held_ids(std::span<const std::byte> b, std::uint64_t& n) {
  n = 0;
  std::uint64_t tag = 0;
  if (b.size() < 2 * sizeof tag) return {};
  std::memcpy(&tag, b.data(), sizeof tag);
  if (tag != kHeldIds) return {};
  std::memcpy(&n, b.data() + sizeof tag, sizeof n);
  if (n > (b.size() - 2 * sizeof tag) / sizeof tag) throw ProtocolError("mpxx: a managed value is cut short");
  return b.subspan(2 * sizeof tag, static_cast<std::size_t>(n) * sizeof tag);
}
// The encoding without the header, if any.
inline std::span<const std::byte> skip_held_ids(std::span<const std::byte> b) {
  std::uint64_t n;
  auto ids = held_ids(b, n);
  if (!ids.data()) return b;  // no header
  return b.subspan(static_cast<std::size_t>(ids.data() + ids.size() - b.data()));
}

// A value as the server stores it: a blob of its tagged encoding.
template <class T>
void put_value(wire::Writer& w, const T& v) {
  std::size_t at = w.size();
  w.pod(std::uint64_t{0});
  {
    HeldIds held(request_destination());
    wire::encode_tagged(w, v);
    if (!w.fds().empty()) value_with_fds(wire::type_name<T>());
    if (!held.ids.empty()) insert_held_ids(w, at + sizeof(std::uint64_t), held.ids);
  }
  std::uint64_t n = w.size() - at - sizeof(std::uint64_t);
  std::memcpy(w.data() + at, &n, sizeof n);
}
template <class T>
T decode_value(std::span<const std::byte> b) {
  wire::Reader r(skip_held_ids(b));
  T v = wire::decode_tagged<T>(r);
  r.expect_done("a managed value");
  return v;
}
template <class T>
T take_value(wire::Reader& r) {
  return decode_value<T>(get_blob(r));
}
template <class T>
std::string encode_value(const T& v) {
  wire::Writer w;
  wire::encode_tagged(w, v);
  if (!w.fds().empty()) value_with_fds(wire::type_name<T>());
  return std::string(reinterpret_cast<const char*>(w.data()), w.size());
}
template <class T>
std::vector<T> take_values(wire::Reader& r) {
  auto n = r.pod<std::uint64_t>();
  wire::check_size_prefix(r, n);
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(n));
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(take_value<T>(r));
  return out;
}
template <class It>
void put_values(wire::Writer& w, It first, It last) {
  std::size_t at = w.size();
  w.pod(std::uint64_t{0});
  std::uint64_t n = 0;
  for (; first != last; ++first, ++n) put_value(w, *first);
  std::memcpy(w.data() + at, &n, sizeof n);
}
// A timeout on the wire: nanoseconds, -1 for none.
inline std::int64_t wire_timeout(std::chrono::nanoseconds t) {
  return t == std::chrono::nanoseconds::max() ? -1 : std::max<std::int64_t>(0, t.count());
}

// -------------------------------------------------------------- the client

// Where an object lives and how to reach it; what a proxy carries across a
// process boundary.
struct Token {
  std::string host;  // Address
  int port = -1;
  std::uint64_t id = 0;
  Kind kind{};
  std::uint64_t type_tag = 0;  // for registered types
  std::string authkey;         // empty: no authentication
  Address address() const { return Address{host, port}; }
  // A token for requests that name no object (create, ping, shutdown).
  static Token of(const Address& a, const std::string& authkey) {
    Token t;
    t.host = a.host;
    t.port = a.port;
    t.authkey = authkey;
    return t;
  }
  template <class A>
  void serialize(A& a) {
    a(host, port, id, kind, type_tag, authkey);
  }
};

// One reference to a server object. The process that created or received
// it holds one count on the server; the count goes when the last copy of
// the handle in that process goes (a forked child shares its parent's and
// gives nothing back; spawned children and receivers decode their own).
struct Ref {
  Token token;
  pid_t owner = 0;
  explicit Ref(Token t, bool counted);
  ~Ref();
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
};

// Sends a request on the calling thread's connection to `token`'s manager and
// returns the reply's result bytes. A server-side error is rethrown as its
// mpxx type (or RemoteError); a server that is gone is EOFError or OSError
// at once.
std::string transact(const Token& token, const wire::Writer& request);
// Sends a one-way request (incref, decref); errors are ignored.
void notify(const Token& token, const wire::Writer& request) noexcept;

inline void begin(wire::Writer& w, Op op, std::uint64_t id) {
  w.pod(op);
  w.pod(id);
}

// ----------------------------------------------------------- typed ops

// What a typed operation works on.
//  slot:    one stored value (a dict item, a Value); `present` says whether
//           it exists and may be set by the operation.
//  items:   a list's stored values.
//  method:  an object of a registered type (obj points at a T).
//  factory: makes an object of a registered type from its registration's
//           callable state and the client's arguments.
enum class OpKind : std::uint8_t { slot, items, method, factory };
using SlotFn = void (*)(std::string& slot, bool& present, wire::Reader& args, wire::Writer& out);
using ItemsFn = void (*)(std::vector<std::string>& items, wire::Reader& args, wire::Writer& out);
using MethodFn = void (*)(void* obj, wire::Reader& args, wire::Writer& out);
using FactoryFn = std::shared_ptr<void> (*)(wire::Reader& state, wire::Reader& args);
struct OpDef {
  OpKind kind;
  SlotFn slot = nullptr;
  ItemsFn items = nullptr;
  MethodFn method = nullptr;
  FactoryFn factory = nullptr;
  std::uint64_t type_tag = 0;  // method, factory: the type they work on
  const char* name = "";
};
std::uint64_t register_op(const char* mangled, OpDef def) noexcept;
const OpDef* find_op(std::uint64_t id) noexcept;

// For the fuzzer: runs the requests in `input` ([u16 length][request]...)
// against a fresh server holding one object of each built-in kind (ids 1
// to 14); returns how many were refused.
std::size_t fuzz_requests(std::span<const std::byte> input);

// A new value for a slot computed on the server by update(fn): it
// keeps the old value's held-ids header, so the objects its proxies named
// stay alive while the slot holds it (a proxy the function dropped keeps
// its object until the value is replaced; none can be added on the server).
template <class V>
std::string reencode_slot(const std::string& old, const V& v) {
  auto b = std::as_bytes(std::span(old.data(), old.size()));
  auto head = static_cast<std::size_t>(skip_held_ids(b).data() - b.data());
  return old.substr(0, head) + encode_value(v);
}

template <class V>
V slot_value(const std::string& slot, bool present) {
  if (!present) return V{};
  return decode_value<V>(std::as_bytes(std::span(slot.data(), slot.size())));
}

// d.fetch_add(key, n) / v.fetch_add(n): returns the value before. Integers
// wrap around on overflow, as std::atomic's fetch_add does.
template <class V>
struct FetchAdd {
  static void run(std::string& slot, bool& present, wire::Reader& args, wire::Writer& out) {
    V n = wire::decode<V>(args);
    V old = slot_value<V>(slot, present);
    V now;
    if constexpr (std::is_integral_v<V>) {  // wraps around, as std::atomic does
      using U = std::make_unsigned_t<V>;
      now = static_cast<V>(static_cast<U>(static_cast<U>(old) + static_cast<U>(n)));
    } else {
      now = old + n;
    }
    slot = encode_value(now);
    present = true;
    put_value(out, old);
  }
  static inline const std::uint64_t id =
      register_op(typeid(FetchAdd).name(), {.kind = OpKind::slot, .slot = &run, .name = "fetch_add"});
};

// d.update(key, fn) / v.update(fn): fn is V(V) or void(V&); returns the new value.
template <class V, class F>
struct UpdateWith {
  static void run(std::string& slot, bool& present, wire::Reader& args, wire::Writer& out) {
    const F f = CallableCodec<F>::decode(args);
    V v = slot_value<V>(slot, present);
    if constexpr (std::is_invocable_r_v<V, const F&, V>)
      v = std::invoke(f, std::move(v));
    else
      std::invoke(f, v);
    slot = reencode_slot(slot, v);
    present = true;
    put_value(out, v);
  }
  static inline const std::uint64_t id =
      register_op(typeid(UpdateWith).name(), {.kind = OpKind::slot, .slot = &run, .name = "update"});
};

// l.sort(reverse): decodes, sorts with <, re-encodes.
template <class T>
struct SortItems {
  static void run(std::vector<std::string>& items, wire::Reader& args, wire::Writer&) {
    bool reverse = wire::decode<bool>(args);
    std::vector<std::pair<T, std::size_t>> v;
    v.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i)
      v.emplace_back(decode_value<T>(std::as_bytes(std::span(items[i].data(), items[i].size()))), i);
    // Stable, as Python's sort; reverse keeps equal items in their order too.
    if (reverse)
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return b.first < a.first; });
    else
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> sorted;
    sorted.reserve(items.size());
    for (auto& [_, i] : v) sorted.push_back(std::move(items[i]));
    items = std::move(sorted);
  }
  static inline const std::uint64_t id =
      register_op(typeid(SortItems).name(), {.kind = OpKind::items, .items = &run, .name = "sort"});
};

// -------------------------------------------------------- registered types

template <class M>
struct member_fn;
#define MPXX_MEMBER_FN(CV, NOEXCEPT)                              \
  template <class T, class R, class... A>                         \
  struct member_fn<R (T::*)(A...) CV NOEXCEPT> {                  \
    using type = T;                                               \
    using result = R;                                             \
    using args = std::tuple<std::decay_t<A>...>;                  \
  };
MPXX_MEMBER_FN(, )
MPXX_MEMBER_FN(const, )
MPXX_MEMBER_FN(, noexcept)
MPXX_MEMBER_FN(const, noexcept)
#undef MPXX_MEMBER_FN

// proxy.call<&T::m>(args...): the arguments travel converted to m's
// parameter types, the result comes back tagged.
template <auto M>
struct CallMethod {
  using Traits = member_fn<decltype(M)>;
  using T = typename Traits::type;
  using R = typename Traits::result;
  using Args = typename Traits::args;
  static void run(void* obj, wire::Reader& in, wire::Writer& out) {
    Args args = wire::decode<Args>(in);
    T& self = *static_cast<T*>(obj);
    if constexpr (std::is_void_v<R>) {
      std::apply([&](auto&... a) { (self.*M)(a...); }, args);
      out.pod(std::uint8_t{0});
    } else {
      put_value(out, std::apply([&](auto&... a) -> std::decay_t<R> { return (self.*M)(a...); }, args));
    }
  }
  static inline const std::uint64_t id = register_op(
      typeid(CallMethod).name(),
      {.kind = OpKind::method, .method = &run, .type_tag = wire::type_tag<T>(), .name = "method"});
};

template <class F>
struct call_signature : call_signature<decltype(&F::operator())> {};
template <class R, class... A>
struct call_signature<R (*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class... A>
struct call_signature<R (*)(A...) noexcept> : call_signature<R (*)(A...)> {};
template <class C, class R, class... A>
struct call_signature<R (C::*)(A...) const> : call_signature<R (*)(A...)> {};
template <class C, class R, class... A>
struct call_signature<R (C::*)(A...) const noexcept> : call_signature<R (*)(A...)> {};

template <class P>
struct shared_of {
  using type = void;
};
template <class T>
struct shared_of<std::shared_ptr<T>> {
  using type = T;
};

// Makes a T with a registered factory: a callable returning T or
// std::shared_ptr<T> (return the same shared_ptr each time to share one
// object between all clients). Its arguments come from the client as one
// tagged tuple, so a client passing other types gets a clear mismatch error.
template <class T, class F>
struct Factory {
  using Sig = call_signature<F>;
  static std::shared_ptr<void> run(wire::Reader& state, wire::Reader& in) {
    const F f = CallableCodec<F>::decode(state);
    auto args = decode_value<typename Sig::args>(get_blob(in));
    using R = typename Sig::result;
    if constexpr (std::is_same_v<R, std::shared_ptr<T>>)
      return std::apply([&](auto&... a) { return std::invoke(f, a...); }, args);
    else
      return std::make_shared<T>(std::apply([&](auto&... a) -> T { return std::invoke(f, a...); }, args));
  }
  static inline const std::uint64_t id = register_op(
      typeid(Factory).name(),
      {.kind = OpKind::factory, .factory = &run, .type_tag = wire::type_tag<T>(), .name = "factory"});
};

template <class T, class... A>
struct Construct {
  T operator()(A... a) const { return T(std::move(a)...); }
};

// ------------------------------------------------------------------- repr

// Python's repr() for what proxies print: 'text', numbers, [..], {..: ..}.
template <class T>
void repr(std::ostream& os, const T& v);
template <class T>
concept Streamable = requires(std::ostream& os, const T& v) { os << v; };
template <class T>
struct is_pair : std::false_type {};
template <class A, class B>
struct is_pair<std::pair<A, B>> : std::true_type {};
template <class T>
void repr(std::ostream& os, const T& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    os << '\'' << v << '\'';
  } else if constexpr (std::is_same_v<T, bool>) {
    os << (v ? "True" : "False");
  } else if constexpr (std::is_same_v<T, char>) {
    os << '\'' << v << '\'';
  } else if constexpr (std::is_arithmetic_v<T>) {
    os << +v;
  } else if constexpr (is_pair<T>::value) {
    os << '(';
    repr(os, v.first);
    os << ", ";
    repr(os, v.second);
    os << ')';
  } else if constexpr (requires { std::visit([](const auto&) {}, v); }) {
    std::visit([&](const auto& x) { repr(os, x); }, v);
  } else if constexpr (requires { v.has_value(); *v; }) {
    if (v.has_value())
      repr(os, *v);
    else
      os << "None";
  } else if constexpr (requires { v.begin(); v.end(); }) {
    os << '[';
    bool first = true;
    for (const auto& x : v) {
      if (!first) os << ", ";
      first = false;
      repr(os, x);
    }
    os << ']';
  } else if constexpr (Streamable<T>) {
    os << v;
  } else {
    os << '<' << wire::type_name<T>() << '>';
  }
}
template <class K, class V, class It>
void repr_items(std::ostream& os, It first, It last) {
  os << '{';
  for (bool at_first = true; first != last; ++first, at_first = false) {
    if (!at_first) os << ", ";
    repr(os, first->first);
    os << ": ";
    repr(os, first->second);
  }
  os << '}';
}

}  // namespace mpxx::detail::mgr
