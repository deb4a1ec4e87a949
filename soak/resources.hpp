// soak/resources.hpp - the resource baseline and the leak check.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <sys/types.h>

namespace soak {

struct Resources {
  long fds = 0;          // open in the parent
  long shared_maps = 0;  // memfd and /dev/shm mappings of the parent
  long shm_names = 0;    // /dev/shm entries named with shm_prefix()
  long descendants = 0;  // live processes whose ancestry leads to the parent
  long zombies = 0;      // among them, exited and not reaped
  long rss_kib = 0;
  // What they are, for the report of a leak.
  std::map<std::string, std::string> fd_targets;  // fd -> what it is
  std::map<std::string, std::string> names;       // /dev/shm name -> ""
  std::map<pid_t, std::string> processes;         // pid -> "comm, state S, parent P"
};

Resources measure();

// The text of /proc/<pid>/stat after the command's closing parenthesis
// (state, parent, ...), and the command; nullopt once the process is gone.
// (No iostreams: a read of a process that vanishes meanwhile fails with
// ESRCH, and a stream would throw.)
struct ProcStat {
  std::string comm;
  std::string rest;
};
std::optional<ProcStat> proc_stat(pid_t pid);
// Prints to stderr what `now` holds that `base` does not.
void describe_leaks(const Resources& base, const Resources& now);

// Every /dev/shm name the soak makes starts with this (it holds our pid, so
// other programs' entries are never counted).
std::string shm_prefix();

// Orphaned grandchildren become our children (PR_SET_CHILD_SUBREAPER), so a
// leaked one is seen. reap_orphans() reaps the exited ones that are ours to
// reap (a killed child's shared-memory tracker) and says how many.
void become_subreaper();
int reap_orphans();

}  // namespace soak
