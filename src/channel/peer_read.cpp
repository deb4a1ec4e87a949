// src/channel/peer_read.cpp - large values read straight from the sender's
// memory: see peer_read.hpp.
#include "channel/peer_read.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>

#include "mpxx/errors.hpp"
#include "sys/process_identity.hpp"

namespace mpxx::detail {

namespace {

constexpr char kDone = 'D', kPush = 'P';

// Whether the sender closed its end of the answer socket: it died, or
// another of its threads ran exec() (same pid, other memory). The sender
// never writes on it, so anything readable is its end.
bool hung_up(int socket) {
  pollfd p{socket, POLLIN | POLLRDHUP, 0};
  return sys::retry([&] { return ::poll(&p, 1, 0); }) > 0;
}

// A large read is split between two threads only where there is a second
// CPU to run the other. From 4 MiB a half saves far more than the thread
// costs (~0.1 ms): a 16 MiB value, whose read after its first 64 KiB is
// just under 16 MiB, came ~10% faster split.
constexpr std::size_t kTwoThreadsMin = std::size_t{4} << 20;

bool two_cpus() {
  static const bool two = [] {
    cpu_set_t set;
    return ::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 1;
  }();
  return two;
}

// A thread with every signal blocked (signals are for the threads the
// program made); nothing if none can be made now.
template <class F>
std::optional<std::thread> start_thread(F f) {
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  std::optional<std::thread> t;
  try {
    t.emplace(std::move(f));
  } catch (...) {  // std::system_error, std::bad_alloc: one thread reads it all
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

EOFError sender_died() {
  return EOFError("mpxx: the other end closed the connection in the middle of a message (the "
                  "sender died while its value was read)");
}

}  // namespace

// From the pidfd's fdinfo.
pid_t pidfd_pid(int pidfd) {
  if (!sys::proc_is_ours()) return 0;
  const std::string text = sys::read_small_file("/proc/self/fdinfo/" + std::to_string(pidfd));
  if (text.empty()) return 0;
  const auto at = text.find("\nPid:");
  if (at == std::string::npos)
    throw ProtocolError("mpxx: recv: a large value's peer-read grant came without the sender's pidfd");
  return static_cast<pid_t>(std::strtol(text.c_str() + at + 5, nullptr, 10));
}

sys::UniqueFd open_process(pid_t pid, std::uint64_t start_time, bool& gone) {
  gone = false;
  if (start_time == 0 || pid <= 0 || !sys::proc_is_ours()) return {};
  sys::Liveness state = sys::Liveness::unknown;
  sys::UniqueFd fd = sys::ProcessIdentity{pid, start_time}.open(&state);
  gone = state == sys::Liveness::gone;
  return fd;
}

std::optional<PeerReadGrant> make_peer_read_grant() {
  PeerReadGrant grant;
  grant.pidfd = sys::try_pidfd_open(::getpid());
  if (!grant.pidfd) return std::nullopt;
  try {
    std::tie(grant.answer, grant.asker) = sys::socket_pair();
  } catch (const OSError&) {  // out of fds: the pipe serves
    return std::nullopt;
  }
  return grant;
}

PeerReadAnswer await_peer_read_answer(int answer_fd) {
  char a = 0;
  if (!sys::read_full(answer_fd, &a, 1)) return PeerReadAnswer::gone;
  if (a == kDone) return PeerReadAnswer::done;
  if (a == kPush) return PeerReadAnswer::push;
  throw ProtocolError("mpxx: send: the receiver answered a large value's peer-read grant with byte " +
                      std::to_string(static_cast<unsigned char>(a)));
}

void write_peer_read_pieces(std::byte* out, std::span<const std::span<const std::byte>> pieces) {
  for (std::span<const std::byte> piece : pieces) {
    const std::uint64_t pair[2] = {reinterpret_cast<std::uintptr_t>(piece.data()), piece.size()};
    std::memcpy(out, pair, sizeof pair);
    out += sizeof pair;
  }
}

PeerReadSource::PeerReadSource(std::span<const std::byte> pieces, std::uint64_t size, pid_t pid,
                           sys::UniqueFd pidfd, sys::UniqueFd asker)
    : left_(size), pid_(pid), pidfd_(std::move(pidfd)), asker_(std::move(asker)) {
  struct stat st {};
  if (asker_ && (::fstat(asker_.get(), &st) != 0 || !S_ISSOCK(st.st_mode))) {
    asker_.reset();  // never written to
    throw ProtocolError("mpxx: recv: a large value's peer-read grant came without its answer socket");
  }
  if (pieces.empty() || pieces.size() % 16 != 0 || pieces.size() / 16 > wire::kMaxPeerReadPieces)
    throw ProtocolError("mpxx: recv: a large value's peer-read grant names " + std::to_string(pieces.size()) +
                        " bytes of pieces");
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < pieces.size(); i += 16) {
    std::uint64_t address, length;
    std::memcpy(&address, pieces.data() + i, 8);
    std::memcpy(&length, pieces.data() + i + 8, 8);
    if (length > size - total)
      throw ProtocolError("mpxx: recv: a large value's pieces are longer than its size");
    total += length;
    if (length) pieces_.push_back({reinterpret_cast<void*>(static_cast<std::uintptr_t>(address)), length});
  }
  if (total != size) throw ProtocolError("mpxx: recv: a large value's pieces are shorter than its size");
}

// Done with, read or not (a decoder may fail half way: the value is then
// consumed, as any other), unless reading failed.
PeerReadSource::~PeerReadSource() {
  if (!failed_) answer(kDone);
}

void PeerReadSource::answer(char what) noexcept {
  if (!asker_) return;
  try {
    sys::write_full(asker_.get(), &what, 1);  // a sender already gone needs no answer
  } catch (...) {
  }
  asker_.reset();
}

long PeerReadSource::read_some(Position at, std::byte* out, std::size_t n) const noexcept {
  iovec remote[IOV_MAX];
  int count = 0;
  std::size_t want = 0;
  for (std::size_t i = at.piece, off = at.offset; i < pieces_.size() && want < n && count < IOV_MAX;
       ++i, off = 0) {
    const std::size_t take = std::min(pieces_[i].iov_len - off, n - want);
    remote[count++] = {static_cast<std::byte*>(pieces_[i].iov_base) + off, take};
    want += take;
  }
  iovec local{out, want};
  return sys::retry([&] { return ::process_vm_readv(pid_, &local, 1, remote, static_cast<unsigned long>(count), 0); });
}

void PeerReadSource::advance(Position& at, std::size_t n) const noexcept {
  while (n > 0) {
    const std::size_t step = std::min(pieces_[at.piece].iov_len - at.offset, n);
    at.offset += step;
    n -= step;
    if (at.offset == pieces_[at.piece].iov_len) {
      ++at.piece;
      at.offset = 0;
    }
  }
}

int PeerReadSource::copy(Position at, std::byte* out, std::size_t n) const noexcept {
  while (n > 0) {
    const long r = read_some(at, out, n);
    if (r < 0) return errno;
    if (r == 0) return ESRCH;  // nothing more to read there: not the sender's memory any more
    advance(at, static_cast<std::size_t>(r));
    out += r;
    n -= static_cast<std::size_t>(r);
  }
  return 0;
}

bool PeerReadSource::start(wire::Writer& out, std::size_t n) {
  if (pid_ > 0) {
    out.reserve(n);
    const long r = read_some(at_, out.data(), n);
    if (r > 0) {
      std::byte* p = out.extend(n);
      advance(at_, static_cast<std::size_t>(r));
      left_ -= static_cast<std::size_t>(r);
      read(p + r, n - static_cast<std::size_t>(r));  // the rest, if the first read came short
      return true;
    }
  }
  // Not permitted (EPERM, ENOSYS), or anything else before the first byte
  // (a sender that died meanwhile then closes the pipe: an EOFError there).
  answer(kPush);
  return false;
}

void PeerReadSource::read(void* out, std::size_t n) {
  if (n > left_) throw ProtocolError("mpxx: recv: a large value is shorter than its decoder reads");
  auto* p = static_cast<std::byte*>(out);
  int err = 0, helper_err = 0;
  std::optional<std::thread> helper;
  if (n >= kTwoThreadsMin && two_cpus()) {
    // Two threads copy a half each: the kernel's copy runs at about half
    // the speed of a memcpy (it pins the sender's pages a few at a time),
    // and the sender is only waiting meanwhile.
    const std::size_t first = n / 2 & ~std::size_t{4095};
    Position second = at_;
    advance(second, first);
    helper = start_thread([&, second] { helper_err = copy(second, p + first, n - first); });
    err = copy(at_, p, helper ? first : n);
    if (helper) {
      helper->join();
      if (!err) err = helper_err;
    }
  } else {
    err = copy(at_, p, n);
  }
  // A failed read is never answered 'D': the sender's send() raises.
  failed_ = true;
  // Bytes read from a pid the sender no longer holds, or from memory it no
  // longer has, are not its bytes.
  lost_ = err == ESRCH || (!err && (sys::pidfd_exited(pidfd_.get()) || (asker_ && hung_up(asker_.get()))));
  if (lost_) throw sender_died();
  if (err) sys::throw_errno(err, "recv: reading a large value from the sender's memory");
  failed_ = false;
  advance(at_, n);
  left_ -= n;
  if (left_ == 0) answer(kDone);
}

}  // namespace mpxx::detail
