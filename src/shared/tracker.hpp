// src/shared/tracker.hpp - the resource tracker: a process that removes the
// named shared memory blocks a process created and did not unlink, once that
// process has exited, however it ended. Internal.
#pragma once

#include <string>

namespace mpxx::detail {

// Registers /dev/shm name `path` ("/name"), created by this process, whose
// segment is open as `fd`: if this process exits without untrack_segment,
// the tracker unlinks the name, provided it still denotes that segment.
// Starts this process's tracker on first use (or if it was killed).
void track_segment(const std::string& path, int fd);
// Forgets `path` (its creator unlinked it). A no-op for a name this process
// did not register, e.g. its parent's, in a forked child.
void untrack_segment(const std::string& path);

// Stops this process's shared memory tracker, which then removes the named
// blocks this process created and did not unlink.
void stop_resource_tracker() noexcept;

}  // namespace mpxx::detail
