// Pool's non-template members (include/mpxx/pool.hpp).
#include "mpxx/pool.hpp"

#include "sys/fd.hpp"

namespace mpxx {

Pool::Pool(PoolOptions opts, detail::Target init) {
  detail::PoolConfig cfg;
  // Not value_or(): reading the CPU count (sysfs, cgroup files) costs more
  // than the rest of the constructor but a fork.
  cfg.processes = opts.processes ? *opts.processes : process_cpu_count();
  if (cfg.processes < 1)
    throw ValueError("mpxx: Number of processes must be at least 1, got " + std::to_string(cfg.processes));
  if (opts.maxtasksperchild == 0u)
    throw ValueError("mpxx: maxtasksperchild must be at least 1 (leave it unset for workers that "
                     "live as long as the pool)");
  cfg.maxtasksperchild = opts.maxtasksperchild.value_or(0);
  cfg.context = opts.context;
  if (init.local) {
    cfg.local_init = std::move(init.local);
    if (init.encode) {
      detail::wire::Writer w;
      init.encode(w);
      cfg.init_call.assign(w.data(), w.data() + w.size());
    } else {
      cfg.init_why_not = init.why_not;
    }
  }
  const int n = cfg.processes;
  try {
    core_ = detail::PoolCore::create(std::move(cfg));
  } catch (...) {
    sys::rethrow_with_context("cannot start a Pool of " + std::to_string(n) + " processes");
  }
}

Pool::~Pool() {
  if (!core_) return;
  try {
    core_->terminate();
    core_->join();
  } catch (...) {
  }
}

detail::PoolCore& Pool::core() const {
  if (!core_) throw ValueError("mpxx: this Pool was moved from");
  return *core_;
}

void Pool::close() { core().close(); }
void Pool::terminate() {
  core().terminate();
  core().join();
}
void Pool::join() { core().join(); }
int Pool::processes() const { return core().processes(); }
std::vector<pid_t> Pool::worker_pids() const {
  auto v = core().worker_pids();
  return {v.begin(), v.end()};
}

}  // namespace mpxx
