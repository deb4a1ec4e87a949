// soak/resources.hpp - the resource baseline and the leak check.
#pragma once

#include <string>

namespace soak {

struct Resources {
  long fds = 0;          // open in the parent
  long shared_maps = 0;  // memfd and /dev/shm mappings of the parent
  long shm_names = 0;    // /dev/shm entries named with shm_prefix()
  long descendants = 0;  // live processes whose ancestry leads to the parent
  long zombies = 0;      // among them, exited and not reaped
  long rss_kib = 0;
};

Resources measure();

// Every /dev/shm name the soak makes starts with this (it holds our pid, so
// other programs' entries are never counted).
std::string shm_prefix();

// Orphaned grandchildren become our children (PR_SET_CHILD_SUBREAPER), so a
// leaked one is seen and, after the check, reaped.
void become_subreaper();
void reap_orphans();

}  // namespace soak
