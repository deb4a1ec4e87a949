// soak/resources.cpp - what the soak could leak, counted from /proc and
// /dev/shm: the parent's open fds, its shared-memory mappings (where mpxx's
// locks, semaphores and queues live), /dev/shm names the soak made, live
// descendant processes, zombies among them, and the parent's RSS.
#include <dirent.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "resources.hpp"

namespace soak {
namespace {

struct ProcInfo {
  pid_t ppid;
  pid_t sid;
  char state;
  std::string comm;
};

std::map<pid_t, ProcInfo> all_processes() {
  std::map<pid_t, ProcInfo> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    auto st = proc_stat(static_cast<pid_t>(pid));
    if (!st) continue;  // gone meanwhile
    std::istringstream rest(st->rest);
    ProcInfo pi{};
    pid_t pgrp;
    rest >> pi.state >> pi.ppid >> pgrp >> pi.sid;
    pi.comm = st->comm;
    out[static_cast<pid_t>(pid)] = pi;
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::optional<ProcStat> proc_stat(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  std::string s(buf, static_cast<std::size_t>(n));
  auto open = s.find('('), close = s.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 > s.size()) return std::nullopt;
  return ProcStat{s.substr(open + 1, close - open - 1), s.substr(close + 2)};
}

std::string shm_prefix() { return "mpxx_soak_" + std::to_string(::getpid()) + "_"; }

void become_subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

Resources measure() {
  Resources r;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    const std::string self_fd = std::to_string(::dirfd(d));
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.' || e->d_name == self_fd) continue;
      ++r.fds;
      char target[512] = {0};
      ssize_t n = ::readlink((std::string("/proc/self/fd/") + e->d_name).c_str(), target, sizeof target - 1);
      r.fd_targets[e->d_name] = n > 0 ? std::string(target, n) : "?";
    }
    ::closedir(d);
  }
  {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line))
      if (line.find("/memfd:") != std::string::npos || line.find("/dev/shm/") != std::string::npos) ++r.shared_maps;
  }
  const std::string prefix = shm_prefix();
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind(prefix, 0) == 0) ++r.shm_names, r.names[e->d_name] = "";
    ::closedir(d);
  }
  const pid_t self = ::getpid();
  auto procs = all_processes();
  for (auto& [pid, pi] : procs) {
    if (pid == self) continue;
    // Ours if its ancestry leads to us.
    pid_t up = pi.ppid;
    for (int hops = 0; up > 1 && up != self && hops < 64; ++hops) {
      auto it = procs.find(up);
      up = it == procs.end() ? 0 : it->second.ppid;
    }
    if (up != self) continue;
    ++r.descendants;
    if (pi.state == 'Z') ++r.zombies;
    r.processes[pid] = pi.comm + ", state " + pi.state + ", parent " + std::to_string(pi.ppid);
  }
  {
    std::ifstream st("/proc/self/status");
    std::string key;
    while (st >> key) {
      if (key == "VmRSS:") {
        st >> r.rss_kib;
        break;
      }
      st.ignore(1 << 12, '\n');
    }
  }
  return r;
}

void describe_leaks(const Resources& base, const Resources& now) {
  auto report = [](const char* what, const auto& b, const auto& n) {
    for (auto& [k, v] : n)
      if (!b.count(k) || b.at(k) != v) std::cerr << "mpxx_soak: leaked " << what << " " << k << (v.empty() ? "" : " (" + v + ")") << "\n";
  };
  report("fd", base.fd_targets, now.fd_targets);
  report("/dev/shm name", base.names, now.names);
  report("process", base.processes, now.processes);
}

int reap_orphans() {
  // A child's shared-memory tracker outlives a killed child to remove its
  // names, then exits; as a subreaper we inherit it, and nobody else waits
  // for it. It is the only session leader mpxx makes (it calls setsid), so
  // a zombie child of ours that leads its own session is such an orphan,
  // never a process mpxx itself will wait for.
  const pid_t self = ::getpid();
  int n = 0;
  for (auto& [pid, pi] : all_processes())
    if (pi.ppid == self && pi.state == 'Z' && pi.sid == pid) n += ::waitpid(pid, nullptr, WNOHANG) == pid;
  return n;
}

}  // namespace soak
