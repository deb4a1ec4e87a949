// SharedMemory, ShareableList, and the tracker that removes a named block
// whose creator died without unlinking it.
#include "mpxx/shared_memory.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "process/state.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

struct ShmState {
  std::string name;
  bool named = false;
  bool creator = false;
  sys::UniqueFd fd;
  std::byte* addr = nullptr;
  std::size_t size = 0;

  ~ShmState() { unmap(); }
  void unmap() noexcept {
    if (addr) ::munmap(addr, size ? size : 1);
    addr = nullptr;
    fd.reset();
  }
};

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

// ------------------------------------------------------------ the tracker
//
// A process forked on the first named create() of each creating process
// (CPython's resource_tracker). It reads records from a socket whose other
// end only the creator holds:
//   [u8 'R' or 'U'][u64 dev][u64 ino][u32 length][name]
// When the socket reports EOF - the creator has exited or exec'd, whatever
// the cause, SIGKILL included - it unlinks every name still registered that
// still denotes the registered segment, says so on stderr, and exits. It
// lives in its own session and ignores the terminal's signals, so a Ctrl-C
// does not stop it before it has cleaned up. If it is killed anyway, the
// creator notices at its next registration and starts a new one, replaying
// what is registered.

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

void tracker_say(const std::string& m) noexcept { (void)!::write(2, m.data(), m.size()); }

[[noreturn]] void tracker_main(int in) noexcept {
  ::setsid();
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGPIPE}) ::signal(sig, SIG_IGN);
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
    siginfo_t si{};
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(t.pidfd.get()), &si,
                    WEXITED) < 0 &&
           errno == EINTR) {
    }
  }
  t.pidfd.reset();
  t.owner = 0;
  auto [mine, theirs] = sys::socket_pair();
  pid_t pid = ::fork();
  if (pid < 0) sys::throw_errno("cannot start the shared memory tracker");
  if (pid == 0) {
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
  theirs.reset();
  t.pidfd = sys::pidfd_open(pid);
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

// "name" or "/name" -> "/name", the form shm_open wants.
std::string posix_name(const std::string& name) { return name[0] == '/' ? name : "/" + name; }

// A generated memfd name, "mpxx-<pid>-<fd>-<16 hex digits>".
struct MemfdName {
  unsigned long pid = 0, fd = 0;
  std::string tag;
};

std::optional<MemfdName> parse_memfd_name(std::string_view s) {
  if (!s.empty() && s[0] == '/') s.remove_prefix(1);
  if (!s.starts_with("mpxx-")) return std::nullopt;
  s.remove_prefix(5);
  MemfdName m;
  for (unsigned long* field : {&m.pid, &m.fd}) {
    std::size_t i = 0;
    unsigned long v = 0;
    for (; i < s.size() && i < 10 && s[i] >= '0' && s[i] <= '9'; ++i) v = v * 10 + static_cast<unsigned long>(s[i] - '0');
    if (i == 0 || i >= s.size() || s[i] != '-') return std::nullopt;
    *field = v;
    s.remove_prefix(i + 1);
  }
  if (s.size() != 16 || s.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    return std::nullopt;
  m.tag = s;
  return m;
}

std::string random_tag() {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof r)) {
    // No entropy yet (early boot): uniqueness is all the tag needs here.
    static std::atomic<std::uint64_t> counter{0};
    r = (static_cast<std::uint64_t>(::getpid()) << 32) ^
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        counter.fetch_add(0x9e3779b97f4a7c15ull);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

std::byte* map_fd(int fd, std::size_t size, const std::string& what) {
  void* p = ::mmap(nullptr, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) sys::throw_errno("cannot map shared memory '" + what + "'");
  return static_cast<std::byte*>(p);
}

std::size_t fd_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) sys::throw_errno("fstat(shared memory)");
  return static_cast<std::size_t>(st.st_size);
}

// Opens the memfd a generated name denotes, through its creator's fd table;
// -1 with errno set if it is not (or no longer) there.
int open_memfd(const MemfdName& m) {
  std::string path = "/proc/" + std::to_string(m.pid) + "/fd/" + std::to_string(m.fd);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  // The fd number may have been reused since: check it is that very memfd.
  char target[256] = {0};
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(self.c_str(), target, sizeof target - 1);
  std::string want = "/memfd:mpxx-" + m.tag + " (deleted)";
  if (n <= 0 || want != std::string_view(target, static_cast<std::size_t>(n))) {
    ::close(fd);
    errno = ENOENT;
    return -1;
  }
  return fd;
}

}  // namespace

void stop_resource_tracker() noexcept {
  Tracker& t = tracker();
  std::lock_guard lk(t.mu);
  if (!t.pidfd || t.owner != ::getpid()) return;
  t.sock.reset();  // EOF: the tracker removes what is left and exits
  siginfo_t si{};
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(t.pidfd.get()), &si, WEXITED) <
             0 &&
         errno == EINTR) {
  }
  t.pidfd.reset();
  t.owner = 0;
  t.registered.clear();
}

}  // namespace detail

using detail::ShmState;

// ------------------------------------------------------------ SharedMemory

SharedMemory::SharedMemory(std::optional<std::string> name, bool create, std::size_t size) {
  if (create) {
    if (size == 0) throw ValueError("mpxx: 'size' must be a positive number different from zero");
    *this = name ? SharedMemory::create(size, std::move(*name)) : SharedMemory::create(size);
  } else {
    if (!name) throw ValueError("mpxx: 'name' can only be omitted when create is true");
    *this = attach(*name, size);
  }
}

SharedMemory SharedMemory::create(std::size_t size) {
  if (size == 0) throw ValueError("mpxx: shared memory size must be > 0");
  auto st = std::make_shared<ShmState>();
  std::string tag = detail::random_tag();
  int fd = ::memfd_create(("mpxx-" + tag).c_str(), MFD_CLOEXEC);
  if (fd < 0) sys::throw_errno("cannot create shared memory (memfd_create)");
  st->fd.reset(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
    sys::throw_errno("cannot size shared memory to " + std::to_string(size) + " bytes");
  st->size = size;
  st->name = "mpxx-" + std::to_string(::getpid()) + "-" + std::to_string(fd) + "-" + tag;
  st->creator = true;
  st->addr = detail::map_fd(fd, size, st->name);
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

SharedMemory SharedMemory::create(std::size_t size, std::string name) {
  if (size == 0) throw ValueError("mpxx: shared memory size must be > 0");
  if (name.empty() || name == "/" || name.find('/', 1) != std::string::npos)
    throw ValueError("mpxx: invalid shared memory name '" + name +
                     "' (a non-empty name without '/' after its first character)");
  if (detail::parse_memfd_name(name))
    throw ValueError("mpxx: shared memory name '" + name +
                     "' has the form of a generated name (mpxx-<pid>-<fd>-<tag>), which is "
                     "reserved for blocks created without a name");
  std::string path = detail::posix_name(name);
  if (!name.empty() && name[0] == '/') name.erase(0, 1);  // Python's name has no '/'
  int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    throw OSError(err, "mpxx: cannot create shared memory '" + name + "': " + std::strerror(err));
  }
  auto st = std::make_shared<ShmState>();
  st->fd.reset(fd);
  st->name = std::move(name);
  st->named = true;
  st->creator = true;
  try {
    detail::tracker_send('R', path, detail::segment_id(fd));
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
      sys::throw_errno("cannot size shared memory '" + st->name + "' to " +
                       std::to_string(size) + " bytes");
    st->size = size;
    st->addr = detail::map_fd(fd, size, st->name);
  } catch (...) {
    ::shm_unlink(path.c_str());
    try {
      detail::tracker_send('U', path, {});
    } catch (...) {
    }
    throw;
  }
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

SharedMemory SharedMemory::attach(const std::string& name, std::size_t size) {
  if (name.empty()) throw ValueError("mpxx: cannot attach to shared memory with an empty name");
  auto st = std::make_shared<ShmState>();
  int fd = -1;
  if (auto m = detail::parse_memfd_name(name)) {
    // A memfd block: reachable through its creator's fd table while the
    // creator holds it.
    fd = detail::open_memfd(*m);
    if (fd < 0) {
      int err = errno;
      if (err == ENOENT || err == ESRCH)
        throw OSError(ENOENT, "mpxx: no shared memory named '" + name +
                                  "' (its creator has exited or closed it)");
      throw OSError(err, "mpxx: cannot attach to shared memory '" + name + "' through process " +
                             std::to_string(m->pid) + ": " + std::strerror(err));
    }
    st->name = name[0] == '/' ? name.substr(1) : name;
  } else {
    fd = ::shm_open(detail::posix_name(name).c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
      int err = errno;
      throw OSError(err, "mpxx: cannot attach to shared memory '" + name + "': " +
                             std::strerror(err));
    }
    st->name = name[0] == '/' ? name.substr(1) : name;
    st->named = true;
  }
  st->fd.reset(fd);
  st->size = detail::fd_size(fd);
  if (st->size == 0)
    throw ValueError("mpxx: shared memory '" + name + "' is empty (its creator has not sized it)");
  if (size > st->size)
    throw ValueError("mpxx: shared memory '" + name + "' has " + std::to_string(st->size) +
                     " bytes, " + std::to_string(size) + " were asked for");
  st->addr = detail::map_fd(fd, st->size, name);
  SharedMemory shm(detail::wire::empty);
  shm.st_ = std::move(st);
  return shm;
}

std::span<std::byte> SharedMemory::buf() const {
  if (!st_ || !st_->addr) throw ValueError("mpxx: shared memory is closed");
  return {st_->addr, st_->size};
}

std::size_t SharedMemory::size() const noexcept { return st_ ? st_->size : 0; }

const std::string& SharedMemory::name() const noexcept {
  static const std::string none;
  return st_ ? st_->name : none;
}

bool SharedMemory::named() const noexcept { return st_ && st_->named; }

bool SharedMemory::creator() const noexcept { return st_ && st_->creator; }

void SharedMemory::close() noexcept {
  if (st_) st_->unmap();
}

void SharedMemory::unlink() {
  if (!st_ || !st_->named) return;
  std::string path = detail::posix_name(st_->name);
  if (::shm_unlink(path.c_str()) < 0) {
    int err = errno;
    throw OSError(err, "mpxx: cannot unlink shared memory '" + st_->name + "': " + std::strerror(err));
  }
  if (st_->creator) detail::tracker_send('U', path, {});
}

void SharedMemory::save(detail::wire::OutArchive& ar) const {
  if (!st_ || !st_->fd) throw ValueError("mpxx: cannot send closed shared memory");
  std::uint32_t index = ar.writer().add_fd(st_->fd.get());
  ar(index, static_cast<std::uint64_t>(st_->size), st_->name, static_cast<std::uint8_t>(st_->named));
}

void SharedMemory::load(detail::wire::InArchive& ar) {
  std::uint32_t index;
  std::uint64_t size;
  std::string name;
  std::uint8_t named;
  ar(index, size, name, named);
  auto st = std::make_shared<ShmState>();
  st->fd.reset(ar.reader().take_fd(index));
  std::size_t actual = detail::fd_size(st->fd.get());
  if (size == 0 || size > actual || named > 1)
    throw ProtocolError("mpxx: received shared memory of " + std::to_string(actual) +
                        " bytes described as " + std::to_string(size));
  st->size = static_cast<std::size_t>(size);
  st->name = std::move(name);
  st->named = named != 0;
  st->addr = detail::map_fd(st->fd.get(), st->size, st->name);
  st_ = std::move(st);
}

// ----------------------------------------------------------- ShareableList
//
// Layout: [u64 magic][u64 count][count slots][data], slot = {u32 type,
// u32 capacity, u64 offset, u64 length}; offsets are relative to the data.
// Every access checks the slot it uses against the block: any process
// attached may have scribbled over the layout.

namespace {
constexpr std::uint64_t kListMagic = 0x5453494c4d485358ull;  // "XSHMLIST"
struct Slot {
  std::uint32_t type;
  std::uint32_t capacity;
  std::uint64_t offset;
  std::uint64_t length;
};
constexpr std::size_t kHeader = 16;
constexpr std::uint32_t kTypes = std::variant_size_v<ShareableList::Item>;

std::size_t capacity_for(const ShareableList::Item& v) {
  std::size_t n = 8;
  if (auto* s = std::get_if<std::string>(&v)) n = (s->size() + 7) / 8 * 8;
  if (auto* b = std::get_if<Bytes>(&v)) n = (b->size() + 7) / 8 * 8;
  if (n > UINT32_MAX - 7)
    throw ValueError("mpxx: a ShareableList item of " + std::to_string(n) + " bytes is too large");
  return n;
}

std::size_t layout_size(const std::vector<ShareableList::Item>& items) {
  std::size_t n = kHeader + items.size() * sizeof(Slot);
  for (auto& v : items) n += capacity_for(v);
  return n;
}

std::uint64_t load_u64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The list's item count, checked against the block.
std::size_t count_in(std::span<std::byte> buf, const std::string& name) {
  if (buf.size() < kHeader || load_u64(buf.data()) != kListMagic)
    throw ValueError("mpxx: shared memory '" + name + "' does not hold a ShareableList");
  std::uint64_t n = load_u64(buf.data() + 8);
  if (n > (buf.size() - kHeader) / sizeof(Slot))
    throw ProtocolError("mpxx: corrupt ShareableList '" + name + "' (count " + std::to_string(n) + ")");
  return static_cast<std::size_t>(n);
}

// Slot i (i < count), and where its data is, checked against the block.
struct SlotRef {
  Slot slot;
  std::byte* data;
};
SlotRef slot_at(std::span<std::byte> buf, std::size_t n, std::size_t i, const std::string& name) {
  Slot s;
  std::memcpy(&s, buf.data() + kHeader + i * sizeof(Slot), sizeof s);
  std::size_t data = kHeader + n * sizeof(Slot);
  std::size_t room = buf.size() - data;
  if (s.type >= kTypes || s.offset > room || s.capacity > room - s.offset || s.length > s.capacity ||
      (s.type != 4 && s.type != 5 && s.capacity < 8))
    throw ProtocolError("mpxx: corrupt ShareableList '" + name + "' (slot " + std::to_string(i) + ")");
  return {s, buf.data() + data + s.offset};
}

[[noreturn]] void throw_index(std::size_t i, std::size_t n) {
  throw IndexError("mpxx: ShareableList index " + std::to_string(i) + " out of range (size " +
                   std::to_string(n) + ")");
}
}  // namespace

ShareableList::ShareableList(const std::vector<Item>& items)
    : ShareableList(SharedMemory::create(layout_size(items))) {
  init(items);
}

ShareableList::ShareableList(const std::vector<Item>& items, std::string name)
    : ShareableList(SharedMemory::create(layout_size(items), std::move(name))) {
  try {
    init(items);
  } catch (...) {
    try {
      shm_.unlink();
    } catch (...) {
    }
    throw;
  }
}

void ShareableList::init(const std::vector<Item>& items) {
  std::byte* base = shm_.buf().data();
  std::uint64_t magic = kListMagic, n = items.size();
  std::uint64_t off = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    Slot s{0, static_cast<std::uint32_t>(capacity_for(items[i])), off, 0};
    std::memcpy(base + kHeader + i * sizeof(Slot), &s, sizeof s);
    off += s.capacity;
  }
  std::memcpy(base + 8, &n, 8);
  std::memcpy(base, &magic, 8);
  for (std::size_t i = 0; i < items.size(); ++i) set(i, items[i]);
}

ShareableList::ShareableList(SharedMemory shm) : shm_(std::move(shm)) {}

ShareableList ShareableList::attach(const std::string& name) {
  ShareableList l(SharedMemory::attach(name));
  l.check();
  return l;
}

void ShareableList::load(detail::wire::InArchive& ar) {
  shm_.load(ar);
  check();
}

// Validates a whole list that came from elsewhere, so that a wrong block is
// reported where it was attached.
void ShareableList::check() const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  for (std::size_t i = 0; i < n; ++i) slot_at(buf, n, i, shm_.name());
}

std::size_t ShareableList::size() const { return count_in(shm_.buf(), shm_.name()); }

ShareableList::Item ShareableList::get(std::size_t i) const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  if (i >= n) throw_index(i, n);
  auto [s, p] = slot_at(buf, n, i, shm_.name());
  switch (s.type) {
    case 0: return std::monostate{};
    case 1: return static_cast<std::int64_t>(load_u64(p));
    case 2: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case 3: return std::to_integer<int>(p[0]) != 0;
    case 4: return std::string(reinterpret_cast<const char*>(p), s.length);
    default: return Bytes(p, p + s.length);
  }
}

void ShareableList::set(std::size_t i, const Item& v) const {
  auto buf = shm_.buf();
  std::size_t n = count_in(buf, shm_.name());
  if (i >= n) throw_index(i, n);
  auto [s, p] = slot_at(buf, n, i, shm_.name());
  std::size_t need = 0;
  const void* src = nullptr;
  std::int64_t iv;
  double dv;
  std::byte bv;
  switch (v.index()) {
    case 0: break;
    case 1: iv = std::get<1>(v); src = &iv; need = 8; break;
    case 2: dv = std::get<2>(v); src = &dv; need = 8; break;
    case 3: bv = std::byte{std::get<3>(v) ? std::uint8_t{1} : std::uint8_t{0}}; src = &bv; need = 1; break;
    case 4: src = std::get<4>(v).data(); need = std::get<4>(v).size(); break;
    case 5: src = std::get<5>(v).data(); need = std::get<5>(v).size(); break;
  }
  if (need > s.capacity)
    throw ValueError("mpxx: a " + std::string(v.index() == 4 ? "string" : "bytes value") + " of " +
                     std::to_string(need) + " bytes does not fit item " + std::to_string(i) +
                     " of ShareableList '" + shm_.name() + "' (" + std::to_string(s.capacity) +
                     " bytes, fixed when the list was created)");
  if (need) std::memcpy(p, src, need);
  s.length = need;
  s.type = static_cast<std::uint32_t>(v.index());
  std::memcpy(buf.data() + kHeader + i * sizeof(Slot), &s, sizeof s);
}

ShareableList::Ref ShareableList::operator[](std::size_t i) const {
  std::size_t n = size();
  if (i >= n) throw_index(i, n);
  return Ref(this, i);
}

std::size_t ShareableList::count(const Item& v) const {
  std::size_t c = 0;
  for (std::size_t i = 0, n = size(); i < n; ++i) c += get(i) == v;
  return c;
}

std::size_t ShareableList::index(const Item& v) const {
  for (std::size_t i = 0, n = size(); i < n; ++i)
    if (get(i) == v) return i;
  throw ValueError("mpxx: value is not in the ShareableList '" + shm_.name() + "'");
}

std::vector<ShareableList::Item> ShareableList::to_vector() const {
  std::vector<Item> out;
  for (std::size_t i = 0, n = size(); i < n; ++i) out.push_back(get(i));
  return out;
}

}  // namespace mpxx
