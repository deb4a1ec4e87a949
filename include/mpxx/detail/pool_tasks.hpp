// mpxx/detail/pool_tasks.hpp - how Pool's calls become tasks and results
// come back: a call encoded as a task (make_task), map's chunks (ChunkCall,
// and RawChunkEntry for trivially copyable items), the decoding of results,
// the state an AsyncResult or an imap range waits on (ResultState,
// ImapState) and the delivery of a result to the callbacks. Included by
// mpxx/pool.hpp; internal: users never name these.
#pragma once

#include <array>
#include <bit>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/pool_core.hpp"
#include "mpxx/errors.hpp"

namespace mpxx {

// Python's callback / error_callback (mpxx/pool.hpp, which defines it after
// including this header; deliver() only names it in templates).
template <class T>
struct Callbacks;

namespace detail {

template <class T>
class ResultState : public ResultBase {
 public:
  void publish_value(T v) {
    std::lock_guard lk(mu_);
    value_.emplace(std::move(v));
    publish_locked();
  }
  const T& value() const { return *value_; }
  T take() { return std::move(*value_); }

 private:
  std::optional<T> value_;
};
template <>
class ResultState<void> : public ResultBase {
 public:
  void publish_value() {
    std::lock_guard lk(mu_);
    publish_locked();
  }
};

inline void call_error_callback(const std::function<void(const Error&)>& ecb, std::exception_ptr e) {
  if (!ecb) return;
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    ecb(err);
  } catch (...) {  // KeyboardInterrupt: not an error to report
  }
}

inline bool is_keyboard_interrupt(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const KeyboardInterrupt&) {
    return true;
  } catch (...) {
    return false;
  }
}

template <class T>
void deliver(ResultState<T>& st, const Callbacks<T>& cb, std::optional<T>&& value, std::exception_ptr err) {
  if (!st.claim()) return;
  if (err) {
    call_error_callback(cb.error_callback, err);
    st.publish_error(err);
    return;
  }
  if (cb.callback) cb.callback(*value);
  st.publish_value(std::move(*value));
}
template <class T>
  requires std::is_void_v<T>
void deliver(ResultState<T>& st, const Callbacks<T>& cb, std::exception_ptr err) {
  if (!st.claim()) return;
  if (err) {
    call_error_callback(cb.error_callback, err);
    st.publish_error(err);
    return;
  }
  if (cb.callback) cb.callback();
  st.publish_value();
}

template <class R>
R decode_result(std::span<const std::byte> payload) {
  wire::Reader r(payload);
  R v = wire::decode<R>(r);
  r.expect_done("a pool task's result");
  return v;
}

// map's unit of work, run in the worker: f(x) for each item x of a chunk,
// or f(*x) for starmap.
template <class F, bool Star>
struct ChunkCall {
  F f{};
  template <class A>
  decltype(auto) one(const A& x) const {
    if constexpr (Star)
      return std::apply(f, x);
    else
      return std::invoke(f, x);
  }
  template <class A>
  auto operator()(const std::vector<A>& xs) const {
    using R = decltype(one(xs.front()));
    if constexpr (std::is_void_v<R>) {
      for (const A& x : xs) one(x);
      return static_cast<std::uint64_t>(xs.size());
    } else {
      std::vector<std::decay_t<R>> out;
      out.reserve(xs.size());
      for (const A& x : xs) out.push_back(one(x));
      return out;
    }
  }
};
template <class F, bool Star>
struct CallableCodec<ChunkCall<F, Star>> {
  static constexpr bool transferable = CallableCodec<F>::transferable;
  static void encode(wire::Writer& w, const ChunkCall<F, Star>& c) { CallableCodec<F>::encode(w, c.f); }
  static ChunkCall<F, Star> decode(wire::Reader& r) { return ChunkCall<F, Star>{CallableCodec<F>::decode(r)}; }
};

// map's unit of work when items are trivially copyable: the items are read
// where they lie in the task message, and (for trivially copyable results)
// each result is written straight into the reply. The bytes on the wire are
// the same as ChunkCall's over a std::vector<A> (a u64 count, then the items;
// the reply a u64 count, then the results, or the count alone for void), so
// the parent encodes and decodes exactly as before; only the worker skips
// building two vectors and copying each of them once more.
template <class Chunk, class A>
struct RawChunkEntry {
  static void invoke(wire::Reader& in, wire::Writer* out) {
    const Chunk c = CallableCodec<Chunk>::decode(in);
    const auto n = in.pod<std::uint64_t>();
    if (n > in.remaining() / sizeof(A))
      throw ProtocolError("mpxx: a map chunk announces " + std::to_string(n) + " items in " +
                          std::to_string(in.remaining()) + " bytes");
    const std::byte* items = in.take(static_cast<std::size_t>(n) * sizeof(A)).data();
    auto item = [&](std::size_t i) {
      std::array<std::byte, sizeof(A)> b;
      std::memcpy(b.data(), items + i * sizeof(A), sizeof(A));
      return std::bit_cast<A>(b);
    };
    using R = std::decay_t<decltype(c.one(std::declval<const A&>()))>;
    if constexpr (std::is_void_v<R>) {
      for (std::size_t i = 0; i < n; ++i) c.one(item(i));
      if (out) wire::encode(*out, n);
    } else if constexpr (wire::raw_v<R> && !std::is_same_v<R, bool>) {
      if (!out) {
        for (std::size_t i = 0; i < n; ++i) c.one(item(i));
        return;
      }
      wire::encode(*out, n);
      std::byte* dst = out->extend(static_cast<std::size_t>(n) * sizeof(R));
      for (std::size_t i = 0; i < n; ++i, dst += sizeof(R)) {
        const R r = c.one(item(i));
        std::memcpy(dst, static_cast<const void*>(&r), sizeof(R));
      }
    } else {
      std::vector<R> rs;
      rs.reserve(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < n; ++i) rs.push_back(c.one(item(i)));
      if (out) wire::encode(*out, rs);
    }
  }
  static Target bind(wire::Reader& in) {
    Chunk c = CallableCodec<Chunk>::decode(in);
    return make_target(std::move(c), wire::decode<std::vector<A>>(in));
  }
  static inline const std::uint64_t id =
      register_entry(typeid(RawChunkEntry).name(), {&invoke, &bind});
};

template <class F, class... A>
TaskSpec make_task(TaskSpec t, const F& f, const A&... a) {
  t.call.clear();
  t.call.pod(std::uint64_t{0});  // the task id, filled in by the core
  encode_call(t.call, f, a...);
  return t;
}
template <class F, class... A>
TaskSpec make_task(const F& f, const A&... a) {
  return make_task(TaskSpec{}, f, a...);
}

template <class T>
inline constexpr bool is_tuple_v = false;
template <class... T>
inline constexpr bool is_tuple_v<std::tuple<T...>> = true;

template <class F, class Tup>
struct tuple_call_result;
template <class F, class... A>
struct tuple_call_result<F, std::tuple<A...>> {
  using type = std::invoke_result_t<const F&, A&...>;
};

template <class R>
inline constexpr bool result_ok_v = std::is_void_v<R> || wire::transferable_v<R>;

// The element a chunk carries for an input range's items.
template <class Rg>
using item_t = arg_t<std::ranges::range_value_t<Rg>>;

// Chunk's result: vector<R>, or a count for functions returning void.
template <class R>
using chunk_result_t = std::conditional_t<std::is_void_v<R>, std::uint64_t, std::vector<R>>;

template <class F, class A, bool Star>
struct map_result {
  using type = std::invoke_result_t<const F&, const A&>;
};
template <class F, class A>
struct map_result<F, A, true> {
  using type = decltype(std::apply(std::declval<const F&>(), std::declval<const A&>()));
};

template <class F, class Rg, bool Star>
struct map_of {
  using Fn = std::decay_t<F>;
  using A = item_t<Rg>;
  using R = typename map_result<Fn, A, Star>::type;
  using result = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
};

// The range behind imap / imap_unordered: hands out results as they are
// ready, pulling more input only as results are consumed.
template <class R>
struct ImapState {
  struct Chunk {
    std::vector<R> values;
    std::exception_ptr error;
  };
  std::mutex mu;
  std::condition_variable cv;
  bool ordered = true;
  std::map<long, Chunk> ready;  // by chunk index
  long submitted = 0, yielded = 0, next = 0;
  bool exhausted = false;
  std::size_t max_inflight = 8;
  std::function<bool()> feed;  // submits the next chunk; false at the end of input
  std::exception_ptr input_error;  // what feed threw: raised after every submitted chunk
  std::unique_ptr<ProgressBar> bar;

  // The next chunk in order (or completion order), or nullopt at the end.
  std::optional<Chunk> next_chunk() {
    InterruptibleWait interruptible;
    std::unique_lock lk(mu);
    for (;;) {
      while (!exhausted && static_cast<std::size_t>(submitted - yielded) < max_inflight) {
        lk.unlock();
        bool more = false;
        try {
          more = feed();
        } catch (...) {
          // Python's imap yields the results of the tasks dispatched before
          // its input failed, then raises the input's error, then ends.
          lk.lock();
          exhausted = true;
          input_error = std::current_exception();
          break;
        }
        lk.lock();
        if (more)
          ++submitted;
        else
          exhausted = true;
      }
      auto it = ordered ? ready.find(next) : ready.begin();
      if (it != ready.end()) {
        Chunk c = std::move(it->second);
        ready.erase(it);
        ++next;
        ++yielded;
        return c;
      }
      if (exhausted && yielded == submitted) {
        if (input_error) return Chunk{{}, std::exchange(input_error, nullptr)};
        if (bar) bar->finish();
        return std::nullopt;
      }
      cv.wait(lk);
    }
  }
};

}  // namespace detail
}  // namespace mpxx
