// soak/chaos.cpp - the chaos thread and its victim registry.
//
// Signals go through pidfds, opened when a victim is registered and checked
// to be our child then, so a pid the kernel reused for some other process is
// never signalled. A stopped victim is always continued: when its time is
// up, when it is unregistered (before its join), and when the chaos stops.
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "resources.hpp"
#include "soak.hpp"

namespace soak {
namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_signal(int fd, int sig) { return static_cast<int>(::syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0)); }

pid_t parent_of(pid_t pid) {
  auto st = proc_stat(pid);
  if (!st) return -1;
  std::istringstream rest(st->rest);
  char state;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

struct Entry {
  int pidfd;
  const char* kind;
  bool stopped = false;
  Clock::time_point resume_at{};
};

struct Registry {
  std::mutex mu;
  std::condition_variable cv;
  std::map<pid_t, Entry> live;
  std::set<pid_t> killed;
  bool stopping = false;
  std::thread thread;

  void resume(Entry& e) {
    if (!e.stopped) return;
    pidfd_signal(e.pidfd, SIGCONT);
    e.stopped = false;
  }
};

Registry& reg() {
  static Registry r;
  return r;
}

void chaos_loop(std::uint64_t seed, std::chrono::milliseconds period) {
  Rng rng(seed ^ 0xc4a05ULL);
  auto& r = reg();
  std::unique_lock lk(r.mu);
  auto next_fault = Clock::now() + period;
  while (!r.stopping) {
    auto now = Clock::now();
    auto wake = next_fault;
    for (auto& [pid, e] : r.live) {
      if (e.stopped && e.resume_at <= now) r.resume(e);
      if (e.stopped && e.resume_at < wake) wake = e.resume_at;
    }
    if (now >= next_fault) {
      next_fault = now + period / 2 + std::chrono::milliseconds(rng.below(period.count() + 1));
      std::vector<pid_t> running;
      for (auto& [pid, e] : r.live)
        if (!e.stopped && !r.killed.count(pid)) running.push_back(pid);
      if (!running.empty()) {
        pid_t pid = running[rng.below(running.size())];
        Entry& e = r.live.at(pid);
        if (rng.chance(0.35)) {
          if (pidfd_signal(e.pidfd, SIGKILL) == 0) {
            r.killed.insert(pid);
            add(fault_kill);
          }
        } else if (pidfd_signal(e.pidfd, SIGSTOP) == 0) {
          e.stopped = true;
          e.resume_at = now + std::chrono::milliseconds(rng.between(10, 300));
          add(fault_stop);
        }
      }
      continue;
    }
    r.cv.wait_until(lk, wake);
  }
  for (auto& [pid, e] : r.live) r.resume(e);
}

}  // namespace

bool Victims::add(pid_t pid, const char* kind) {
  int fd = pidfd_open(pid);
  if (fd < 0) return false;
  // The pidfd names whatever process has `pid` now: it must be our child.
  if (parent_of(pid) != ::getpid()) {
    ::close(fd);
    return false;
  }
  auto& r = reg();
  std::scoped_lock g(r.mu);
  auto [it, fresh] = r.live.emplace(pid, Entry{fd, kind});
  if (!fresh) ::close(fd);
  return true;
}

void Victims::remove(pid_t pid) {
  auto& r = reg();
  std::scoped_lock g(r.mu);
  auto it = r.live.find(pid);
  if (it == r.live.end()) return;
  r.resume(it->second);
  ::close(it->second.pidfd);
  r.live.erase(it);
}

bool Victims::killed(pid_t pid) const {
  auto& r = reg();
  std::scoped_lock g(r.mu);
  return r.killed.count(pid) != 0;
}

void Victims::clear_killed(pid_t pid) {
  auto& r = reg();
  std::scoped_lock g(r.mu);
  r.killed.erase(pid);
}

Victims& victims() {
  static Victims v;
  return v;
}

VictimGuard& VictimGuard::operator=(VictimGuard&& o) noexcept {
  if (this != &o) {
    release();
    pid_ = o.pid_;
    o.pid_ = 0;
  }
  return *this;
}

void start_chaos(std::uint64_t seed, std::chrono::milliseconds period) {
  auto& r = reg();
  r.stopping = false;
  r.thread = std::thread(chaos_loop, seed, period);
}

void stop_chaos() {
  auto& r = reg();
  {
    std::scoped_lock g(r.mu);
    r.stopping = true;
  }
  r.cv.notify_all();
  if (r.thread.joinable()) r.thread.join();
}

}  // namespace soak
