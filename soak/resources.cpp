// soak/resources.cpp - what the soak could leak, counted from /proc and
// /dev/shm: the parent's open fds, its shared-memory mappings (where mpxx's
// locks, semaphores and queues live), /dev/shm names the soak made, live
// descendant processes, zombies among them, and the parent's RSS.
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "resources.hpp"

namespace soak {
namespace {

struct ProcInfo {
  pid_t ppid;
  char state;
};

std::map<pid_t, ProcInfo> all_processes() {
  std::map<pid_t, ProcInfo> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    auto close = s.rfind(')');
    if (close == std::string::npos) continue;  // gone meanwhile
    std::istringstream rest(s.substr(close + 2));
    ProcInfo pi{};
    rest >> pi.state >> pi.ppid;
    out[static_cast<pid_t>(pid)] = pi;
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::string shm_prefix() { return "mpxx_soak_" + std::to_string(::getpid()) + "_"; }

void become_subreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

Resources measure() {
  Resources r;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++r.fds;
    --r.fds;  // the directory's own fd
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
      if (std::string(e->d_name).rfind(prefix, 0) == 0) ++r.shm_names;
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

void reap_orphans() {
  // Zombies reparented to us (we are a subreaper) that nobody else waits
  // for: direct children in state Z that mpxx no longer knows about.
  const pid_t self = ::getpid();
  for (auto& [pid, pi] : all_processes())
    if (pi.ppid == self && pi.state == 'Z') ::waitpid(pid, nullptr, WNOHANG);
}

}  // namespace soak
