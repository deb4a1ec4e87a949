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
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

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

void server_handshake(Connection& c, const std::string& authkey, std::chrono::milliseconds timeout) {
  handshake(c, timeout, [&] {
    deliver_challenge(c, authkey);
    answer_challenge(c, authkey);
  });
}

}  // namespace detail

std::string Address::to_string() const {
  return is_unix() ? host : host + ":" + std::to_string(port);
}

struct Listener::State {
  sys::UniqueFd fd;
  Address address;
  std::optional<std::string> authkey;
  std::optional<Address> last;
  std::chrono::milliseconds timeout{5000};
};

Listener::Listener(Address address, std::optional<std::string> authkey, int backlog)
    : st_(std::make_unique<State>()) {
  st_->authkey = std::move(authkey);
  if (address.is_unix()) {
    auto a = detail::unix_addr(address.host);
    st_->fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!st_->fd) sys::throw_errno("cannot listen on " + address.host + ": socket");
    if (::bind(st_->fd.get(), a.get(), a.len) < 0)
      sys::throw_errno("cannot listen on " + address.host);
  } else {
    auto ai = detail::resolve(address, true);
    int last_err = 0;
    for (addrinfo* p = ai.ai; p; p = p->ai_next) {
      sys::UniqueFd fd(::socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol));
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

Connection Listener::accept() {
  if (!st_ || !st_->fd) throw OSError(EBADF, "mpxx: listener is closed");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int fd = sys::retry([&] {
    return ::accept4(st_->fd.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
  });
  if (fd < 0) sys::throw_errno("accept");
  Connection c(fd, true, true, false);
  if (st_->address.is_unix()) {
    st_->last = Address::unix_socket(st_->address.host);
  } else {
    char host[NI_MAXHOST] = {0}, port[NI_MAXSERV] = {0};
    ::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    st_->last = Address::tcp(host, std::atoi(port));
  }
  if (st_->authkey) {
    const std::string& key = *st_->authkey;
    detail::handshake(c, st_->timeout, [&] {
      detail::deliver_challenge(c, key);
      detail::answer_challenge(c, key);
    });
  }
  return c;
}

void Listener::close() noexcept {
  if (!st_ || !st_->fd) return;
  st_->fd.reset();
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
    const std::string& key = *authkey;
    detail::handshake(c, std::chrono::milliseconds(5000), [&] {
      detail::answer_challenge(c, key);
      detail::deliver_challenge(c, key);
    });
  }
  return c;
}

}  // namespace mpxx
