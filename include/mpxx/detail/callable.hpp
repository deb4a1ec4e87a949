// mpxx/detail/callable.hpp - how a callable crosses a process boundary.
//
// A call travels as  [entry id][callable state][arguments...]:
//  * entry id: a 64-bit hash of the mangled name of Entry<F, Args...>, the
//    function template instance that decodes and invokes this kind of call.
//    Every Entry the program can send registers itself in a static
//    initializer, so every process of the same binary - forked, re-executed
//    (spawn, forkserver) or started by mpirun on another host - holds the same
//    table before main() runs. An id not in the table is a ProtocolError.
//  * callable state: for a function pointer, the build-id of the module it
//    lives in, its offset from that module's load address, and a hash of its
//    first code bytes and that offset. The receiver finds the module by
//    build-id, checks that the offset falls in an executable segment and that
//    the code bytes and offset hash the same, and only then calls it: a
//    forged or corrupted reference is a ProtocolError, never a jump to an
//    arbitrary address (nor to another function that begins alike).
//    For a function object: nothing if it is empty (captureless lambdas),
//    else its cereal-serialized members. mpxx::partial carries its inner
//    callable and bound values.
//  * arguments: each encoded as a value (codec.hpp).
//
// A capturing lambda has neither a name nor serializable state: it can only
// run in a forked child, which inherits it in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpxx/detail/codec.hpp"

namespace mpxx::detail {

struct Target;
// Decodes a call and runs it, encoding its result (if any) into out.
using Invoker = void (*)(wire::Reader& in, wire::Writer* out);
// Decodes a call into a Target, to run later (and to send on again).
using Binder = Target (*)(wire::Reader& in);
struct EntryFns {
  Invoker invoke;
  Binder bind;
};

// Registers an entry under the hash of its mangled name and returns the id.
std::uint64_t register_entry(const char* mangled_name, EntryFns fns) noexcept;
// Looks an id up; unknown ids throw ProtocolError.
EntryFns find_entry(std::uint64_t id);

// A checked reference to a function in a loaded module.
struct FnRef {
  std::uint64_t module;     // hash of the module's GNU build-id (or of its path)
  std::uint64_t offset;     // address - module load address
  std::uint64_t code_hash;  // hash of the first bytes of the function's code and of offset
};
FnRef make_fn_ref(const void* fn);       // throws ValueError if fn is not in a loaded module
const void* resolve_fn_ref(const FnRef&);  // throws ProtocolError

// ---------------------------------------------------------- callable codec

template <class F>
struct CallableCodec {  // function objects
  static constexpr bool empty = std::is_empty_v<F> && std::is_default_constructible_v<F>;
  static constexpr bool serializable =
      !empty && wire::cereal_v<F> && std::is_default_constructible_v<F>;
  static constexpr bool transferable = empty || serializable;
  static void encode(wire::Writer& w, const F& f) {
    if constexpr (serializable) wire::encode(w, f);
  }
  static F decode(wire::Reader& r) {
    if constexpr (serializable)
      return wire::decode<F>(r);
    else
      return F{};
  }
};

template <class R, class... A>
struct FnPtrCodec {
  using Ptr = R (*)(A...);
  static constexpr bool transferable = true;
  static void encode(wire::Writer& w, Ptr f) { w.pod(make_fn_ref(reinterpret_cast<const void*>(f))); }
  static Ptr decode(wire::Reader& r) {
    return reinterpret_cast<Ptr>(const_cast<void*>(resolve_fn_ref(r.pod<FnRef>())));
  }
};
template <class R, class... A>
struct CallableCodec<R (*)(A...)> : FnPtrCodec<R, A...> {};
template <class R, class... A>
struct CallableCodec<R (*)(A...) noexcept> {
  using Ptr = R (*)(A...) noexcept;
  static constexpr bool transferable = true;
  static void encode(wire::Writer& w, Ptr f) { w.pod(make_fn_ref(reinterpret_cast<const void*>(f))); }
  static Ptr decode(wire::Reader& r) {
    return reinterpret_cast<Ptr>(const_cast<void*>(resolve_fn_ref(r.pod<FnRef>())));
  }
};

}  // namespace mpxx::detail

namespace mpxx {

// partial(f, bound...) - Python's functools.partial: a callable that calls
// f(bound..., args...). It crosses a process boundary when f and every bound
// value can.
//
//   int add(int a, int b) { return a + b; }
//   auto add10 = mpxx::partial(add, 10);      // add10(5) == 15
//   mpxx::Process p(add10, 5);                // works under spawn too
template <class F, class... B>
class Partial {
 public:
  Partial() = default;
  explicit Partial(F f, B... b) : f_(std::move(f)), bound_(std::move(b)...) {}

  template <class... A>
  decltype(auto) operator()(A&&... a) const {
    return std::apply(
        [&](const B&... b) -> decltype(auto) { return std::invoke(f_, b..., std::forward<A>(a)...); },
        bound_);
  }
  const F& func() const noexcept { return f_; }
  const std::tuple<B...>& args() const noexcept { return bound_; }

 private:
  template <class>
  friend struct detail::CallableCodec;
  F f_{};
  std::tuple<B...> bound_;
};

namespace detail {
// String literals and C strings travel as std::string.
template <class T>
using arg_t = std::conditional_t<std::is_same_v<std::decay_t<T>, const char*> ||
                                     std::is_same_v<std::decay_t<T>, char*>,
                                 std::string, std::decay_t<T>>;
}  // namespace detail

template <class F, class... B>
Partial<std::decay_t<F>, detail::arg_t<B>...> partial(F&& f, B&&... b) {
  return Partial<std::decay_t<F>, detail::arg_t<B>...>(std::forward<F>(f), std::forward<B>(b)...);
}

}  // namespace mpxx

namespace mpxx::detail {

template <class F, class... B>
struct CallableCodec<Partial<F, B...>> {
  static constexpr bool transferable =
      CallableCodec<F>::transferable && (wire::transferable_v<B> && ...);
  static void encode(wire::Writer& w, const Partial<F, B...>& p) {
    CallableCodec<F>::encode(w, p.f_);
    std::apply([&](const B&... b) { (wire::encode(w, b), ...); }, p.bound_);
  }
  static Partial<F, B...> decode(wire::Reader& r) {
    F f = CallableCodec<F>::decode(r);
    // Braced initialization evaluates left to right.
    return std::apply([&](auto&&... b) { return Partial<F, B...>(std::move(f), std::move(b)...); },
                      std::tuple<B...>{wire::decode<B>(r)...});
  }
};

// True when a call f(args...) can be encoded and run in another process.
template <class F, class... A>
inline constexpr bool call_transferable_v =
    CallableCodec<F>::transferable && (wire::transferable_v<A> && ...);

struct Target;
template <class F, class... A>
Target make_target(F&& f, A&&... a);

// The function that decodes and runs one kind of call.
template <class F, class... A>
struct Entry {
  using R = std::invoke_result_t<const F&, A&...>;
  static void invoke(wire::Reader& in, wire::Writer* out) {
    const F f = CallableCodec<F>::decode(in);
    std::tuple<A...> args{wire::decode<A>(in)...};
    if constexpr (std::is_void_v<R>) {
      std::apply([&](A&... a) { std::invoke(f, a...); }, args);
    } else {
      R r = std::apply([&](A&... a) -> R { return std::invoke(f, a...); }, args);
      if (out) wire::encode(*out, r);
    }
  }
  static Target bind(wire::Reader& in);
  static inline const std::uint64_t id = register_entry(typeid(Entry).name(), {&invoke, &bind});
};

// Writes [entry id][callable state][args...].
template <class F, class... A>
void encode_call(wire::Writer& w, const F& f, const A&... args) {
  static_assert(call_transferable_v<F, A...>);
  w.pod(Entry<F, A...>::id);
  CallableCodec<F>::encode(w, f);
  (wire::encode(w, args), ...);
}

// Reads an entry id and runs the call; the result (if any) goes to `out`.
void invoke_call(wire::Reader& in, wire::Writer* out);
// Reads an entry id and the call, without running it.
Target bind_call(wire::Reader& in);

// Why a call cannot cross, for error messages ("" if it can).
template <class F, class... A>
std::string why_not_transferable() {
  if constexpr (!CallableCodec<F>::transferable) {
    return "the target is a capturing lambda or a function object without a cereal serialize() "
           "member; a spawned child starts from a fresh copy of the program and cannot receive "
           "captured state. Pass the values as arguments (Process(f, args...) or "
           "mpxx::partial(f, values...)), or use the 'fork' start method";
  } else {
    std::string bad;
    ((wire::transferable_v<A> ? void() : void(bad += (bad.empty() ? "" : ", ") + wire::type_name<A>())),
     ...);
    if (!bad.empty())
      return "argument type(s) " + bad +
             " cannot be serialized; give them a cereal serialize() member or use the 'fork' "
             "start method";
    return "";
  }
}


// A callable with its arguments bound, held two ways: in memory, to run in
// this process or a forked child, and as an encoder that writes it as a call
// for another process (absent when it cannot cross).
struct Target {
  std::function<void()> local;
  std::function<void(wire::Writer&)> encode;  // empty if the call cannot cross
  std::string why_not;                         // why, when encode is empty
};

template <class F, class... A>
Target make_target(F&& f, A&&... a) {
  using Fn = std::decay_t<F>;
  Target t;
  if constexpr (call_transferable_v<Fn, arg_t<A>...>) {
    t.encode = [f = Fn(f), ... a = arg_t<A>(a)](wire::Writer& w) { encode_call(w, f, a...); };
  } else {
    t.why_not = why_not_transferable<Fn, arg_t<A>...>();
  }
  t.local = [f = Fn(std::forward<F>(f)), ... a = arg_t<A>(std::forward<A>(a))]() mutable {
    std::invoke(f, a...);
  };
  return t;
}


template <class F, class... A>
Target Entry<F, A...>::bind(wire::Reader& in) {
  F f = CallableCodec<F>::decode(in);
  std::tuple<A...> args{wire::decode<A>(in)...};
  return std::apply([&](A&... a) { return make_target(std::move(f), std::move(a)...); }, args);
}

}  // namespace mpxx::detail
