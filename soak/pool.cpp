// soak/pool.cpp - Pool map/imap/apply_async while the chaos kills and
// stops the workers.
//
// Every task is ledgered: it completes once with the right value, or fails
// with WorkerLostError (its worker died) or its own exception; none
// vanishes (every get returns within its timeout) and none runs its
// callback twice or runs both callbacks.
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "soak.hpp"

namespace soak {
namespace {

constexpr const char* kOwnError = "soak task failed on purpose";

// Fails on purpose for some inputs; takes a little CPU for others.
std::int64_t task(std::int64_t x) {
  if (x % 23 == 7) throw mpxx::ValueError(kOwnError);
  volatile std::int64_t acc = 0;
  const std::int64_t spin = x % 11 == 0 ? 2000000 : 20000;
  for (std::int64_t i = 0; i < spin; ++i) acc = acc + (i ^ x);
  return x * x + 1;
}

std::int64_t expected(std::int64_t x) { return x * x + 1; }
bool fails(std::int64_t x) { return x % 23 == 7; }

// Registers the pool's workers as victims as they come and go.
class WorkerVictims {
 public:
  explicit WorkerVictims(mpxx::Pool& pool) : pool_(pool), thread_([this] { loop(); }) {}
  ~WorkerVictims() {
    {
      std::scoped_lock g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    for (pid_t p : known_) forget(p);
  }

 private:
  void forget(pid_t p) {
    victims().remove(p);
    victims().clear_killed(p);
  }
  void loop() {
    std::unique_lock lk(mu_);
    while (!stop_) {
      std::set<pid_t> now;
      try {
        for (pid_t p : pool_.worker_pids()) now.insert(p);
      } catch (const std::exception& e) {
        fail(unexpected_error, std::string("pool: worker_pids: ") + e.what());
        return;
      }
      for (pid_t p : now)
        if (!known_.count(p) && victims().add(p, "pool worker")) known_.insert(p);
      for (auto it = known_.begin(); it != known_.end();)
        if (!now.count(*it)) {
          forget(*it);
          it = known_.erase(it);
        } else {
          ++it;
        }
      cv_.wait_for(lk, 50ms);  // the pool tells nobody when it replaces a worker
    }
  }
  mpxx::Pool& pool_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::set<pid_t> known_;
  std::thread thread_;
};

enum class Outcome { ok, lost_worker, own_error, other };

// Classifies the exception of a failed task (or map) and counts it.
Outcome classify(const char* what) {
  try {
    throw;
  } catch (const mpxx::WorkerLostError&) {
    add(tasks_lost_worker);
    return Outcome::lost_worker;
  } catch (const mpxx::Error& e) {
    if (std::string(e.what()).find(kOwnError) != std::string::npos) {
      add(tasks_own_error);
      return Outcome::own_error;
    }
    fail(unexpected_error, std::string(what) + ": " + e.what());
  }
  return Outcome::other;
}

void pool_round(Rng& rng, Clock::time_point) {
  mpxx::Pool pool(mpxx::PoolOptions{
      .processes = static_cast<int>(rng.between(1, 3)),
      .maxtasksperchild = rng.chance(0.3) ? std::optional<std::uint64_t>(rng.between(3, 20)) : std::nullopt});
  {
    WorkerVictims wv(pool);
    // apply_async with callbacks.
    const int n = static_cast<int>(rng.between(10, 60));
    std::vector<std::int64_t> xs;
    for (int i = 0; i < n; ++i) xs.push_back(static_cast<std::int64_t>(rng.below(1000)));
    struct Count {
      std::atomic<int> ok{0}, err{0};
    };
    std::vector<Count> counts(n);
    std::vector<mpxx::AsyncResult<std::int64_t>> rs;
    for (int i = 0; i < n; ++i)
      rs.push_back(pool.apply_async(task, std::tuple{xs[i]},
                                    {.callback = [&counts, i](const std::int64_t&) { ++counts[i].ok; },
                                     .error_callback = [&counts, i](const mpxx::Error&) { ++counts[i].err; }}));
    std::vector<Outcome> outcome(n, Outcome::other);
    for (int i = 0; i < n; ++i) {
      add(op_pool_task);
      add(checked_tasks);
      try {
        const std::int64_t v = timed("AsyncResult::get", 60s, [&] { return rs[i].get(60s); });
        outcome[i] = Outcome::ok;
        add(tasks_ok);
        if (v != expected(xs[i]) || fails(xs[i]))
          fail(wrong_result, "pool: apply_async(" + std::to_string(xs[i]) + ") gave " + std::to_string(v));
      } catch (const mpxx::TimeoutError&) {
        fail(task_vanished, "pool: apply_async(" + std::to_string(xs[i]) + ") gave no result in 60 s");
      } catch (...) {
        outcome[i] = classify("pool: apply_async");
        if (outcome[i] == Outcome::own_error && !fails(xs[i]))
          fail(wrong_result, "pool: apply_async(" + std::to_string(xs[i]) + ") failed with the task's error");
      }
    }
    for (int i = 0; i < n; ++i) {
      const int ok = counts[i].ok, err = counts[i].err;
      if (ok + err > 1) fail(callback_twice, "pool: task " + std::to_string(i) + " ran " + std::to_string(ok) +
                                                 " callbacks and " + std::to_string(err) + " error callbacks");
      else if ((outcome[i] == Outcome::ok && ok != 1) || (outcome[i] != Outcome::ok && err != 1))
        fail(task_vanished, "pool: task " + std::to_string(i) + "'s callback did not run");
    }

    // map and imap over inputs that may include failing ones.
    const int m = static_cast<int>(rng.between(10, 200));
    std::vector<std::int64_t> in;
    const bool clean = rng.chance(0.6);
    for (int i = 0; i < m; ++i) {
      std::int64_t x = static_cast<std::int64_t>(rng.below(1000));
      if (clean && fails(x)) ++x;
      in.push_back(x);
    }
    const std::size_t chunk = rng.chance(0.5) ? 0 : static_cast<std::size_t>(rng.between(1, 16));
    const bool any_fails = std::any_of(in.begin(), in.end(), fails);
    add(op_pool_task, m);
    add(checked_tasks, m);
    try {
      auto out = pool.map(task, in, {.chunksize = chunk});
      add(tasks_ok, m);
      if (any_fails) fail(wrong_result, "pool: map succeeded though a task threw");
      if (out.size() != in.size()) fail(wrong_result, "pool: map returned " + std::to_string(out.size()) + " of " + std::to_string(m));
      for (std::size_t i = 0; i < out.size() && i < in.size(); ++i)
        if (out[i] != expected(in[i])) {
          fail(wrong_result, "pool: map item " + std::to_string(i) + " is wrong");
          break;
        }
    } catch (...) {
      if (classify("pool: map") == Outcome::own_error && !any_fails)
        fail(wrong_result, "pool: map failed with the task's error though no task throws");
    }
    add(op_pool_task, m);
    std::size_t i = 0;
    try {
      for (std::int64_t v : pool.imap(task, in, {.chunksize = chunk ? chunk : 1})) {
        if (i >= in.size() || v != expected(in[i]) || fails(in[i])) {
          fail(wrong_result, "pool: imap item " + std::to_string(i) + " is wrong");
          break;
        }
        ++i;
        add(checked_tasks);
        add(tasks_ok);
      }
      if (i != in.size()) fail(wrong_result, "pool: imap ended after " + std::to_string(i) + " of " + std::to_string(m));
    } catch (...) {
      add(checked_tasks);
      classify("pool: imap");
    }
  }  // every worker unregistered (and continued) before the pool ends
  pool.close();
  timed("Pool::join", 60s, [&] {
    pool.join();
    return true;
  });
}

}  // namespace

std::vector<Workload> pool_workloads() { return {{"pool", pool_round}}; }

}  // namespace soak
