// mpxx/detail/pool_map.hpp - a map's tasks as a stream: the pool core pulls
// one chunk at a time from MapStream as workers make room, so only the
// tasks in flight exist encoded, whatever the input's length; the chunks'
// results go straight into the result vector (docs/design.md, "Streamed
// maps"). Included by mpxx/pool.hpp; internal: users never name these.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpxx/detail/pool_core.hpp"
#include "mpxx/detail/pool_tasks.hpp"
#include "mpxx/errors.hpp"

namespace mpxx::detail {

template <class Rg>
inline constexpr bool is_iota_v = false;
template <class W, class B>
inline constexpr bool is_iota_v<std::ranges::iota_view<W, B>> = true;

// Whether a map reads its input where it lies, as workers make room, rather
// than collecting its items first (Python's list(iterable)): a sized forward
// range that outlives the map. A blocking map's input does (the caller waits
// for it); map_async's only when the map owns it (a container moved in) or
// it refers to nothing (iota).
template <class Rg, bool Blocking>
inline constexpr bool map_in_place_v =
    std::ranges::sized_range<Rg> && std::ranges::forward_range<Rg> &&
    (Blocking || is_iota_v<std::remove_cvref_t<Rg>> ||
     (!std::is_lvalue_reference_v<Rg> && !std::ranges::view<std::remove_cvref_t<Rg>>));

template <class Rg, class A, bool Blocking>
using map_source_t =
    std::conditional_t<map_in_place_v<Rg, Blocking>, std::views::all_t<Rg>, std::vector<A>>;

template <class A, bool Blocking, class Rg>
map_source_t<Rg, A, Blocking> map_source(Rg&& input) {
  if constexpr (map_in_place_v<Rg, Blocking>) {
    return std::views::all(std::forward<Rg>(input));
  } else {
    std::vector<A> collected;
    if constexpr (std::ranges::sized_range<Rg>) collected.reserve(std::ranges::size(input));
    for (auto&& x : input) collected.emplace_back(std::forward<decltype(x)>(x));
    return collected;
  }
}

// What a map's stream needs besides its input.
template <class Fn, class T>
struct MapParams {
  Fn fn;
  std::size_t n = 0, cs = 1;  // items, items per chunk
  std::optional<std::chrono::nanoseconds> timeout;
  bool fail_fast = false;
  Callbacks<T> cb;
  std::shared_ptr<ResultState<T>> st;
  std::weak_ptr<PoolCore> core;
  std::unique_ptr<ProgressBar> bar;
};

template <bool Star, class Fn, class A, class R, class T, class Src>
class MapStream final : public TaskStream,
                        public std::enable_shared_from_this<MapStream<Star, Fn, A, R, T, Src>> {
  using Chunk = ChunkCall<Fn, Star>;
  using CR = chunk_result_t<R>;
  // Results of trivially copyable types are copied straight from each
  // chunk's message into their place; others are collected per chunk.
  static constexpr bool direct =
      !std::is_void_v<R> && wire::raw_v<R> && !std::is_same_v<R, bool> && std::is_default_constructible_v<R>;
  static constexpr bool raw_items = wire::raw_v<A> && !std::is_same_v<A, bool>;
  // Items of our own collected copy are moved into their chunk; the
  // caller's range is only read.
  static constexpr bool owned = std::is_same_v<Src, std::vector<A>>;

 public:
  MapStream(Src src, MapParams<Fn, T> p)
      : src_(std::move(src)), it_(std::ranges::begin(src_)), p_(std::move(p)),
        nchunks_((p_.n + p_.cs - 1) / p_.cs), left_(nchunks_) {
    if constexpr (direct) {
      wire::reserve_destination(all_, p_.n);  // huge pages for a large result
      all_.resize(p_.n);
    } else if constexpr (!std::is_void_v<T>) {
      parts_.resize(nchunks_);
    }
    if constexpr (raw_items) {
      // What every raw chunk's message starts with: [task id][entry][callable].
      prefix_.pod(std::uint64_t{0});
      prefix_.pod(RawChunkEntry<Chunk, A>::id);
      CallableCodec<Chunk>::encode(prefix_, Chunk{p_.fn});
    }
  }

  std::size_t chunks() const noexcept { return nchunks_; }

  Next next(TaskSpec& t) override {
    if (k_ == nchunks_) return Next::end;
    const std::size_t lo = k_ * p_.cs, hi = std::min(p_.n, lo + p_.cs);
    try {
      encode(t, lo, hi);
    } catch (...) {
      input_failed_ = true;
      throw;
    }
    t.timeout = p_.timeout;
    t.index = static_cast<long>(lo);
    t.user_code = p_.cb.callback || p_.cb.error_callback;
    t.done = Completion(this->shared_from_this(), static_cast<long>(k_), &on_done);
    ++k_;
    return Next::task;
  }

  void dropped(std::exception_ptr why) override {
    // An input that throws fails the map with its error (as Python's
    // list(iterable) would, before any task): the chunks handed out before
    // are cancelled.
    record(why, input_failed_);
    if (input_failed_)
      if (auto core = p_.core.lock()) core->cancel_stream(id);
    const std::size_t never = nchunks_ - k_;
    if (never && left_.fetch_sub(never) == never) finish();
  }

  // Publishes the result (or the first error) once every chunk reported.
  void finish() {
    p_.bar->finish();
    if (error_) {  // every chunk has reported: no lock needed
      fail(error_);
    } else if constexpr (std::is_void_v<T>) {
      deliver(*p_.st, p_.cb, nullptr);
    } else if constexpr (direct) {
      deliver(*p_.st, p_.cb, std::optional<T>(std::move(all_)), nullptr);
    } else {
      T all;
      std::size_t total = 0;
      for (auto& part : parts_) total += part.size();
      all.reserve(total);
      for (auto& part : parts_)
        for (auto& v : part) all.push_back(std::move(v));
      deliver(*p_.st, p_.cb, std::optional<T>(std::move(all)), nullptr);
    }
  }

 private:
  void encode(TaskSpec& t, std::size_t lo, std::size_t hi) {
    if constexpr (raw_items) {
      // Items go straight from the range into the message, laid out as the
      // std::vector<A> the worker decodes.
      t.call.reserve(prefix_.size() + 8 + (hi - lo) * sizeof(A));
      t.call.put(prefix_.data(), prefix_.size());
      t.call.pod(static_cast<std::uint64_t>(hi - lo));
      std::byte* out = t.call.extend((hi - lo) * sizeof(A));
      for (std::size_t i = lo; i < hi; ++i, ++it_, out += sizeof(A)) {
        const A item = *it_;
        std::memcpy(out, &item, sizeof(A));
      }
    } else {
      chunk_.clear();
      chunk_.reserve(hi - lo);
      for (std::size_t i = lo; i < hi; ++i, ++it_) {
        if constexpr (owned)
          chunk_.emplace_back(std::move(*it_));
        else
          chunk_.emplace_back(*it_);
      }
      t = make_task(std::move(t), Chunk{p_.fn}, chunk_);
      chunk_.clear();
    }
  }

  static void on_done(MapStream& ms, long k, const TaskOutcome& o) {
    const std::size_t lo = static_cast<std::size_t>(k) * ms.p_.cs;
    const std::size_t count = std::min(ms.p_.n, lo + ms.p_.cs) - lo;
    std::exception_ptr err = o.error;
    if (!err) {
      try {
        if constexpr (direct) {
          wire::Reader r(o.payload);
          const auto m = r.pod<std::uint64_t>();
          if (m != count)
            throw ProtocolError("mpxx: a map chunk came back with " + std::to_string(m) + " results for " +
                                std::to_string(count) + " items");
          r.get(ms.all_.data() + lo, count * sizeof(R));
          r.expect_done("a map chunk's results");
        } else if constexpr (!std::is_void_v<T>) {
          ms.parts_[static_cast<std::size_t>(k)] = decode_result<CR>(o.payload);
        } else {
          (void)decode_result<CR>(o.payload);
        }
      } catch (...) {
        err = std::current_exception();
      }
    }
    if (err) ms.record(err, false);
    ms.p_.bar->advance(static_cast<long>(count));
    if (ms.left_.fetch_sub(1) == 1) ms.finish();
  }

  // Python's map waits for every task and raises the first error to arrive;
  // a Ctrl-C is no task's error: it is raised at once, as is every error
  // with fail_fast. The input's own error takes precedence.
  void record(const std::exception_ptr& err, bool input) {
    const bool now = p_.fail_fast || is_keyboard_interrupt(err);
    {
      std::lock_guard lk(error_mu_);
      if (!error_ || now || input) error_ = err;
    }
    if (now) fail(err);
  }

  void fail(const std::exception_ptr& e) {
    if constexpr (std::is_void_v<T>)
      deliver(*p_.st, p_.cb, e);
    else
      deliver(*p_.st, p_.cb, std::optional<T>{}, e);
  }

  Src src_;
  std::ranges::iterator_t<Src> it_;
  MapParams<Fn, T> p_;
  std::size_t nchunks_;
  std::size_t k_ = 0;  // chunks handed out (under the core's lock)
  bool input_failed_ = false;
  std::vector<A> chunk_;  // the chunk being encoded, when items are not raw
  wire::Writer prefix_;
  std::conditional_t<direct, std::vector<std::conditional_t<direct, R, int>>, int> all_{};
  std::conditional_t<direct || std::is_void_v<T>, int, std::vector<CR>> parts_{};
  std::atomic<std::size_t> left_;  // chunks not yet reported
  std::mutex error_mu_;
  std::exception_ptr error_;  // the first task error to arrive
};

}  // namespace mpxx::detail
