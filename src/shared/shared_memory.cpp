// SharedMemory: a block of bytes that processes map by handle or by name -
// a memfd when unnamed, a /dev/shm segment when named.
#include "mpxx/shared_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "shared/tracker.hpp"
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

// Where shm_open keeps its names (glibc).
constexpr const char* kShmDir = "/dev/shm";

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
  st->fd = sys::make_memfd("mpxx-" + tag, size);
  const int fd = st->fd.get();
  sys::reserve_shared(fd, size, "(memfd)");
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
  // The segment is made without a name, registered with the tracker, and
  // only then named (linkat fails with EEXIST as O_EXCL would): a creator
  // killed at any moment leaves no name the tracker does not know
  // (design.md, "Resource tracker"). Where /dev/shm cannot make unnamed
  // files, shm_open names it at once.
  bool named_yet = false;
  int fd = ::open(detail::kShmDir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == ENOENT)) {
    fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    named_yet = fd >= 0;
  }
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
    if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
      sys::throw_errno("cannot size shared memory '" + st->name + "' to " +
                       std::to_string(size) + " bytes");
    sys::reserve_shared(fd, size, "'" + st->name + "'");
    detail::track_segment(path, fd);
    if (!named_yet) {
      const std::string self = "/proc/self/fd/" + std::to_string(fd);
      if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, (std::string(detail::kShmDir) + path).c_str(), AT_SYMLINK_FOLLOW) < 0) {
        int err = errno;
        detail::untrack_segment(path);
        throw OSError(err, "mpxx: cannot create shared memory '" + st->name + "': " + std::strerror(err));
      }
      named_yet = true;
    }
    st->size = size;
    st->addr = detail::map_fd(fd, size, st->name);
  } catch (...) {
    if (named_yet) ::shm_unlink(path.c_str());
    try {
      detail::untrack_segment(path);
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
  if (st_->creator) detail::untrack_segment(path);
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

}  // namespace mpxx
