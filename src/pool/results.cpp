// The waiting side of AsyncResult (include/mpxx/pool.hpp).
#include "mpxx/detail/pool_core.hpp"
#include "mpxx/errors.hpp"
#include "sys/futex.hpp"

namespace mpxx::detail {

bool ResultBase::wait_for(std::chrono::nanoseconds timeout) {
  if (ready()) return true;
  if (const PoolCore* running = pool_running_callback()) {
    std::lock_guard lk(mu_);
    if (running == core_.lock().get())
      throw RuntimeError(
          "mpxx: waiting for a pool's result inside one of its callbacks would wait forever "
          "(callbacks run on the thread that delivers results)");
  }
  // Ctrl-C from here on is a KeyboardInterrupt for this waiter (the spin
  // below may run completions that take a while).
  InterruptibleWait interruptible;
  // A result that is about to arrive costs less to spin for than to sleep
  // for: waking a sleeping thread takes tens of microseconds here. Spinning,
  // this thread takes the workers' messages itself (PoolCore::assist), so
  // the result needs no hand-off from the handler thread either.
  std::shared_ptr<PoolCore> core;
  {
    std::lock_guard lk(mu_);
    core = core_.lock();
  }
  if (core) {
    struct Helping {
      PoolCore& core;
      explicit Helping(PoolCore& c) : core(c) { core.begin_assist(); }
      ~Helping() { core.end_assist(); }
    } helping(*core);
    int round = 0;
    if (spin_until([&] {
          if (ready()) return true;
          if (++round % 16 == 0) core->assist();  // may throw: spin_until passes it on
          return ready();
        }, 2000))
      return true;
  } else if (spin_until([&] { return ready(); }, 2000)) {
    return true;
  }
  std::unique_lock lk(mu_);
  if (timeout == std::chrono::nanoseconds::max()) {
    cv_.wait(lk, [&] { return ready(); });
    return true;
  }
  return cv_.wait_for(lk, timeout, [&] { return ready(); });
}

void ResultBase::rethrow_if_failed() const {
  if (error_) std::rethrow_exception(error_);
}

bool ResultBase::cancel() {
  if (ready()) return false;
  std::shared_ptr<PoolCore> core = core_.lock();
  if (!core) return false;
  return stream_ ? core->cancel_stream(stream_) : core->cancel(ids_);
}

void ResultBase::publish_error(std::exception_ptr e) {
  std::lock_guard lk(mu_);
  error_ = std::move(e);
  publish_locked();
}

void ResultBase::attach(std::weak_ptr<PoolCore> core, std::vector<std::uint64_t> ids) {
  std::lock_guard lk(mu_);
  core_ = std::move(core);
  ids_ = std::move(ids);
}

void ResultBase::attach_stream(std::weak_ptr<PoolCore> core, std::uint64_t stream) {
  std::lock_guard lk(mu_);
  core_ = std::move(core);
  stream_ = stream;
}

void ResultBase::publish_locked() {
  ready_.store(true, std::memory_order_release);
  cv_.notify_all();
}

}  // namespace mpxx::detail
