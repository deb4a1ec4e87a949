// mpxx/detail/pool_core.hpp - the type-independent part of Pool.
//
// The typed front end (pool.hpp) turns each call into a task: the encoded
// call (callable.hpp) plus a completion that decodes the result. PoolCore
// owns the workers (through a Transport, src/pool/transport.hpp), knows
// which task is on which worker, and runs every completion that calls user
// code on its handler thread, one at a time, in order of arrival (others may
// run on a thread waiting for a result). Internal: users never name these
// types.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpxx/context.hpp"
#include "mpxx/detail/buffer.hpp"

namespace mpxx::detail {

// What a completion receives: the encoded result, or the error.
struct TaskOutcome {
  std::span<const std::byte> payload;  // valid only during the call
  std::exception_ptr error;            // set when the task failed
};

// What runs when a task ends: a function of a context and a number. The
// tasks of one map share its context, so a map of 100k tasks allocates
// nothing per task for its completions (a std::function holding a
// shared_ptr and a chunk number would allocate for each). Any other
// callable is kept in a context of its own. Move-only; empty when moved
// from.
class Completion {
 public:
  Completion() = default;
  Completion(std::nullptr_t) noexcept {}  // NOLINT(google-explicit-constructor)
  template <class Ctx>
  Completion(std::shared_ptr<Ctx> ctx, long arg,
             std::type_identity_t<void (*)(Ctx&, long, const TaskOutcome&)> fn)
      : call_(&trampoline<Ctx>), fn_(reinterpret_cast<void (*)()>(fn)), ctx_(std::move(ctx)),
        arg_(arg) {}
  template <class F>
    requires(!std::is_same_v<std::decay_t<F>, Completion> &&
             std::is_constructible_v<std::decay_t<F>, F> &&
             std::is_invocable_v<std::decay_t<F>&, const TaskOutcome&>)
  Completion(F&& f)  // NOLINT(google-explicit-constructor): a lambda converts, as to std::function
      : Completion(std::make_shared<std::decay_t<F>>(std::forward<F>(f)), 0,
                   [](std::decay_t<F>& g, long, const TaskOutcome& o) { g(o); }) {}
  Completion(Completion&& o) noexcept
      : call_(std::exchange(o.call_, nullptr)), fn_(std::exchange(o.fn_, nullptr)),
        ctx_(std::move(o.ctx_)), arg_(o.arg_) {}
  Completion& operator=(Completion&& o) noexcept {
    call_ = std::exchange(o.call_, nullptr);
    fn_ = std::exchange(o.fn_, nullptr);
    ctx_ = std::move(o.ctx_);
    arg_ = o.arg_;
    return *this;
  }
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  void operator()(const TaskOutcome& o) const {
    if (!call_) throw std::bad_function_call();  // as an empty std::function would
    call_(fn_, ctx_.get(), arg_, o);
  }
  explicit operator bool() const noexcept { return call_ != nullptr; }

 private:
  template <class Ctx>
  static void trampoline(void (*fn)(), void* ctx, long arg, const TaskOutcome& o) {
    reinterpret_cast<void (*)(Ctx&, long, const TaskOutcome&)>(fn)(*static_cast<Ctx*>(ctx), arg, o);
  }
  void (*call_)(void (*)(), void*, long, const TaskOutcome&) = nullptr;
  void (*fn_)() = nullptr;
  std::shared_ptr<void> ctx_;
  long arg_ = 0;
};

struct TaskSpec {
  wire::Writer call;                            // [entry id][callable][args]
  std::optional<std::chrono::nanoseconds> timeout;  // from when the task starts
  long index = 0;                               // reported in WorkerLostError
  Completion done;                              // runs exactly once
  bool user_code = false;  // done may run the user's callbacks: only on the handler thread
};

// A source of tasks the core pulls from as workers make room: a map's or an
// imap's input, encoded one chunk at a time, so that only the tasks in
// flight exist encoded, whatever the input's length (docs/design.md,
// "Streamed maps").
class TaskStream {
 public:
  enum class Next { task, later, end };
  virtual ~TaskStream() = default;
  // Fills `t` with the next task, or says there is none yet (later: the
  // core asks again after resume()) or ever (end). Called under the core's
  // lock, one call at a time. May throw (the input's error): the core then
  // drops the stream and calls dropped() with that error.
  virtual Next next(TaskSpec& t) = 0;
  // The core dropped the stream before its end: the input threw, the pool
  // stopped (terminate, a broken pool, Ctrl-C) or the stream was cancelled.
  // Called once, outside the core's lock; never after next() said end.
  virtual void dropped(std::exception_ptr why) = 0;
  std::uint64_t id = 0;  // set by the core before it first calls next()
};

struct PoolConfig {
  int processes = 0;
  std::uint64_t maxtasksperchild = 0;
  const Context* context = nullptr;
  // The initializer, encoded as a call (empty: none), and the same call in
  // memory for fork workers when it cannot be encoded.
  std::vector<std::byte> init_call;
  std::function<void()> local_init;
  std::string init_why_not;  // why init cannot cross, when only local_init is set
};

class PoolCore {
 public:
  // Starts the handler thread, which starts the workers.
  static std::shared_ptr<PoolCore> create(PoolConfig cfg);
  virtual ~PoolCore() = default;

  // Queues tasks (in order) and returns their ids. ValueError when the pool
  // is not running; the initializer's error when it failed.
  virtual std::vector<std::uint64_t> submit(std::vector<TaskSpec> tasks) = 0;
  // Queues a stream (in order with submitted tasks) and returns its id;
  // its tasks are pulled as workers make room and keep coming after
  // close(). ValueError when the pool is not running.
  virtual std::uint64_t submit_stream(std::shared_ptr<TaskStream> stream) = 0;
  // Asks a stream that said `later` again.
  virtual void resume(std::uint64_t stream) = 0;
  // Drops the stream (dropped(CancelledError)) if still queued, and cancels
  // its unfinished tasks as cancel() does. True if anything was cancelled.
  virtual bool cancel_stream(std::uint64_t stream) = 0;
  // Cancels tasks not yet finished: queued ones are dropped, a running one's
  // worker is killed and replaced. Their completions get CancelledError.
  // True if any was cancelled.
  virtual bool cancel(std::span<const std::uint64_t> ids) = 0;
  virtual void close() = 0;
  virtual void terminate() = 0;
  // Waits until the handler thread and every worker have ended.
  virtual void join() = 0;
  virtual int processes() const noexcept = 0;
  virtual bool running() const noexcept = 0;
  // The pids of the current workers (tests, diagnostics).
  virtual std::vector<int> worker_pids() const = 0;
  // A thread spinning for a result helps (between begin_assist() and
  // end_assist()): assist() handles the worker messages that have arrived,
  // if no other thread is, so the result reaches its waiter without a
  // hand-off from the handler thread, which stays asleep meanwhile.
  // Completions that run user callbacks are left to the handler thread.
  virtual void begin_assist() = 0;
  virtual void assist() = 0;
  virtual void end_assist() = 0;
};

// The pool whose completion (callback) the calling thread is running, if any.
const PoolCore* pool_running_callback() noexcept;

// While alive, a thread is blocked waiting for pool results: a Ctrl-C
// (SIGINT) then becomes a KeyboardInterrupt for the waiter instead of ending
// the program (see pool.hpp).
class InterruptibleWait {
 public:
  InterruptibleWait() noexcept;
  ~InterruptibleWait();
  InterruptibleWait(const InterruptibleWait&) = delete;
  InterruptibleWait& operator=(const InterruptibleWait&) = delete;
};

// A tqdm-like progress bar on stderr.
class ProgressBar {
 public:
  // total < 0: unknown. Draws only when enabled.
  ProgressBar(std::string desc, long total, bool enabled);
  ~ProgressBar();
  void advance(long n);  // thread-safe; redraws at most ~10 times a second
  void finish();         // draws the final state and a newline
  bool enabled() const noexcept { return enabled_; }
  // The line drawn for a state (exposed for tests).
  static std::string render(const std::string& desc, long done, long total, double seconds,
                            int width);

 private:
  void draw(bool final);
  std::string desc_;
  long total_;
  bool enabled_;
  bool finished_ = false;
  long done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mu_;
};

// stderr is a terminal (the default condition for drawing a bar).
bool stderr_is_tty() noexcept;

// The waiting half of an AsyncResult, shared with the task's completion.
class ResultBase {
 public:
  virtual ~ResultBase() = default;
  // Blocks until ready; false on timeout. Ctrl-C meanwhile terminates the
  // pool, which makes the result ready with KeyboardInterrupt.
  bool wait_for(std::chrono::nanoseconds timeout);
  bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }
  // Rethrows the error, if any; call only when ready.
  void rethrow_if_failed() const;
  bool failed() const noexcept { return error_ != nullptr; }
  // Cancels the tasks this result waits for.
  bool cancel();
  // The first completion to claim the result publishes it (a map's last
  // chunk, or with fail_fast its first error, against a Ctrl-C).
  bool claim() noexcept { return !claimed_.exchange(true, std::memory_order_acq_rel); }
  void publish_error(std::exception_ptr e);
  void attach(std::weak_ptr<PoolCore> core, std::vector<std::uint64_t> ids);
  void attach_stream(std::weak_ptr<PoolCore> core, std::uint64_t stream);

 protected:
  // Marks the result ready (caller holds mu_) and wakes the waiters.
  void publish_locked();
  mutable std::mutex mu_;
  std::exception_ptr error_;

 private:
  std::condition_variable cv_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> claimed_{false};
  std::weak_ptr<PoolCore> core_;
  std::vector<std::uint64_t> ids_;
  std::uint64_t stream_ = 0;  // a streamed map's tasks: the stream's
};

}  // namespace mpxx::detail
