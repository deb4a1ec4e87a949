// mpxx/connection.hpp - Pipe and Connection (multiprocessing.connection).
//
//   auto [a, b] = mpxx::Pipe();              // a, b = Pipe()
//   mpxx::Process p(child, b);               // the child gets one end
//   a.send(std::vector<int>{1, 2, 3});       // any value that can cross (task.hpp)
//   auto s = a.recv<std::string>();          // the type is checked, not assumed
//
// A Connection is a handle to one end of a Unix socket pair; copies of a
// handle (and the handle a child receives, under any start method) refer to
// the same end. Messages are framed exactly as CPython frames them (a
// 4-byte big-endian length, or -1 and an 8-byte length for large ones), so
// send_bytes/recv_bytes interoperate with Python peers; send(x) puts an mpxx
// value frame inside such a message, which recv<T>() checks: a message of
// another type, or one sent with send_bytes, is a ProtocolError, not garbage.
// Values that carry file descriptors (Lock, Value, SharedMemory, another
// Connection) pass them along with SCM_RIGHTS. A value over 1 MiB sent with
// send() between the ends of a Pipe() does not go through the socket: the
// receiver reads it straight from the sender's memory (process_vm_readv)
// where it can, and where it may not (a seccomp filter, Yama's ptrace_scope;
// or a Pipe without shared memory) the value streams through a pipe of its
// own, the sender's pages handed over with vmsplice. Either way the receiver
// makes the only copy; as in CPython, such a send returns once the receiver
// has read the value (through the pipe, all but the last pipe-full).
// Connections from a Listener or Client (the peer may be Python) carry it in
// the message, as CPython does.
//
// The other end closed: recv raises EOFError once everything sent has been
// read; send raises OSError (EPIPE). A signal arriving during a blocked recv
// or a long send neither aborts it nor corrupts the stream.
//
// A Pipe() also has a ring in shared memory for each direction: small
// messages between mpxx processes go through it, and a receiver spins on it
// for a few microseconds before it sleeps, so a ping-pong between two busy
// processes makes no system call at all. Sleeping receivers wait on the
// socket, so poll(), mpxx::wait and fileno() keep their meaning; one
// difference with a bare socket: a message a recv() left behind in the ring
// shows in poll() and mpxx::wait, not necessarily in a select() on
// fileno(). As in CPython, one end must not be read by two processes (or
// threads) at the same time; writers may share an end (they take turns on a
// lock that survives a writer's death).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "mpxx/detail/codec.hpp"
#include "mpxx/detail/frame.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"

namespace mpxx {

class Connection;
namespace detail {
struct ConnState;
struct ConnAccess;
struct ListenerAccess;
}

class Connection {
 public:
  Connection() = default;  // not connected; most calls raise OSError ("handle is closed")
  explicit Connection(detail::wire::empty_t) noexcept {}
  // Adopts a connected stream socket (fd), e.g. from a Listener. As in
  // Python, a negative fd, or neither readable nor writable, is a
  // ValueError (and the fd is left open).
  Connection(int fd, bool readable, bool writable, bool mpxx_peer);

  // Sends a value; recv<T>() on the other end receives it.
  template <class T>
  void send(const T& obj) {
    detail::wire::Writer w;
    // A large vector's or string's data goes to the pipe from where it is
    // (send_frame returns only once it has been read). Only for these types,
    // whose encoding runs no user code: a user's save() may encode a
    // temporary that is gone before the message is sent.
    if constexpr (detail::by_reference_ok<T>::value)
      if (streams_large()) w.reference_large_blocks();
    std::size_t at = detail::wire::begin_frame(w, detail::wire::FrameKind::value);
    detail::wire::encode_tagged(w, obj);
    detail::wire::end_frame(w, at);
    send_frame(std::move(w));
  }
  // Receives a value sent with send(); ProtocolError if it is not a T.
  template <class T>
  T recv() {
    detail::wire::Writer payload;
    std::vector<int> fds;
    std::unique_ptr<detail::wire::Source> rest;  // a large value's bytes still in its pipe
    auto bytes = recv_frame(payload, fds, rest);
    detail::wire::Reader r(bytes, rest.get());
    r.set_fds(std::move(fds));
    T v = detail::wire::decode_tagged<T>(r);
    r.expect_done("recv");
    return v;
  }

  // Raw bytes, as Python's send_bytes(buf, offset, size) / recv_bytes().
  void send_bytes(std::span<const std::byte> buf, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt);
  void send_bytes(std::string_view s, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt) {
    send_bytes(std::as_bytes(std::span(s.data(), s.size())), offset, size);
  }
  // The next message; longer than maxlength: OSError, and the connection
  // is closed (its stream can no longer be trusted), as in Python.
  std::string recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);
  // Reads the next message into buf at offset and returns its size; if it
  // does not fit, raises BufferTooShort carrying the whole message.
  std::size_t recv_bytes_into(std::span<std::byte> buf, std::size_t offset = 0);

  // Whether there is something to read (or the other end has closed),
  // waiting up to timeout (zero or negative: no wait).
  bool poll() { return poll_ns(std::chrono::nanoseconds::zero()); }
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return poll_ns(detail::to_nanos(timeout));
  }

  void close() noexcept;
  bool closed() const noexcept;
  bool readable() const noexcept;
  bool writable() const noexcept;
  int fileno() const;

  void save(detail::wire::OutArchive& ar) const;
  void load(detail::wire::InArchive& ar);

 private:
  void send_frame(detail::wire::Writer w);
  bool streams_large() const noexcept;
  // Reads one message that must be an mpxx value frame; returns its payload
  // (for a large value from a Pipe, its start, and in `rest` the rest).
  std::span<const std::byte> recv_frame(detail::wire::Writer& storage, std::vector<int>& fds,
                                        std::unique_ptr<detail::wire::Source>& rest);
  bool poll_ns(std::chrono::nanoseconds timeout);
  friend struct detail::ConnAccess;
  std::shared_ptr<detail::ConnState> st_;
};

struct PipeOptions {
  // Small messages between mpxx processes go through shared memory (see
  // above). Turn it off for a Pipe whose fd is handed to another program
  // (a CPython process, say): it then speaks CPython's framing only.
  bool shared_memory = true;
};

// Python's Pipe(duplex=True): two connected Connections. With
// duplex=false, the first can only receive and the second only send.
std::pair<Connection, Connection> Pipe(bool duplex = true, PipeOptions options = {});

// ------------------------------------------------------- Listener / Client

// Where a Listener listens: a Unix socket path, or a TCP host and port
// (Python's address string or (host, port) tuple).
struct Address {
  std::string host;  // or the socket's path
  int port = -1;     // -1: a Unix socket
  static Address unix_socket(std::string path) { return {std::move(path), -1}; }
  static Address tcp(std::string host, int port) { return {std::move(host), port}; }
  bool is_unix() const noexcept { return port < 0; }
  std::string to_string() const;
  friend bool operator==(const Address&, const Address&) = default;
  template <class A>
  void serialize(A& a) {
    a(host, port);
  }
};

// multiprocessing.connection.Listener. With an authkey, every accepted
// connection must pass CPython's mutual challenge-response (HMAC; CPython
// 3.11's HMAC-MD5 and 3.12's "{sha256}" forms both work, in both
// directions), so a real CPython Client can connect, and the reverse.
// accept() authenticates up to 128 connections at once without blocking
// (a new one beyond that pushes out the one waiting longest), reading at
// most 256 bytes a message before authentication. A client that fails,
// sends garbage or an oversized length, or stalls longer than the
// handshake timeout makes accept() raise (AuthenticationError,
// ProtocolError, OSError, EOFError, TimeoutError) for that one connection;
// the Listener goes on serving others. A TCP address with no host listens
// on 127.0.0.1; a Unix socket's file is made 0600. docs/security.md.
//
//   mpxx::Listener l(mpxx::Address::tcp("127.0.0.1", 0), "secret");
//   mpxx::Connection c = l.accept();          // c.recv_bytes(), c.send(x), ...
//   // elsewhere: auto c = mpxx::Client(address, "secret");
class Listener {
 public:
  explicit Listener(Address address, std::optional<std::string> authkey = std::nullopt,
                    int backlog = 1);
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  ~Listener();

  Connection accept();
  // Stops listening (and removes a Unix socket's file).
  void close() noexcept;
  // The bound address (with the real port when port 0 was asked for).
  const Address& address() const noexcept;
  const std::optional<Address>& last_accepted() const noexcept;
  // How long an accepted peer may take over the handshake (default 5 s).
  void set_handshake_timeout(std::chrono::milliseconds t) noexcept;
  // The listening socket, to poll for a pending connection (-1 if closed).
  int fileno() const noexcept;

 private:
  friend struct detail::ListenerAccess;
  struct State;
  std::unique_ptr<State> st_;
};

// multiprocessing.connection.Client: connects (and authenticates).
Connection Client(const Address& address, std::optional<std::string> authkey = std::nullopt);

// ------------------------------------------------------------------- wait

namespace detail {
// Indexes of the objects that are ready, waiting up to timeout
// (nanoseconds::max(): forever; restarts after signals with the time left).
// fds[i] is each one's fd; conns[i] is non-null for a Connection, whose
// messages can wait in a Pipe's shared memory, where poll() does not look.
std::vector<std::size_t> wait_objects(const std::vector<int>& fds,
                                      const std::vector<const Connection*>& conns,
                                      std::chrono::nanoseconds timeout);
inline int wait_fd(const Connection& c) { return c.fileno(); }
inline int wait_fd(int fd) { return fd; }
template <class P>
  requires requires(const P& p) { p.sentinel(); }
int wait_fd(const P& p) {
  return p.sentinel();
}
template <class... V>
int wait_fd(const std::variant<V...>& v) {
  return std::visit([](const auto& x) { return wait_fd(x); }, v);
}
inline const Connection* as_connection(const Connection& c) { return &c; }
template <class T>
const Connection* as_connection(const T&) {
  return nullptr;
}
template <class... V>
const Connection* as_connection(const std::variant<V...>& v) {
  return std::visit([](const auto& x) { return as_connection(x); }, v);
}
}  // namespace detail

// multiprocessing.connection.wait: waits until at least one object is ready
// and returns those that are, in their order in `objects` (an empty result
// means the timeout expired; a zero or negative one checks once, without
// waiting). A Connection is ready when it has something to
// read or its peer has closed; a process handle (its sentinel) when the
// process has ended; a raw fd when it is readable. Mixed lists work with
// std::variant<Connection, ProcessHandle, int>. (A Queue lives in shared
// memory and has no fd to wait on: use get() with a timeout.)
//
//   for (auto& c : mpxx::wait(readers, 1s)) handle(c.recv<std::string>());
template <class T>
std::vector<T> wait(const std::vector<T>& objects) {
  return wait(objects, std::chrono::nanoseconds::max());
}
template <class T, class Rep, class Period>
std::vector<T> wait(const std::vector<T>& objects, std::chrono::duration<Rep, Period> timeout) {
  std::vector<int> fds;
  std::vector<const Connection*> conns;
  fds.reserve(objects.size());
  conns.reserve(objects.size());
  for (const T& o : objects) {
    fds.push_back(detail::wait_fd(o));
    conns.push_back(detail::as_connection(o));
  }
  std::vector<T> ready;
  for (std::size_t i : detail::wait_objects(fds, conns, detail::to_nanos(timeout))) ready.push_back(objects[i]);
  return ready;
}

}  // namespace mpxx
