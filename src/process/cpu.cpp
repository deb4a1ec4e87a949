// cpu_count() and process_cpu_count().
#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "mpxx/process.hpp"

namespace mpxx {

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

namespace {

// The CPU limit a cgroup quota imposes, or 0 for none.
double cgroup_cpu_limit() {
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  double limit = 0;
  auto apply = [&](double q) {
    if (q > 0 && (limit == 0 || q < limit)) limit = q;
  };
  while (std::getline(cg, line)) {
    if (line.rfind("0::", 0) == 0) {
      // cgroup v2: cpu.max is "max 100000" or "<quota> <period>"; every
      // ancestor's limit applies too.
      std::string path = line.substr(3);
      for (;;) {
        std::ifstream f("/sys/fs/cgroup" + path + "/cpu.max");
        std::string quota;
        double period = 0;
        if (f >> quota >> period && quota != "max" && period > 0) apply(std::stod(quota) / period);
        if (path.empty() || path == "/") break;
        auto slash = path.find_last_of('/');
        path = slash == std::string::npos || slash == 0 ? std::string() : path.substr(0, slash);
      }
    } else if (line.find(":cpu,") != std::string::npos || line.find(":cpu:") != std::string::npos) {
      // cgroup v1: cfs_quota_us / cfs_period_us (-1 means no limit).
      auto colon = line.find(':', line.find(':') + 1);
      std::string path = line.substr(colon + 1);
      for (const char* root : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
        std::ifstream q(std::string(root) + path + "/cpu.cfs_quota_us");
        std::ifstream p(std::string(root) + path + "/cpu.cfs_period_us");
        double quota = 0, period = 0;
        if (q >> quota && p >> period && quota > 0 && period > 0) {
          apply(quota / period);
          break;
        }
      }
    }
  }
  return limit;
}

}  // namespace

int process_cpu_count() {
  int n = cpu_count();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0) n = c;
  }
  double limit = cgroup_cpu_limit();
  if (limit > 0) {
    int q = static_cast<int>(std::ceil(limit));
    if (q < n) n = q;
  }
  return n < 1 ? 1 : n;
}

}  // namespace mpxx
