// The resource tracker: the process that unlinks the named shared memory
// blocks its creator left behind (CPython's resource_tracker).
#include "shared/tracker.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "mpxx/errors.hpp"
#include "sys/fd.hpp"

namespace mpxx::detail {

namespace {

// Which /dev/shm segment a name referred to when it was registered: the
// tracker removes a name only while it still denotes that segment.
struct SegmentId {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
};

SegmentId segment_id(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) sys::throw_errno("fstat(shared memory)");
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// The tracker reads records [u8 'R' or 'U'][u64 dev][u64 ino][u32 length]
// [name] from a socket only its creator holds; EOF on it, however the creator
// ended, is its cue to unlink what is still registered and exit.
// Why: see docs/design.md, "Resource tracker".

struct Tracker {
  std::mutex mu;
  pid_t owner = 0;                  // the process the tracker below works for
  sys::UniqueFd sock;               // our end; EOF on it is the tracker's cue
  sys::UniqueFd pidfd;              // to reap it
  std::map<std::string, SegmentId> registered;  // what it would remove now
};

Tracker& tracker() {
  static auto* t = [] {
    auto* tr = new Tracker;
    ::pthread_atfork(nullptr, nullptr, [] {
      // A forked child has its own registrations (none yet): it must not
      // hold the parent's socket open (the tracker would never see EOF) nor
      // unregister the parent's names. The old state may have been in use by
      // another thread at the fork: it is abandoned, not destroyed.
      Tracker& t = tracker();
      new (&t.mu) std::mutex;
      t.sock.reset();
      t.pidfd.reset();
      t.owner = 0;
      new (&t.registered) std::map<std::string, SegmentId>;
    });
    return tr;
  }();
  return *t;
}

void append_record(std::string& out, char op, const std::string& name, SegmentId id) {
  auto len = static_cast<std::uint32_t>(name.size());
  out.push_back(op);
  out.append(reinterpret_cast<const char*>(&id.dev), 8);
  out.append(reinterpret_cast<const char*>(&id.ino), 8);
  out.append(reinterpret_cast<const char*>(&len), 4);
  out += name;
}

// Reads exactly n bytes; false on EOF or error (both end the tracker's watch).
bool tracker_read(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Waits for the exited (or exiting) tracker behind pidfd and reaps it.
void reap(int pidfd) noexcept {
  siginfo_t si{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &si, WEXITED) < 0 &&
         errno == EINTR) {
  }
}

// The tracker outlives a Ctrl-C or a hang-up of its creator's terminal: it
// must still be there to clean up when the creator dies of it.
const std::initializer_list<int> kIgnoredByTracker = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGPIPE};

void tracker_say(const std::string& m) noexcept { (void)!::write(2, m.data(), m.size()); }

[[noreturn]] void tracker_main(int in) noexcept {
  ::setsid();
  sys::ignore_and_unblock(kIgnoredByTracker);  // blocked since before the fork
  std::map<std::string, SegmentId> names;
  try {
    for (;;) {
      char op;
      SegmentId id;
      std::uint32_t len;
      if (!tracker_read(in, &op, 1) || !tracker_read(in, &id.dev, 8) ||
          !tracker_read(in, &id.ino, 8) || !tracker_read(in, &len, 4) || len > 4096)
        break;
      std::string name(len, '\0');
      if (!tracker_read(in, name.data(), len)) break;
      if (op == 'R') names[name] = id;
      if (op == 'U') names.erase(name);
    }
  } catch (...) {  // out of memory: clean up what we know
  }
  std::vector<std::string> removed;
  for (const auto& [name, id] : names) {
    int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) continue;  // already gone
    struct stat st {};
    bool same = ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_dev) == id.dev &&
                static_cast<std::uint64_t>(st.st_ino) == id.ino;
    ::close(fd);
    if (same && ::shm_unlink(name.c_str()) == 0) removed.push_back(name);
  }
  // Only now talk: a closed stderr must not stop the cleanup.
  for (const std::string& name : removed)
    tracker_say("mpxx: the process that created shared memory '" + name.substr(1) +
                "' exited without unlinking it; removed it\n");
  ::_exit(0);
}

// Starts a tracker for this process and hands it everything registered.
// Caller holds t.mu.
void start_tracker(Tracker& t) {
  t.sock.reset();
  if (t.pidfd && t.owner == ::getpid()) {
    // A previous tracker that was killed (our socket is closed, so it
    // cannot be waiting for us): reap it.
    reap(t.pidfd.get());
  }
  t.pidfd.reset();
  t.owner = 0;
  auto [mine, theirs] = [] {
    try {
      return sys::socket_pair();
    } catch (...) {
      sys::rethrow_with_context("cannot start the shared memory tracker");
    }
  }();
  sys::BlockSignals immune(kIgnoredByTracker);
  const pid_t pid = ::fork();
  if (pid < 0) sys::throw_errno("cannot start the shared memory tracker: fork");
  if (pid == 0) {
    sys::forked_child_starts();
    // Keep stderr (for its message) and the socket, nothing else of ours:
    // above all not our end of the socket, or EOF would never come.
    int in = theirs.release();
    mine.reset();
    if (in != 3) {
      ::dup2(in, 3);
      ::close(in);
    }
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      if (null > 3) ::close(null);
    }
    ::close_range(4, ~0u, 0);
    tracker_main(3);
  }
  immune.restore();
  theirs.reset();
  t.pidfd = sys::pidfd_of_new_child(pid, "the shared memory tracker");
  t.sock = std::move(mine);
  t.owner = ::getpid();
  std::string all;
  for (const auto& [name, id] : t.registered) append_record(all, 'R', name, id);
  if (!all.empty() && !sys::write_full(t.sock.get(), all.data(), all.size()))
    throw OSError(EPIPE, "mpxx: the shared memory tracker exited at once");
}

// Sends one record to this process's tracker, starting one on the first
// registration (or if the previous one was killed). The tracker stays up
// until the process exits, so creating blocks in a loop forks it once. 'U'
// in a process without a tracker - say a forked child unlinking its
// parent's block - is a no-op: nothing of its own is being watched.
void tracker_send(char op, const std::string& path, SegmentId id) {
  Tracker& t = tracker();
  std::lock_guard lk(t.mu);
  bool ours = t.owner == ::getpid() && t.sock;
  if (op == 'U') {
    if (t.registered.erase(path) == 0 || !ours) return;
  } else {
    t.registered[path] = id;
  }
  if (ours) {
    std::string rec;
    append_record(rec, op, path, id);
    if (sys::write_full(t.sock.get(), rec.data(), rec.size())) return;
    t.sock.reset();  // the tracker is gone (killed): replace it
    if (t.registered.empty()) return;
  }
  start_tracker(t);  // replays t.registered, which includes this change
}

}  // namespace

void track_segment(const std::string& path, int fd) { tracker_send('R', path, segment_id(fd)); }

void untrack_segment(const std::string& path) { tracker_send('U', path, {}); }

void stop_resource_tracker() noexcept {
  Tracker& t = tracker();
  std::lock_guard lk(t.mu);
  if (!t.pidfd || t.owner != ::getpid()) return;
  t.sock.reset();  // EOF: the tracker removes what is left and exits
  reap(t.pidfd.get());
  t.pidfd.reset();
  t.owner = 0;
  t.registered.clear();
}

}  // namespace mpxx::detail
