// mpxx/pool.hpp - Pool, AsyncResult, imap ranges.
//
// A pool of worker processes, as Python's multiprocessing.Pool:
//
//   int square(int x) { return x * x; }
//
//   mpxx::Pool pool(4);                                   // Pool(processes=4)
//   std::vector<int> v = pool.map(square, std::views::iota(0, 100));
//   mpxx::AsyncResult<int> r = pool.apply_async(square, 7);
//   int y = r.get(std::chrono::seconds(1));               // TimeoutError if late
//   for (int x : pool.imap(square, std::views::iota(0), {.chunksize = 64})) ...  // lazy
//   pool.apply_async(square, std::tuple{7}, {.callback = print, .timeout = 2s});
//   pool.close(); pool.join();                            // or let the destructor terminate
//
// What crosses: tasks always travel to the workers as bytes, as in Python
// (workers are started once and then fed), so a task is a function, a
// captureless lambda, a serializable function object or mpxx::partial, with
// arguments and a result that can be serialized (task.hpp); anything else
// is a compile error that says why. The initializer may be any callable
// under the fork start method (it is inherited), and must be transferable
// under spawn and forkserver.
//
// When a worker dies in the middle of a task (a crash, abort(), SIGKILL, the
// OOM killer), exactly the task it was running fails with WorkerLostError
// (the worker's pid, its exit code or signal, the task's index), the tasks
// it held but had not started run elsewhere, and a new worker takes its
// place. With {.timeout = d}, a task still running d after it started fails
// with TimeoutError and its worker is killed and replaced; cancel() drops a
// queued task or kills the worker running it. An initializer that throws
// fails the pool at once with that error, instead of respawning forever.
//
// Ctrl-C: while a thread is blocked on a pool result (get, wait, map, imap
// iteration), SIGINT stops the workers (they ignore SIGINT themselves, so
// one report is printed, not one per worker) and the waiting call throws
// mpxx::KeyboardInterrupt within milliseconds; uncaught, it ends the program
// as Ctrl-C would. When no thread waits on a pool, SIGINT keeps its default
// action. A program that installed its own SIGINT handler keeps it.
//
// Callbacks (callback, error_callback) run in the parent, on the pool's
// handler thread, in order of completion, never two at once, before get()
// returns; keep them short. The destructor terminates the pool (as Python's
// `with Pool() as p:` does); call close() and join() to let it finish.
//
// Thread safety: a Pool may be used from several threads at once, except
// that close/terminate/join and the destructor must not race each other.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/detail/callable.hpp"
#include "mpxx/detail/pool_core.hpp"
#include "mpxx/detail/pool_map.hpp"
#include "mpxx/detail/pool_tasks.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/process.hpp"

namespace mpxx {

struct PoolOptions {
  // Unset: process_cpu_count(). Set, it must be at least 1 (ValueError), as in Python.
  std::optional<int> processes{};
  // Unset: workers live as long as the pool. Set, it must be at least 1.
  std::optional<std::uint64_t> maxtasksperchild{};
  const Context* context = nullptr;     // default: get_context()
};

// Whether map/imap draw a progress bar on stderr: `.progress = true` draws
// it when stderr is a terminal; Progress::always() draws it regardless.
class Progress {
 public:
  Progress() = default;
  Progress(bool on) : mode_(on ? Mode::tty : Mode::off) {}  // NOLINT: `.progress = true`
  static Progress always() {
    Progress p;
    p.mode_ = Mode::always;
    return p;
  }
  bool enabled() const { return mode_ == Mode::always || (mode_ == Mode::tty && detail::stderr_is_tty()); }

 private:
  enum class Mode { off, tty, always };
  Mode mode_ = Mode::off;
};

struct MapOptions {
  // Items per task; 0 is Python's None. map/starmap: 0 picks CPython's
  // heuristic (about four tasks per worker); imap: 0 means 1.
  std::size_t chunksize = 0;
  Progress progress{};
  // Per task (chunk), counted from when a worker starts it.
  std::optional<std::chrono::nanoseconds> timeout{};
  // imap: tasks submitted ahead of the consumer (0: 4 per worker + 4).
  std::size_t max_inflight = 0;
  // map/starmap (and their _async forms): by default, as in Python, a map
  // with a failed task waits for all its tasks, then raises the error that
  // arrived first. fail_fast raises it as soon as it arrives; the other
  // tasks still run, their results are dropped.
  bool fail_fast = false;
};

namespace detail {
template <class T>
struct callback_type {
  using type = std::function<void(const T&)>;
};
template <>
struct callback_type<void> {
  using type = std::function<void()>;
};
}  // namespace detail

// Python's callback / error_callback for the *_async calls.
template <class T>
struct Callbacks {
  typename detail::callback_type<T>::type callback{};
  std::function<void(const Error&)> error_callback{};
};

// apply_async's keyword arguments.
template <class T>
struct AsyncOptions {
  typename detail::callback_type<T>::type callback{};
  std::function<void(const Error&)> error_callback{};
  std::optional<std::chrono::nanoseconds> timeout{};
};

// The result of an *_async call (multiprocessing.pool.AsyncResult).
template <class T>
class AsyncResult {
 public:
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::ResultState<T>> st) : st_(std::move(st)) {}

  // The value, once ready; the task's error (RemoteError, WorkerLostError,
  // TimeoutError, CancelledError, KeyboardInterrupt) is rethrown.
  T get() {
    wait();
    return value();
  }
  // TimeoutError if not ready within the timeout.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    if (!wait(timeout))
      throw TimeoutError("mpxx: the result was not ready within " +
                         std::to_string(std::max(0.0, std::chrono::duration<double>(timeout).count())) + " s");
    return value();
  }
  void wait() { state().wait_for(std::chrono::nanoseconds::max()); }
  // True if ready within the timeout.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return state().wait_for(detail::to_nanos(timeout));
  }
  bool ready() const { return state().ready(); }
  // Whether the task succeeded; ValueError while not ready (as Python).
  bool successful() const {
    if (!ready()) throw ValueError("mpxx: AsyncResult is not ready");
    return !state().failed();
  }
  // Cancels the task(s) unless finished: queued ones never run, a running
  // one's worker is killed and replaced. get() then throws CancelledError.
  bool cancel() { return state().cancel(); }

 protected:
  T take() {
    state().rethrow_if_failed();
    if constexpr (!std::is_void_v<T>) return st_->take();
  }

 private:
  detail::ResultState<T>& state() const {
    if (!st_) throw ValueError("mpxx: empty AsyncResult");
    return *st_;
  }
  T value() {
    state().rethrow_if_failed();
    if constexpr (!std::is_void_v<T>) return st_->value();
  }
  std::shared_ptr<detail::ResultState<T>> st_;
};

// An input range over imap's results: for (auto& r : pool.imap(f, xs)).
// Iterating throws a task's error at its position and may go on after it.
// If reading the input throws, the results of the items read before come
// first, then that error, then the end (docs/pool.md, "Errors").
template <class R>
class ImapRange {
 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    R& operator*() const { return range_->chunk_->values[range_->pos_]; }
    R* operator->() const { return &**this; }
    iterator& operator++() {
      range_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class ImapRange;
    explicit iterator(ImapRange* r) : range_(r) {}
    bool at_end() const { return !range_->chunk_; }
    ImapRange* range_ = nullptr;
  };

  explicit ImapRange(std::shared_ptr<detail::ImapState<R>> st) : st_(std::move(st)) {}
  ImapRange(ImapRange&&) = default;
  ImapRange& operator=(ImapRange&&) = default;

  // Single pass: begin() fetches the first result.
  iterator begin() {
    if (!started_) {
      started_ = true;
      advance();
    }
    return iterator(this);
  }
  std::default_sentinel_t end() const { return {}; }

 private:
  void advance() {
    if (chunk_ && ++pos_ < chunk_->values.size()) return;
    for (;;) {
      chunk_ = st_->next_chunk();
      pos_ = 0;
      if (!chunk_) return;
      if (chunk_->error) {
        auto e = chunk_->error;
        chunk_->values.clear();
        std::rethrow_exception(e);
      }
      if (!chunk_->values.empty()) return;
    }
  }

  std::shared_ptr<detail::ImapState<R>> st_;
  std::optional<typename detail::ImapState<R>::Chunk> chunk_;
  std::size_t pos_ = 0;
  bool started_ = false;
};

class Pool {
 public:
  // Pool(), Pool(4), Pool({.processes = 4, .maxtasksperchild = 100}).
  Pool() : Pool(PoolOptions{}) {}
  explicit Pool(int processes) : Pool(PoolOptions{.processes = processes}) {}
  explicit Pool(PoolOptions opts) : Pool(std::move(opts), detail::Target{}) {}
  // With an initializer: initializer(initargs...) runs in each worker
  // before its first task.
  template <class F, class... A>
    requires std::is_invocable_v<std::decay_t<F>&, detail::arg_t<A>&...>
  Pool(PoolOptions opts, F&& initializer, A&&... initargs)
      : Pool(std::move(opts),
             detail::make_target(std::forward<F>(initializer), std::forward<A>(initargs)...)) {}

  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) noexcept = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  // Terminates the workers and waits for them (like leaving a `with` block).
  ~Pool();

  // ------------------------------------------------------------ apply
  // apply(f, args...): f(args...) in a worker; blocks for the result.
  template <class F, class... A>
  auto apply(F&& f, A&&... a) {
    return apply_async(std::forward<F>(f), std::forward<A>(a)...).get();
  }

  // apply_async(f, args...) -> AsyncResult.
  template <class F, class... A>
    requires(!(sizeof...(A) == 1 && (detail::is_tuple_v<std::decay_t<A>> && ...) &&
               !std::is_invocable_v<const std::decay_t<F>&, detail::arg_t<A>&...>))
  auto apply_async(F&& f, A&&... a) {
    using Fn = std::decay_t<F>;
    return submit_call<std::invoke_result_t<const Fn&, detail::arg_t<A>&...>>(
        {}, Fn(std::forward<F>(f)), detail::arg_t<A>(std::forward<A>(a))...);
  }

  // Python's form: apply_async(f, std::tuple{args...}, {.callback = ...,
  // .error_callback = ..., .timeout = ...}).
  template <class F, class... A>
  auto apply_async(F&& f, std::tuple<A...> args,
                   AsyncOptions<typename detail::tuple_call_result<std::decay_t<F>, std::tuple<A...>>::type>
                       opts = {}) {
    using Fn = std::decay_t<F>;
    using R = typename detail::tuple_call_result<Fn, std::tuple<A...>>::type;
    return std::apply(
        [&](A&... xs) {
          return submit_call<R>(std::move(opts), Fn(std::forward<F>(f)), detail::arg_t<A>(xs)...);
        },
        args);
  }

  // -------------------------------------------------------------- map
  // map(f, range): [f(x) for x in range], in order; blocks. If a task
  // fails, map waits for the others, then throws the first error to arrive
  // (see MapOptions::fail_fast). A function returning void makes map return
  // void.
  template <class F, std::ranges::input_range Rg>
  auto map(F&& f, Rg&& input, MapOptions opts = {}) {
    return map_impl<false, true>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts),
                                 Callbacks<typename detail::map_of<F, Rg, false>::result>{})
        .take_all();
  }
  template <class F, std::ranges::input_range Rg>
  auto map_async(F&& f, Rg&& input, MapOptions opts = {},
                 Callbacks<typename detail::map_of<F, Rg, false>::result> cb = {}) {
    return map_impl<false, false>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts), std::move(cb));
  }
  // starmap(f, range of tuples): [f(*args) for args in range].
  template <class F, std::ranges::input_range Rg>
  auto starmap(F&& f, Rg&& input, MapOptions opts = {}) {
    return map_impl<true, true>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts),
                                Callbacks<typename detail::map_of<F, Rg, true>::result>{})
        .take_all();
  }
  template <class F, std::ranges::input_range Rg>
  auto starmap_async(F&& f, Rg&& input, MapOptions opts = {},
                     Callbacks<typename detail::map_of<F, Rg, true>::result> cb = {}) {
    return map_impl<true, false>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts), std::move(cb));
  }

  // ------------------------------------------------------------- imap
  // Lazy: input is pulled only as results are consumed (at most
  // opts.max_inflight tasks ahead), so an endless range works.
  template <class F, std::ranges::input_range Rg>
  auto imap(F&& f, Rg&& input, MapOptions opts = {}) {
    return imap_impl<false>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts), true);
  }
  template <class F, std::ranges::input_range Rg>
  auto imap_unordered(F&& f, Rg&& input, MapOptions opts = {}) {
    return imap_impl<false>(std::forward<F>(f), std::forward<Rg>(input), std::move(opts), false);
  }

  // --------------------------------------------------------- lifetime
  // No more tasks; workers exit once the queued ones are done.
  void close();
  // Stops the workers now; unfinished tasks fail with CancelledError.
  void terminate();
  // Waits for the workers to exit; ValueError before close()/terminate().
  // (apply*, map*, starmap* and imap* on a closed or terminated pool raise
  // ValueError at the call, as in Python.)
  void join();

  int processes() const;
  // The current workers' pids (they change as workers are replaced).
  std::vector<pid_t> worker_pids() const;

 private:
  // map_async's handle: an AsyncResult whose value map moves out.
  template <class T>
  class MapAsync : public AsyncResult<T> {
   public:
    using AsyncResult<T>::AsyncResult;
    T take_all() {
      this->wait();
      return this->take();
    }
  };

  Pool(PoolOptions opts, detail::Target init);
  detail::PoolCore& core() const;

  template <class R, class Fn, class... Args>
  AsyncResult<R> submit_call(AsyncOptions<R> opts, const Fn& f, const Args&... a) {
    static_assert(detail::call_transferable_v<Fn, Args...>,
                  "mpxx::Pool: a task travels to a worker process as bytes: use a function, a "
                  "captureless lambda, a serializable function object or mpxx::partial, with "
                  "arguments that can be serialized (see mpxx/task.hpp)");
    static_assert(detail::result_ok_v<R>,
                  "mpxx::Pool: the task's result type cannot be serialized (see mpxx/task.hpp)");
    auto st = std::make_shared<detail::ResultState<R>>();
    detail::TaskSpec t = detail::make_task(f, a...);
    t.timeout = opts.timeout;
    t.user_code = opts.callback || opts.error_callback;
    t.done = [st, cb = Callbacks<R>{std::move(opts.callback), std::move(opts.error_callback)}](
                 const detail::TaskOutcome& o) {
      if constexpr (std::is_void_v<R>) {
        detail::deliver(*st, cb, o.error);
      } else {
        std::optional<R> v;
        std::exception_ptr err = o.error;
        if (!err) {
          try {
            v.emplace(detail::decode_result<R>(o.payload));
          } catch (...) {
            err = std::current_exception();
          }
        }
        detail::deliver(*st, cb, std::move(v), err);
      }
    };
    std::vector<detail::TaskSpec> one;
    one.push_back(std::move(t));
    auto ids = core().submit(std::move(one));
    st->attach(core_, std::move(ids));
    return AsyncResult<R>(st);
  }

  // CPython's default: about four chunks per worker.
  std::size_t default_chunksize(std::size_t n) const {
    const std::size_t div = static_cast<std::size_t>(processes()) * 4;
    std::size_t c = n / div;
    if (n % div) ++c;
    return c == 0 ? 1 : c;
  }

  // map's tasks are a stream the core pulls from as workers make room
  // (detail/pool_map.hpp): only the tasks in flight exist encoded.
  template <bool Star, bool Blocking, class F, class Rg, class T>
  MapAsync<T> map_impl(F&& f, Rg&& input, MapOptions opts, Callbacks<T> cb) {
    using M = detail::map_of<F, Rg, Star>;
    using Fn = typename M::Fn;
    using A = typename M::A;
    using R = typename M::R;
    using Chunk = detail::ChunkCall<Fn, Star>;
    static_assert(detail::call_transferable_v<Chunk, std::vector<A>>,
                  "mpxx::Pool::map: the function and the items travel to worker processes as bytes: "
                  "use a function, a captureless lambda, a serializable function object or "
                  "mpxx::partial, over items that can be serialized (see mpxx/task.hpp)");
    static_assert(detail::result_ok_v<R>, "mpxx::Pool::map: the result type cannot be serialized");
    using Src = detail::map_source_t<Rg, A, Blocking>;
    using Stream = detail::MapStream<Star, Fn, A, R, T, Src>;

    Src src = detail::map_source<A, Blocking>(std::forward<Rg>(input));
    const auto n = static_cast<std::size_t>(std::ranges::size(src));
    auto st = std::make_shared<detail::ResultState<T>>();
    detail::MapParams<Fn, T> p{Fn(std::forward<F>(f)), n, opts.chunksize ? opts.chunksize : default_chunksize(n),
                               opts.timeout, opts.fail_fast, std::move(cb), st, core_,
                               std::make_unique<detail::ProgressBar>(Star ? "starmap" : "map",
                                                                     static_cast<long>(n),
                                                                     opts.progress.enabled())};
    auto stream = std::make_shared<Stream>(std::move(src), std::move(p));
    if (stream->chunks() == 0) {
      core().submit({});  // as Python: a pool that is not running refuses even an empty map
      stream->finish();
      return MapAsync<T>(st);
    }
    st->attach_stream(core_, core().submit_stream(stream));
    return MapAsync<T>(st);
  }

  template <bool Star, class F, class Rg>
  auto imap_impl(F&& f, Rg&& input, MapOptions opts, bool ordered) {
    using M = detail::map_of<F, Rg, Star>;
    using Fn = typename M::Fn;
    using A = typename M::A;
    using R = typename M::R;
    using Chunk = detail::ChunkCall<Fn, false>;
    static_assert(!std::is_void_v<R>, "mpxx::Pool::imap: the function must return a value");
    static_assert(detail::call_transferable_v<Chunk, std::vector<A>>,
                  "mpxx::Pool::imap: the function and the items travel to worker processes as "
                  "bytes (see mpxx/task.hpp)");
    static_assert(detail::result_ok_v<R>, "mpxx::Pool::imap: the result type cannot be serialized");
    // As Python, refuse at the call, not at the first result, on a pool
    // that is not running (an empty submit checks exactly that).
    core().submit({});
    using V = std::views::all_t<Rg>;
    struct Feeder {
      V view;
      std::ranges::iterator_t<V> it;
      explicit Feeder(V v) : view(std::move(v)), it(std::ranges::begin(view)) {}
    };

    auto st = std::make_shared<detail::ImapState<R>>();
    st->ordered = ordered;
    st->max_inflight = opts.max_inflight ? opts.max_inflight : static_cast<std::size_t>(processes()) * 4 + 4;
    long total = -1;
    if constexpr (std::ranges::sized_range<Rg>) total = static_cast<long>(std::ranges::size(input));
    st->bar = std::make_unique<detail::ProgressBar>(ordered ? "imap" : "imap_unordered", total,
                                                    opts.progress.enabled());
    auto feeder = std::make_shared<Feeder>(std::views::all(std::forward<Rg>(input)));
    const std::size_t cs = opts.chunksize ? opts.chunksize : 1;
    std::weak_ptr<detail::ImapState<R>> weak = st;
    st->feed = [core = core_, feeder, weak, cs, fn = Fn(std::forward<F>(f)), timeout = opts.timeout,
                index = 0L, chunk_no = 0L, input_error = std::exception_ptr()]() mutable -> bool {
      // An input that throws: the items read before it still make a chunk;
      // the error is thrown by the next call (ImapState keeps it for last).
      if (input_error) std::rethrow_exception(std::exchange(input_error, nullptr));
      std::vector<A> chunk;
      try {
        while (chunk.size() < cs && feeder->it != std::ranges::end(feeder->view)) {
          chunk.emplace_back(*feeder->it);
          ++feeder->it;
        }
      } catch (...) {
        if (chunk.empty()) throw;
        input_error = std::current_exception();
      }
      if (chunk.empty()) return false;
      detail::TaskSpec t = detail::make_task(Chunk{fn}, chunk);
      t.timeout = timeout;
      t.index = index;
      index += static_cast<long>(chunk.size());
      t.done = [weak, k = chunk_no++, count = static_cast<long>(chunk.size())](const detail::TaskOutcome& o) {
        auto s = weak.lock();
        if (!s) return;
        typename detail::ImapState<R>::Chunk c;
        c.error = o.error;
        if (!c.error) {
          try {
            c.values = detail::decode_result<std::vector<R>>(o.payload);
          } catch (...) {
            c.error = std::current_exception();
          }
        }
        s->bar->advance(count);
        std::lock_guard lk(s->mu);
        s->ready.emplace(k, std::move(c));
        s->cv.notify_all();
      };
      std::vector<detail::TaskSpec> one;
      one.push_back(std::move(t));
      core->submit(std::move(one));
      return true;
    };
    return ImapRange<R>(st);
  }

  std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace mpxx
