// Listener, Client, and CPython's authentication handshake.
//
// The handshake, as CPython's multiprocessing.connection does it: the side
// that delivers a challenge sends b"#CHALLENGE#" + message; the other side
// answers with a MAC of the message under the shared authkey; the first
// replies b"#WELCOME#" or b"#FAILURE#". A Listener challenges first, then
// answers the client's challenge. CPython <= 3.11 sends 20 random bytes and
// expects a raw HMAC-MD5; 3.12+ sends b"{sha256}" + random bytes and
// expects b"{sha256}" + HMAC-SHA256 of the whole message. We send the modern
// form and verify either kind of answer, and answer either kind of challenge.
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <deque>

#include "mpxx/connection.hpp"
#include "channel/connection_state.hpp"
#include "sys/fd.hpp"

namespace mpxx {
namespace detail {

namespace {

const std::string kChallenge = "#CHALLENGE#";
const std::string kWelcome = "#WELCOME#";
const std::string kFailure = "#FAILURE#";
constexpr std::size_t kMaxHandshakeMessage = 256;
// Connections a Listener authenticates at once; a new one beyond this
// pushes out the one waiting longest (see docs/security.md).
constexpr std::size_t kMaxPending = 128;
// New connections taken from the backlog per turn, so that those already
// in their handshake are not starved by a flood.
constexpr int kAcceptBatch = 64;

const EVP_MD* digest_by_name(const std::string& name) {
  if (name == "md5") return EVP_md5();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha384") return EVP_sha384();
  if (name == "sha3_256") return EVP_sha3_256();
  if (name == "sha3_384") return EVP_sha3_384();
  return nullptr;
}

std::string hmac(const std::string& name, const std::string& key, const std::string& message) {
  const EVP_MD* md = digest_by_name(name);
  if (!md) throw AuthenticationError("mpxx: unsupported digest '" + name + "'");
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    throw AuthenticationError("mpxx: HMAC-" + name + " failed");
  return std::string(reinterpret_cast<char*>(out), len);
}

// CPython's _get_digest_name_and_payload: 16- and 20-byte messages are the
// legacy (MD5, unprefixed) form; others must start with "{digest}".
std::pair<std::string, std::string> digest_and_payload(const std::string& m) {
  if (m.size() == 16 || m.size() == 20) return {"", m};
  if (!m.empty() && m[0] == '{') {
    auto curly = m.find('}', 1);
    if (curly != std::string::npos && curly <= 9) {
      std::string name = m.substr(1, curly - 1);
      if (digest_by_name(name)) return {name, m.substr(curly + 1)};
    }
  }
  throw AuthenticationError("mpxx: unsupported challenge or response (length " +
                            std::to_string(m.size()) + ", no known {digest} prefix)");
}

std::string create_response(const std::string& authkey, const std::string& message) {
  auto [name, payload] = digest_and_payload(message);
  if (name.empty()) return hmac("md5", authkey, message);
  return "{" + name + "}" + hmac(name, authkey, message);  // the MAC covers the prefix too
}

bool verify(const std::string& authkey, const std::string& message, const std::string& response) {
  auto [name, mac] = digest_and_payload(response);
  std::string expected = hmac(name.empty() ? "md5" : name, authkey, message);
  return expected.size() == mac.size() && CRYPTO_memcmp(expected.data(), mac.data(), mac.size()) == 0;
}

void deliver_challenge(Connection& c, const std::string& authkey) {
  std::string random(40, '\0');
  if (::getentropy(random.data(), random.size()) != 0) sys::throw_errno("getentropy");
  const std::string message = "{sha256}" + random;
  c.send_bytes(kChallenge + message);
  std::string response = c.recv_bytes(kMaxHandshakeMessage);
  if (!verify(authkey, message, response)) {
    c.send_bytes(kFailure);
    throw AuthenticationError("mpxx: digest received was wrong");
  }
  c.send_bytes(kWelcome);
}

void answer_challenge(Connection& c, const std::string& authkey) {
  std::string message = c.recv_bytes(kMaxHandshakeMessage);
  if (message.compare(0, kChallenge.size(), kChallenge) != 0)
    throw AuthenticationError("mpxx: protocol error: expected a challenge, got " +
                              std::to_string(message.size()) + " other bytes");
  message.erase(0, kChallenge.size());
  c.send_bytes(create_response(authkey, message));
  if (c.recv_bytes(kMaxHandshakeMessage) != kWelcome)
    throw AuthenticationError("mpxx: digest sent was rejected (wrong authkey?)");
}

// Runs a handshake step with a deadline, closing the connection on failure.
template <class F>
void handshake(Connection& c, std::chrono::milliseconds timeout, F f) {
  ConnAccess::set_deadline(c, sys::Deadline::after(timeout));
  try {
    f();
  } catch (...) {
    c.close();
    throw;
  }
  ConnAccess::set_deadline(c, std::nullopt);
}

// An accepted connection in its handshake, driven without blocking, so
// that one that stalls holds up no other (see Listener::State::accept).
// Nothing it reads is longer than kMaxHandshakeMessage: no allocation
// follows what a peer claims before it has proven it holds the authkey.
struct PendingPeer {
  enum class Step { their_answer, their_challenge, their_welcome };
  sys::UniqueFd fd;
  Address peer;
  std::chrono::steady_clock::time_point deadline;
  Step step = Step::their_answer;
  std::string challenge;  // what we asked the peer to sign
  unsigned char head[4];
  std::size_t head_got = 0;
  std::string body;
  std::size_t body_got = 0;

  std::string who() const { return "the client at " + peer.to_string(); }

  // One message in the socket's framing, sent without waiting: a few
  // hundred bytes always fit in a fresh socket's buffer, unless the peer
  // has gone.
  void send(const std::string& m) {
    std::string frame(4, '\0');
    for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(m.size() >> (24 - 8 * i));
    frame += m;
    ssize_t r = sys::retry([&] { return ::send(fd.get(), frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (r < 0) sys::throw_errno("mpxx: cannot send the handshake to " + who());
    if (static_cast<std::size_t>(r) != frame.size())
      throw OSError(EAGAIN, "mpxx: " + who() + " does not read its handshake; connection closed");
  }

  // What has arrived of the current message, never past its end (what
  // follows the handshake belongs to the connection); the message once
  // whole, nullopt while more is to come.
  std::optional<std::string> read_some() {
    for (;;) {
      char* to;
      std::size_t want;
      if (head_got < 4) {
        to = reinterpret_cast<char*>(head) + head_got;
        want = 4 - head_got;
      } else {
        to = body.data() + body_got;
        want = body.size() - body_got;
      }
      ssize_t r = want == 0 ? 0 : ::recv(fd.get(), to, want, MSG_DONTWAIT);
      if (want != 0) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
        if (r < 0 && errno != ECONNRESET) sys::throw_errno("mpxx: cannot read the handshake of " + who());
        if (r <= 0)
          throw EOFError("mpxx: " + who() + " closed the connection during authentication" +
                         (head_got + body_got > 0 ? " (in the middle of a message)" : ""));
      }
      if (head_got < 4) {
        head_got += static_cast<std::size_t>(r);
        if (head_got < 4) continue;
        std::uint32_t n = (std::uint32_t{head[0]} << 24) | (std::uint32_t{head[1]} << 16) |
                          (std::uint32_t{head[2]} << 8) | head[3];
        if (n > kMaxHandshakeMessage)  // also CPython's -1 (a length of 8 bytes to follow)
          throw OSError(EMSGSIZE, "mpxx: bad message length " + std::to_string(n) + " from " + who() +
                                      " during authentication (at most " + std::to_string(kMaxHandshakeMessage) +
                                      "); connection closed");
        body.assign(n, '\0');
        body_got = 0;
      } else {
        body_got += static_cast<std::size_t>(r);
      }
      if (body_got == body.size()) {
        head_got = 0;
        return std::exchange(body, {});
      }
    }
  }

  // Takes the handshake as far as what has arrived allows; true once the
  // peer is authenticated (both ways, as CPython's Listener does).
  bool advance(const std::string& authkey) {
    while (std::optional<std::string> m = read_some()) {
      switch (step) {
        case Step::their_answer:
          if (!verify(authkey, challenge, *m)) {
            try {
              send(kFailure);
            } catch (const Error&) {
            }
            throw AuthenticationError("mpxx: digest received was wrong (from " + who() + ")");
          }
          send(kWelcome);
          step = Step::their_challenge;
          break;
        case Step::their_challenge:
          if (m->compare(0, kChallenge.size(), kChallenge) != 0)
            throw AuthenticationError("mpxx: protocol error: expected a challenge from " + who() + ", got " +
                                      std::to_string(m->size()) + " other bytes");
          send(create_response(authkey, m->substr(kChallenge.size())));
          step = Step::their_welcome;
          break;
        case Step::their_welcome:
          if (*m != kWelcome)
            throw AuthenticationError("mpxx: " + who() + " rejected our digest (wrong authkey?)");
          return true;
      }
    }
    return false;
  }
};

Address peer_address(const Address& listening, const sockaddr_storage& ss, socklen_t len) {
  if (listening.is_unix()) return Address::unix_socket(listening.host);
  char host[NI_MAXHOST] = {0}, port[NI_MAXSERV] = {0};
  ::getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
  return Address::tcp(host, std::atoi(port));
}

// The connection a handshake has finished with, blocking again as a
// Connection expects.
Connection adopt(sys::UniqueFd fd) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return Connection(fd.release(), true, true, false);
}

// A path starting with '@' names a socket in Linux's abstract namespace:
// no file to clean up, gone with the last descriptor.
struct UnixAddr {
  sockaddr_un a{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&a); }
};
UnixAddr unix_addr(const std::string& path) {
  UnixAddr u;
  u.a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof u.a.sun_path)
    throw ValueError("mpxx: invalid Unix socket path '" + path + "'");
  std::memcpy(u.a.sun_path, path.c_str(), path.size() + 1);
  u.len = sizeof u.a;
  if (path[0] == '@') {
    u.a.sun_path[0] = '\0';
    u.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  }
  return u;
}

struct AddrInfo {
  addrinfo* ai = nullptr;
  ~AddrInfo() {
    if (ai) ::freeaddrinfo(ai);
  }
};

AddrInfo resolve(const Address& a, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  AddrInfo r;
  std::string port = std::to_string(a.port);
  int err = ::getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &r.ai);
  if (err == EAI_SYSTEM) sys::throw_errno("cannot resolve " + a.to_string());
  if (err != 0)
    throw OSError(EINVAL, "mpxx: cannot resolve " + a.to_string() + ": " + ::gai_strerror(err));
  return r;
}

}  // namespace

void client_handshake(Connection& c, const std::string& authkey, std::chrono::milliseconds timeout) {
  handshake(c, timeout, [&] {
    answer_challenge(c, authkey);
    deliver_challenge(c, authkey);
  });
}

bool advance_server_handshake(int fd, const std::string& authkey, const std::string& challenge) {
  PendingPeer p;
  p.fd = sys::UniqueFd(fd);
  p.peer = Address::unix_socket("@handshake");
  p.challenge = challenge;
  return p.advance(authkey);
}

}  // namespace detail

std::string Address::to_string() const {
  return is_unix() ? host : host + ":" + std::to_string(port);
}

struct Listener::State {
  sys::UniqueFd fd;  // non-blocking
  Address address;
  std::optional<std::string> authkey;
  std::optional<Address> last;
  std::chrono::milliseconds timeout{5000};
  std::deque<detail::PendingPeer> pending;  // oldest first

  std::optional<Connection> accept(std::span<const int> wake);
  std::optional<Connection> take_new();
};

Listener::Listener(Address address, std::optional<std::string> authkey, int backlog)
    : st_(std::make_unique<State>()) {
  st_->authkey = std::move(authkey);
  if (address.is_unix()) {
    auto a = detail::unix_addr(address.host);
    st_->fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!st_->fd) sys::throw_errno("cannot listen on " + address.host + ": socket");
    if (::bind(st_->fd.get(), a.get(), a.len) < 0)
      sys::throw_errno("cannot listen on " + address.host);
    // Only this user may connect; nobody can before listen(), so there
    // is no moment when the file is open to others.
    if (address.host[0] != '@' && ::chmod(address.host.c_str(), 0600) < 0) {
      int err = errno;
      ::unlink(address.host.c_str());
      sys::throw_errno(err, "cannot make " + address.host + " private (chmod 0600)");
    }
  } else {
    // No host: the loopback interface, not every interface (CPython's
    // '') - a Listener reachable from other hosts must be asked for.
    if (address.host.empty()) address.host = "127.0.0.1";
    auto ai = detail::resolve(address, true);
    int last_err = 0;
    for (addrinfo* p = ai.ai; p; p = p->ai_next) {
      sys::UniqueFd fd(::socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, p->ai_protocol));
      if (!fd) {
        last_err = errno;
        continue;
      }
      int one = 1;
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd.get(), p->ai_addr, p->ai_addrlen) == 0) {
        st_->fd = std::move(fd);
        break;
      }
      last_err = errno;
    }
    if (!st_->fd) sys::throw_errno(last_err ? last_err : EADDRNOTAVAIL, "cannot listen on " + address.to_string());
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(st_->fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    address.port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  if (::listen(st_->fd.get(), backlog < 1 ? 1 : backlog) < 0) sys::throw_errno("listen");
  st_->address = std::move(address);
}

Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&&) noexcept = default;
Listener::~Listener() { close(); }

// Takes up to kAcceptBatch connections from the backlog: the first one
// when there is no authkey; with one, each starts its handshake among the
// pending ones (pushing out the oldest when there are kMaxPending).
std::optional<Connection> Listener::State::take_new() {
  for (int i = 0; i < detail::kAcceptBatch; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = sys::retry([&] {
      return ::accept4(this->fd.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    });
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED) return std::nullopt;
      if ((err == EMFILE || err == ENFILE) && !pending.empty()) {
        pending.pop_front();  // out of descriptors: the longest waiting gives its one up
        continue;
      }
      sys::throw_errno(err, "accept on " + address.to_string());
    }
    sys::UniqueFd conn(fd);
    Address peer = detail::peer_address(address, ss, len);
    if (!authkey) {
      last = std::move(peer);
      return detail::adopt(std::move(conn));
    }
    if (pending.size() >= detail::kMaxPending) pending.pop_front();
    detail::PendingPeer p;
    p.fd = std::move(conn);
    p.peer = std::move(peer);
    p.deadline = std::chrono::steady_clock::now() + timeout;
    std::string random(40, '\0');
    if (::getentropy(random.data(), random.size()) != 0) sys::throw_errno("getentropy");
    p.challenge = "{sha256}" + random;
    p.send(detail::kChallenge + p.challenge);  // OSError if it has gone already: raised for it
    pending.push_back(std::move(p));
  }
  return std::nullopt;
}

// Waits for the next connection that passes its handshake; raises the
// error of one that fails it (it is closed, the others go on); nullopt as
// soon as one of `wake` is readable.
std::optional<Connection> Listener::State::accept(std::span<const int> wake) {
  std::vector<int> fds;
  for (;;) {
    if (!fd) throw OSError(EBADF, "mpxx: listener is closed");
    auto now = std::chrono::steady_clock::now();
    auto first = std::chrono::steady_clock::time_point::max();
    for (std::size_t i = 0; i < pending.size(); ++i) {
      if (pending[i].deadline <= now) {
        std::string who = pending[i].who();
        pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
        throw TimeoutError("mpxx: " + who + " did not complete authentication within " +
                           std::to_string(timeout.count()) + " ms (stalled); connection closed");
      }
      first = std::min(first, pending[i].deadline);
    }
    fds.assign({fd.get()});
    fds.insert(fds.end(), wake.begin(), wake.end());
    for (const auto& p : pending) fds.push_back(p.fd.get());
    auto deadline = first == std::chrono::steady_clock::time_point::max()
                        ? sys::Deadline::never()
                        : sys::Deadline::after(first - now);
    bool new_ones = false;
    for (std::size_t i : sys::wait_any(fds, deadline)) {
      if (i == 0) {
        new_ones = true;
      } else if (i <= wake.size()) {
        return std::nullopt;
      } else {
        // Those already in their handshake first: a flood of new
        // connections does not hold up a client about to be served.
        auto at = pending.begin() + static_cast<std::ptrdiff_t>(i - 1 - wake.size());
        bool done;
        try {
          done = at->advance(*authkey);
        } catch (...) {
          pending.erase(at);
          throw;
        }
        if (done) {
          last = at->peer;
          sys::UniqueFd conn = std::move(at->fd);
          pending.erase(at);
          return detail::adopt(std::move(conn));
        }
      }
    }
    if (new_ones)
      if (auto c = take_new()) return c;
  }
}

Connection Listener::accept() {
  if (!st_) throw OSError(EBADF, "mpxx: listener is closed");
  return *st_->accept({});
}

std::optional<Connection> detail::ListenerAccess::accept_or_wake(Listener& l, std::span<const int> wake) {
  if (!l.st_) throw OSError(EBADF, "mpxx: listener is closed");
  return l.st_->accept(wake);
}

void Listener::close() noexcept {
  if (!st_ || !st_->fd) return;
  st_->fd.reset();
  st_->pending.clear();
  if (st_->address.is_unix() && st_->address.host[0] != '@') ::unlink(st_->address.host.c_str());
}

const Address& Listener::address() const noexcept { return st_->address; }
const std::optional<Address>& Listener::last_accepted() const noexcept { return st_->last; }
void Listener::set_handshake_timeout(std::chrono::milliseconds t) noexcept { st_->timeout = t; }
int Listener::fileno() const noexcept { return st_ && st_->fd ? st_->fd.get() : -1; }

Connection Client(const Address& address, std::optional<std::string> authkey) {
  sys::UniqueFd fd;
  if (address.is_unix()) {
    auto a = detail::unix_addr(address.host);
    fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) sys::throw_errno("cannot connect to " + address.host + ": socket");
    if (sys::retry([&] { return ::connect(fd.get(), a.get(), a.len); }) < 0)
      sys::throw_errno("cannot connect to " + address.host);
  } else {
    auto ai = detail::resolve(address, false);
    int last_err = ECONNREFUSED;
    for (addrinfo* p = ai.ai; p && !fd; p = p->ai_next) {
      sys::UniqueFd s(::socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol));
      if (!s) {
        last_err = errno;
        continue;
      }
      if (::connect(s.get(), p->ai_addr, p->ai_addrlen) == 0)
        fd = std::move(s);
      else
        last_err = errno;
    }
    if (!fd) sys::throw_errno(last_err, "cannot connect to " + address.to_string());
  }
  Connection c(fd.release(), true, true, false);
  if (authkey) {
    try {
      detail::client_handshake(c, *authkey, std::chrono::milliseconds(5000));
    } catch (const EOFError&) {
      throw EOFError("mpxx: " + address.to_string() +
                     " closed the connection during authentication (a wrong authkey, or too many "
                     "clients authenticating there at once)");
    }
  }
  return c;
}

}  // namespace mpxx
