// The pool's dispatcher: which task runs where, and what a result, a death,
// a timeout or a cancel means. See include/mpxx/pool.hpp for the guarantees.
// Ctrl-C's process-wide half (the SIGINT and terminate handlers) is
// interrupt.cpp; what a pool does about an interrupt is here (housekeeping).
//
// One mutex guards the state below; the transport is only touched under it,
// except poll(), wait() and wake(). Submitting threads dispatch directly to
// a worker with room, so an apply() round trip involves no thread hand-off
// on the way out. On the way back, whichever thread holds drain_mu_ takes
// the workers' messages: the handler thread, or a thread spinning for its
// result (assist()), which then needs no wake-up from the handler (waking a
// sleeping thread costs tens of microseconds here). Completions that run
// user callbacks always run on the handler thread, outside the mutex, one
// at a time, in order; so do the messages that start or reap workers.
//
// Each worker holds at most `depth` tasks in order: the head is running, the
// others wait in its ring. depth adapts to how long tasks take (about 100 us
// of queued work, 1..32 tasks), so tiny tasks never wait for a round trip to
// the parent while long ones never pile up behind each other. The head's
// start time is known in the parent (when it was sent to an idle worker, or
// when the result before it arrived), which is what per-task timeouts count
// from. When a worker dies, the results it completed are in the ring before
// the death is handled (the ring is drained first); its head task fails with
// WorkerLostError and the tasks behind it, which never started, are queued
// again at the front.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "mpxx/detail/exception.hpp"
#include "mpxx/errors.hpp"
#include "mpxx/log.hpp"
#include "mpxx/process.hpp"
#include "pool/interrupt.hpp"
#include "pool/transport.hpp"
#include "process/exitcode.hpp"
#include "sys/futex.hpp"

namespace mpxx::detail {

namespace {

using clock = std::chrono::steady_clock;
using nanos = std::chrono::nanoseconds;
using pool::MsgKind;
using pool::WorkerMsg;

constexpr nanos kBusyPoll = std::chrono::milliseconds(5);
constexpr nanos kIdlePoll = std::chrono::milliseconds(50);
constexpr nanos kHousekeeping = std::chrono::milliseconds(2);
constexpr nanos kPassivePoll = std::chrono::milliseconds(1);
constexpr double kQueueAheadNs = 100e3;
constexpr std::size_t kMaxDepth = 32;

// ------------------------------------------------------------- the core

// The pool whose callback this thread is running, if any.
thread_local const PoolCore* t_in_callback = nullptr;
// The pool whose handler thread this is, if any.
thread_local const PoolCore* t_handler_of = nullptr;
struct CallbackScope {
  const PoolCore* prev;
  explicit CallbackScope(const PoolCore* core) noexcept : prev(t_in_callback) { t_in_callback = core; }
  ~CallbackScope() { t_in_callback = prev; }
};

struct Task {
  TaskSpec spec;
  int slot = -1;                // the worker holding it, or -1 while pending
  std::uint64_t generation = 0;
  std::uint64_t stream = 0;     // the stream it came from, if any
};

// Stream ids share the task ids' counter, with the top bit set, so that
// pending_ holds both: a stream waits in line as one entry.
constexpr std::uint64_t kStreamBit = std::uint64_t{1} << 63;

struct StreamEntry {
  std::shared_ptr<TaskStream> src;
  bool paused = false;  // said `later`; resume() clears it
};

struct Slot {
  std::uint64_t generation = 0;
  bool alive = false;
  bool ready = false;
  bool dying = false;      // killed by the core (timeout, cancel, terminate)
  bool stop_sent = false;
  pid_t pid = 0;
  std::uint64_t budget = 0;  // tasks it may still be sent (maxtasksperchild)
  std::deque<std::uint64_t> inflight;  // front: running
  clock::time_point head_start{};
};

struct Finished {
  Completion done;
  std::exception_ptr error;
};

// Work a helping thread took from the ring but leaves to the handler: a
// whole message (kind exiting or init_failed), or the completion of a task
// whose callbacks are user code.
struct Deferred {
  WorkerMsg msg;
  std::vector<std::byte> payload;
  Completion done;  // set: run it with the payload (or the error in msg.kind)
};

class Core final : public PoolCore {
 public:
  explicit Core(PoolConfig cfg) : cfg_(std::move(cfg)), tr_(pool::make_local_transport(cfg_)) {
    slots_.resize(static_cast<std::size_t>(cfg_.processes));
    pool::install_sigint_handler();
    seen_interrupts_ = pool::interrupt_count();
    handler_ = std::thread([this] { handler_main(); });
    // As in Python, the workers exist when the constructor returns.
    std::unique_lock lk(mu_);
    started_cv_.wait(lk, [&] { return started_; });
    if (start_failed_) {
      // A worker could not be started (no fd, no memory): the constructor
      // raises that, as Python's does, and leaves nothing running. (An
      // initializer that failed meanwhile is the first task's error.)
      const std::exception_ptr why = start_failed_;
      lk.unlock();
      terminate();
      join();
      std::rethrow_exception(why);
    }
  }

  ~Core() override {
    terminate();
    join();
  }

  std::vector<std::uint64_t> submit(std::vector<TaskSpec> specs) override {
    std::vector<std::uint64_t> ids;
    ids.reserve(specs.size());
    std::vector<Finished> dropped;
    {
      std::lock_guard lk(mu_);
      check_running();
      for (TaskSpec& s : specs) {
        if (s.call.size() < 8) throw ValueError("mpxx: malformed pool task");
        std::uint64_t id = add_task(std::move(s), 0);
        pending_.push_back(id);
        ids.push_back(id);
      }
      pump(dropped);
    }
    run(dropped);
    return ids;
  }

  std::uint64_t submit_stream(std::shared_ptr<TaskStream> src) override {
    std::vector<Finished> dropped;
    std::uint64_t id;
    {
      std::lock_guard lk(mu_);
      check_running();
      id = kStreamBit | next_id_++;
      src->id = id;
      streams_.emplace(id, StreamEntry{std::move(src)});
      pending_.push_back(id);
      pump(dropped);
    }
    run(dropped);
    return id;
  }

  void resume(std::uint64_t stream) override {
    std::vector<Finished> dropped;
    {
      std::lock_guard lk(mu_);
      auto it = streams_.find(stream);
      if (it == streams_.end() || !it->second.paused) return;
      it->second.paused = false;
      pump(dropped);
    }
    run(dropped);
  }

  bool cancel_stream(std::uint64_t stream) override {
    std::vector<Finished> done;
    bool any = false;
    {
      std::lock_guard lk(mu_);
      if (auto it = streams_.find(stream); it != streams_.end()) {
        done.push_back(dropped_call(std::move(it->second.src),
                                    std::make_exception_ptr(CancelledError("mpxx: the task was cancelled"))));
        streams_.erase(it);
        pending_.erase(std::find(pending_.begin(), pending_.end(), stream));
        any = true;
      }
      std::vector<std::uint64_t> ids;
      for (const auto& [id, t] : tasks_)
        if (t.stream == stream) ids.push_back(id);
      any |= cancel_locked(ids, done);
    }
    run(done);
    tr_->wake();
    return any;
  }

  bool cancel(std::span<const std::uint64_t> ids) override {
    std::vector<Finished> done;
    bool any;
    {
      std::lock_guard lk(mu_);
      any = cancel_locked(ids, done);
    }
    run(done);
    tr_->wake();
    return any;
  }

  bool cancel_locked(std::span<const std::uint64_t> ids, std::vector<Finished>& done) {
    bool any = false;
    {
      for (std::uint64_t id : ids) {
        auto it = tasks_.find(id);
        if (it == tasks_.end()) continue;
        Task& t = it->second;
        if (t.slot >= 0) {
          Slot& s = slots_[static_cast<std::size_t>(t.slot)];
          if (s.inflight.empty()) continue;
          if (s.inflight.front() == id) {
            kill_slot(s, static_cast<std::uint32_t>(t.slot));
          } else if (!tr_->skip(static_cast<std::uint32_t>(t.slot), id)) {
            continue;  // cannot be stopped before it runs; let it finish
          }
        } else {
          pending_.erase(std::find(pending_.begin(), pending_.end(), id));
        }
        done.push_back({std::move(t.spec.done),
                        std::make_exception_ptr(CancelledError("mpxx: the task was cancelled"))});
        tasks_.erase(it);
        any = true;
      }
    }
    return any;
  }

  void close() override {
    std::vector<Finished> dropped;
    {
      std::lock_guard lk(mu_);
      if (state_ == State::run) state_ = State::close;
      pump(dropped);
    }
    run(dropped);
    tr_->wake();
  }

  void terminate() override { stop_all(std::make_exception_ptr(
      CancelledError("mpxx: the pool was terminated before the task finished"))); }

  void join() override {
    {
      std::lock_guard lk(mu_);
      if (state_ == State::run) throw ValueError("mpxx: Pool::join() before close() or terminate()");
    }
    if (std::this_thread::get_id() == handler_.get_id())
      throw RuntimeError("mpxx: Pool::join() from a pool callback would wait for itself");
    std::lock_guard jl(join_mu_);
    if (handler_.joinable()) handler_.join();
  }

  int processes() const noexcept override { return cfg_.processes; }
  bool running() const noexcept override {
    std::lock_guard lk(mu_);
    return state_ == State::run && !broken_;
  }
  std::vector<int> worker_pids() const override {
    std::lock_guard lk(mu_);
    std::vector<int> out;
    for (const Slot& s : slots_)
      if (s.alive) out.push_back(s.pid);
    return out;
  }

  // While a thread helps, the handler sleeps on handler_bell_ instead of the
  // ring (so a worker's result does not wake it), at most kPassivePoll at a
  // time; the last helper to leave rings it if there is work left.
  void begin_assist() override { helpers_.fetch_add(1, std::memory_order_seq_cst); }

  void end_assist() override {
    if (helpers_.fetch_sub(1, std::memory_order_seq_cst) != 1) return;
    bool busy = tr_->wait(nanos::zero(), {});
    if (!busy) {
      std::lock_guard lk(mu_);
      busy = !tasks_.empty() || state_ != State::run;
    }
    if (busy) ring_handler();
  }

  void ring_handler() {
    handler_bell_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(&handler_bell_, 1);
  }

  void assist() override {
    // A replacement worker (maxtasksperchild) must be started by the handler
    // thread, which PR_SET_PDEATHSIG ties the workers to.
    if (cfg_.maxtasksperchild || on_handler()) return;
    std::unique_lock dl(drain_mu_, std::try_to_lock);
    if (!dl) return;
    tr_->poll(nanos::zero(), [&](const WorkerMsg& m, std::span<const std::byte> p) { on_message(m, p); });
    if (!deferred_.empty() && !deferred_pending_.exchange(true)) {
      dl.unlock();
      ring_handler();
      tr_->wake();
    }
  }

 private:
  enum class State { run, close, terminate };

  // Fails every unfinished task with `why` and kills the workers.
  void stop_all(std::exception_ptr why) {
    std::vector<Finished> done;
    {
      std::lock_guard lk(mu_);
      if (state_ == State::terminate) return;
      state_ = State::terminate;
      drop_everything(why, done);
      tr_->wait_killed(std::chrono::seconds(5));
    }
    run(done);
    tr_->wake();
  }

  // Fails every task and stream with `why` and kills the workers.
  void drop_everything(const std::exception_ptr& why, std::vector<Finished>& out) {
    for (auto& [id, e] : streams_) out.push_back(dropped_call(std::move(e.src), why));
    streams_.clear();
    for (auto& [id, t] : tasks_) out.push_back({std::move(t.spec.done), why});
    tasks_.clear();
    pending_.clear();
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].alive) kill_slot(slots_[i], static_cast<std::uint32_t>(i));
  }

  // A stream's dropped(why), run outside the lock as a completion.
  static Finished dropped_call(std::shared_ptr<TaskStream> src, std::exception_ptr why) {
    return {Completion(std::move(src), 0, [](TaskStream& s, long, const TaskOutcome& o) { s.dropped(o.error); }),
            std::move(why)};
  }

  void check_running() const {
    if (broken_) std::rethrow_exception(broken_);
    if (state_ != State::run) throw ValueError("mpxx: Pool not running (closed or terminated)");
  }

  std::uint64_t add_task(TaskSpec&& spec, std::uint64_t stream) {
    const std::uint64_t id = next_id_++;
    std::memcpy(spec.call.data(), &id, 8);
    Task& t = tasks_.emplace(id, Task{std::move(spec)}).first->second;
    t.stream = stream;
    return id;
  }

  // The next task to send: the first pending task, or the next task of the
  // first stream that has one (a paused stream lets the entries behind it
  // go first). 0 if there is none. A stream that throws or ends leaves.
  std::uint64_t take_next(std::vector<Finished>& dropped) {
    for (auto it = pending_.begin(); it != pending_.end();) {
      const std::uint64_t key = *it;
      if (!(key & kStreamBit)) {
        pending_.erase(it);
        return key;
      }
      StreamEntry& e = streams_.at(key);
      if (e.paused) {
        ++it;
        continue;
      }
      TaskSpec t;
      TaskStream::Next r;
      try {
        r = e.src->next(t);
        if (r == TaskStream::Next::task && t.call.size() < 8) throw ValueError("mpxx: malformed pool task");
      } catch (...) {
        dropped.push_back(dropped_call(std::move(e.src), std::current_exception()));
        r = TaskStream::Next::end;
      }
      if (r == TaskStream::Next::task) return add_task(std::move(t), key);
      if (r == TaskStream::Next::later) {
        e.paused = true;
        ++it;
        continue;
      }
      streams_.erase(key);
      it = pending_.erase(it);
    }
    return 0;
  }

  void kill_slot(Slot& s, std::uint32_t slot) {
    if (!s.dying) tr_->kill(slot);
    s.dying = true;
  }

  void run(std::vector<Finished>& done) const {
    CallbackScope scope(this);
    for (Finished& f : done) {
      if (!f.done) continue;
      try {
        f.done(TaskOutcome{{}, f.error});
      } catch (...) {
        report_callback_error();
      }
    }
    done.clear();
  }

  static void report_callback_error() {
    try {
      throw;
    } catch (const std::exception& e) {
      get_logger().logf(log::ERROR, "mpxx: a pool callback raised: ", e.what());
    } catch (...) {
      get_logger().logf(log::ERROR, "mpxx: a pool callback raised a non-standard exception");
    }
  }

  std::size_t depth() const noexcept {
    if (ema_ns_ <= 0) return 1;
    return std::clamp<std::size_t>(static_cast<std::size_t>(kQueueAheadNs / ema_ns_), 1, kMaxDepth);
  }

  // Sends pending tasks to workers with room (breadth first, so a short
  // burst spreads over the workers), and stop requests once closed.
  // Streams that throw are dropped: their dropped() goes to `dropped`.
  void pump(std::vector<Finished>& dropped) {
    if (state_ == State::terminate || broken_) return;
    const std::size_t d = depth();
    const auto now = clock::now();
    bool progress = true;
    while (!pending_.empty() && progress) {
      progress = false;
      for (std::size_t i = 0; i < slots_.size() && !pending_.empty(); ++i) {
        Slot& s = slots_[i];
        if (!s.alive || s.dying || s.stop_sent || s.inflight.size() >= d) continue;
        if (cfg_.maxtasksperchild && s.budget == 0) continue;
        const std::uint64_t id = take_next(dropped);
        if (id == 0) break;  // only paused streams are left
        Task& t = tasks_.at(id);
        tr_->send(static_cast<std::uint32_t>(i), t.spec.call.bytes());
        t.slot = static_cast<int>(i);
        t.generation = s.generation;
        if (s.inflight.empty()) s.head_start = now;
        s.inflight.push_back(id);
        if (cfg_.maxtasksperchild) --s.budget;
        progress = true;
      }
    }
    if (state_ == State::close && pending_.empty()) {
      static constexpr std::uint64_t stop = 0;
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.alive && !s.dying && !s.stop_sent && s.inflight.empty()) {
          tr_->send(static_cast<std::uint32_t>(i),
                    std::span(reinterpret_cast<const std::byte*>(&stop), sizeof stop));
          s.stop_sent = true;
        }
      }
    }
  }

  // Starts a fresh worker in slot i; a failure to start breaks the pool.
  void start_slot(std::uint32_t i, std::vector<Finished>& failed) {
    Slot& s = slots_[i];
    const std::uint64_t generation = s.generation + 1;
    s = Slot{};
    s.generation = generation;
    try {
      s.pid = tr_->start(i, s.generation);
    } catch (...) {
      if (!started_) start_failed_ = std::current_exception();
      break_pool(std::current_exception(), failed);
      return;
    }
    s.alive = true;
    s.ready = !has_initializer();
    s.budget = cfg_.maxtasksperchild;
  }

  bool has_initializer() const noexcept {
    return !cfg_.init_call.empty() || static_cast<bool>(cfg_.local_init);
  }

  bool on_handler() const noexcept { return t_handler_of == this; }

  // Called for each message from a worker, by the thread holding drain_mu_.
  void on_message(const WorkerMsg& m, std::span<const std::byte> payload) {
    if (m.kind == MsgKind::poke) return;
    if ((m.kind == MsgKind::exiting || m.kind == MsgKind::init_failed) && !on_handler()) {
      deferred_.push_back({m, {payload.begin(), payload.end()}, nullptr});
      return;
    }
    Completion done;
    bool user_code = false;
    std::vector<Finished> failed;
    {
      std::lock_guard lk(mu_);
      if (m.slot >= slots_.size()) return;
      Slot& s = slots_[m.slot];
      const bool current = s.generation == m.generation && s.alive;
      switch (m.kind) {
        case MsgKind::ready:
          if (current) s.ready = true;
          return;
        case MsgKind::exiting:
          if (current) {
            tr_->wait_exit(m.slot, std::chrono::seconds(1));
            reap_now_ = true;
          }
          return;
        case MsgKind::init_failed: {
          wire::Reader r(payload);
          RemoteError e = decode_exception(r);
          break_pool(std::make_exception_ptr(RemoteError(
                         e.type_name(), "the pool's initializer raised: " + e.message(), e.backtrace())),
                     failed);
          break;
        }
        case MsgKind::skipped:
          if (current) {
            tr_->skipped(m.slot, m.task);
            drop_inflight(s, m.task);
            pump(failed);
          }
          break;
        case MsgKind::result:
        case MsgKind::error: {
          if (s.generation == m.generation) {
            drop_inflight(s, m.task);
            const double ns = static_cast<double>(m.exec_ns);
            ema_ns_ = ema_ns_ <= 0 ? ns : ema_ns_ * 0.9 + ns * 0.1;
            retire_if_spent(m.slot, failed);
          }
          auto it = tasks_.find(m.task);
          if (it != tasks_.end() && it->second.slot == static_cast<int>(m.slot) &&
              it->second.generation == m.generation) {
            done = std::move(it->second.spec.done);
            user_code = it->second.spec.user_code;
            tasks_.erase(it);
          }
          pump(failed);
          break;
        }
        default:
          return;
      }
    }
    run(failed);
    if (!done) return;
    if (user_code && !on_handler()) {
      deferred_.push_back({m, {payload.begin(), payload.end()}, std::move(done)});
      return;
    }
    complete(done, m.kind, payload);
  }

  void complete(Completion& done, MsgKind kind, std::span<const std::byte> payload) const {
    CallbackScope scope(this);
    try {
      if (kind == MsgKind::result) {
        done(TaskOutcome{payload, nullptr});
      } else {
        wire::Reader r(payload);
        done(TaskOutcome{{}, std::make_exception_ptr(decode_exception(r))});
      }
    } catch (...) {
      report_callback_error();
    }
  }

  // The handler's share of what helping threads took (drain_mu_ held).
  void run_deferred() {
    deferred_pending_.store(false);
    while (!deferred_.empty()) {
      Deferred d = std::move(deferred_.front());
      deferred_.pop_front();
      if (d.done) complete(d.done, d.msg.kind, d.payload);
      else on_message(d.msg, d.payload);
    }
  }

  void drop_inflight(Slot& s, std::uint64_t id) {
    auto it = std::find(s.inflight.begin(), s.inflight.end(), id);
    if (it == s.inflight.end()) return;
    const bool was_head = it == s.inflight.begin();
    s.inflight.erase(it);
    if (was_head) s.head_start = clock::now();
  }

  // maxtasksperchild: a worker that has been sent its last task and has
  // finished it exits by itself; its replacement starts at once.
  void retire_if_spent(std::uint32_t i, std::vector<Finished>& failed) {
    Slot& s = slots_[i];
    if (!cfg_.maxtasksperchild || s.budget > 0 || !s.inflight.empty() || s.dying) return;
    if (state_ != State::run && pending_.empty()) return;  // it simply leaves
    start_slot(i, failed);
  }

  void break_pool(std::exception_ptr why, std::vector<Finished>& failed) {
    if (broken_) return;
    broken_ = why;
    drop_everything(why, failed);
  }

  // Handles every message already there (the handler thread).
  void drain() {
    std::lock_guard dl(drain_mu_);
    run_deferred();
    for (;;) {
      std::size_t n = 0;
      tr_->poll(nanos::zero(), [&](const WorkerMsg& m, std::span<const std::byte> p) {
        ++n;
        on_message(m, p);
      });
      if (n == 0) return;
    }
  }

  // Deaths, deadlines and Ctrl-C.
  void housekeeping() {
    std::uint32_t irq = pool::interrupt_count();
    if (irq != seen_interrupts_) {
      seen_interrupts_ = irq;
      bool busy;
      {
        std::lock_guard lk(mu_);
        busy = !tasks_.empty();
      }
      if (busy) {
        pool::end_uncaught_keyboard_interrupts_like_ctrl_c();
        stop_all(std::make_exception_ptr(KeyboardInterrupt{}));
      }
    }

    std::vector<pool::WorkerExit> exits;
    {
      std::lock_guard lk(mu_);
      exits = tr_->reap();
    }
    if (!exits.empty()) drain();  // whatever they finished counts

    std::vector<Finished> failed;
    {
      std::lock_guard lk(mu_);
      for (const pool::WorkerExit& e : exits) on_exit(e, failed);
      check_deadlines(failed);
      pump(failed);
    }
    run(failed);
  }

  void on_exit(const pool::WorkerExit& e, std::vector<Finished>& failed) {
    Slot& s = slots_[e.slot];
    if (s.generation != e.generation || !s.alive) return;  // a retired worker
    s.alive = false;
    const bool was_ready = s.ready;
    std::deque<std::uint64_t> held = std::move(s.inflight);
    s.inflight.clear();
    bool head = true;
    std::vector<std::uint64_t> requeue;
    for (std::uint64_t id : held) {
      auto it = tasks_.find(id);
      const bool running = head;
      head = false;
      if (it == tasks_.end()) continue;  // already failed (timeout, cancel)
      if (running) {
        std::string what = "mpxx: pool worker " + std::to_string(e.pid) + " died (" +
                           describe_exitcode(e.exitcode) + ") while running task " +
                           std::to_string(it->second.spec.index);
        failed.push_back({std::move(it->second.spec.done),
                          std::make_exception_ptr(WorkerLostError(e.pid, e.exitcode,
                                                                  it->second.spec.index, what))});
        tasks_.erase(it);
      } else {
        it->second.slot = -1;
        requeue.push_back(id);
      }
    }
    pending_.insert(pending_.begin(), requeue.begin(), requeue.end());
    if (!was_ready && !s.dying && !broken_) {
      break_pool(std::make_exception_ptr(WorkerLostError(
                     e.pid, e.exitcode, -1,
                     "mpxx: a pool worker died (" + describe_exitcode(e.exitcode) +
                         ") while running the pool's initializer")),
                 failed);
      return;
    }
    if (broken_) return;
    if (state_ == State::run || (state_ == State::close && !pending_.empty())) start_slot(e.slot, failed);
  }

  void check_deadlines(std::vector<Finished>& failed) {
    const auto now = clock::now();
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (!s.alive || s.dying || s.inflight.empty()) continue;
      auto it = tasks_.find(s.inflight.front());
      if (it == tasks_.end() || !it->second.spec.timeout) continue;
      if (now - s.head_start < *it->second.spec.timeout) continue;
      const double secs = std::chrono::duration<double>(*it->second.spec.timeout).count();
      failed.push_back(
          {std::move(it->second.spec.done),
           std::make_exception_ptr(TimeoutError(
               "mpxx: task " + std::to_string(it->second.spec.index) + " timed out after " +
               std::to_string(secs) + " s; its worker (pid " + std::to_string(s.pid) +
               ") was killed and is being replaced"))});
      tasks_.erase(it);
      kill_slot(s, static_cast<std::uint32_t>(i));
    }
  }

  // How long the handler may sleep.
  nanos next_wait() {
    std::lock_guard lk(mu_);
    if (tasks_.empty()) {
      bool any_alive = false;
      for (const Slot& s : slots_) any_alive |= s.alive;
      return state_ != State::run && any_alive ? kBusyPoll : kIdlePoll;
    }
    nanos wait = kBusyPoll;
    const auto now = clock::now();
    for (const Slot& s : slots_) {
      if (!s.alive || s.dying || s.inflight.empty()) continue;
      auto it = tasks_.find(s.inflight.front());
      if (it == tasks_.end() || !it->second.spec.timeout) continue;
      // timeout - elapsed, not head_start + timeout: a timeout of
      // nanoseconds::max() must not wrap around into a busy loop.
      const nanos timeout = *it->second.spec.timeout, elapsed = now - s.head_start;
      wait = std::min(wait, timeout <= elapsed ? nanos::zero() : timeout - elapsed);
    }
    return wait;
  }

  bool finished() {
    std::lock_guard lk(mu_);
    if (state_ == State::run || !tasks_.empty()) return false;
    for (const Slot& s : slots_)
      if (s.alive) return false;
    return true;
  }

  // The handler's sleep: on the ring, or on handler_bell_ while a thread
  // helps; false when nothing came for the whole wait.
  bool wait_for_work() {
    const nanos wait = next_wait();
    const std::uint32_t bell = handler_bell_.load(std::memory_order_seq_cst);
    if (helpers_.load(std::memory_order_seq_cst) == 0 || cfg_.maxtasksperchild)
      return tr_->wait(wait, [&] { return deferred_pending_.load(); });
    if (deferred_pending_.load()) return true;
    const nanos nap = std::min(wait, kPassivePoll);
    if (futex_wait(&handler_bell_, bell, FutexDeadline::after(nap)) != WaitResult::timed_out) return true;
    return nap < wait;  // only a nap: look at the ring, but no housekeeping is due
  }

  void handler_main() {
    t_handler_of = this;
    std::vector<Finished> failed;
    {
      // Workers are started here, so that PR_SET_PDEATHSIG ties them to a
      // thread that lives exactly as long as the pool.
      std::lock_guard lk(mu_);
      for (std::uint32_t i = 0; i < slots_.size() && !broken_ && state_ != State::terminate; ++i)
        start_slot(i, failed);
      pump(failed);
      started_ = true;
    }
    started_cv_.notify_all();
    run(failed);
    auto last = clock::now();
    while (!finished()) {
      const bool woken = wait_for_work();
      {
        std::lock_guard dl(drain_mu_);
        run_deferred();
        tr_->poll(nanos::zero(), [&](const WorkerMsg& m, std::span<const std::byte> p) { on_message(m, p); });
      }
      const auto now = clock::now();
      if (!woken || now - last >= kHousekeeping || reap_now_) {
        reap_now_ = false;
        housekeeping();
        last = now;
      }
    }
    drain();
  }

  PoolConfig cfg_;
  std::unique_ptr<pool::Transport> tr_;
  mutable std::mutex mu_;
  State state_ = State::run;
  std::exception_ptr broken_;
  std::exception_ptr start_failed_;  // a worker of the constructor's could not start
  std::unordered_map<std::uint64_t, Task> tasks_;
  std::deque<std::uint64_t> pending_;  // task ids and stream ids, in order
  std::unordered_map<std::uint64_t, StreamEntry> streams_;
  std::vector<Slot> slots_;
  std::uint64_t next_id_ = 1;
  double ema_ns_ = 0;
  std::uint32_t seen_interrupts_ = 0;
  bool started_ = false;
  bool reap_now_ = false;  // handler thread only
  std::mutex drain_mu_;    // held by the one thread taking worker messages
  std::deque<Deferred> deferred_;  // under drain_mu_
  std::atomic<bool> deferred_pending_{false};
  std::atomic<int> helpers_{0};  // threads inside begin_assist() .. end_assist()
  std::atomic<std::uint32_t> handler_bell_{0};
  std::condition_variable started_cv_;
  std::thread handler_;
  std::mutex join_mu_;
};

}  // namespace

std::shared_ptr<PoolCore> PoolCore::create(PoolConfig cfg) {
  if (cfg.processes < 1)
    throw ValueError("mpxx: Pool needs at least one process, got " + std::to_string(cfg.processes));
  return std::make_shared<Core>(std::move(cfg));
}

const PoolCore* pool_running_callback() noexcept { return t_in_callback; }

}  // namespace mpxx::detail
