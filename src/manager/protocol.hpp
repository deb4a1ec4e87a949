// src/manager/protocol.hpp - what the manager's client, server and
// BaseManager share. Internal.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mpxx/managers.hpp"

namespace mpxx::detail::mgr {

// This process shut the server at `a` down (dead) or started/connected to
// one there again: decides whether dropped proxies report back.
void mark_server_dead(const Address& a, bool dead);
// Makes `c` (already connected and trusted) the calling thread's
// connection to the server at `a`.
void adopt_connection(const Address& a, const std::string& authkey, Connection c);
// Closes the calling thread's connection to a server, if it has one.
void forget_connection(const Address& a, const std::string& authkey);
// A reply's result bytes ([0][result]), or the error it carries
// ([1][ErrKind][message]...) raised as its mpxx type.
std::string open_reply(std::string reply);

// What a server process is started with.
struct ServerConfig {
  std::string host;
  int port = -1;
  std::string authkey;
  std::vector<Registration> types;
  pid_t parent = 0;  // the server ends with this process (0: no such watch)
  template <class A>
  void serialize(A& a) {
    a(host, port, authkey, types, parent);
  }
};

// Binds the listening socket (raises OSError if the address is taken).
std::shared_ptr<ServerState> make_server(const ServerConfig& cfg);
// The bound address (the real port when 0 was asked for).
const Address& server_address(const ServerState& s);
// Accepts and serves clients until a shutdown request, then returns.
void serve(const std::shared_ptr<ServerState>& s);
// The body of a server process: serves, on the calling thread, the
// connection handed over by the process that started it (no handshake),
// accepts other clients on another thread, and returns once a client has
// asked for shutdown.
void serve_process(const std::shared_ptr<ServerState>& s, Connection trusted);

// What the server process sends its starter once it listens: the address,
// or why it could not.
struct Ready {
  bool ok = false;
  std::string host_or_error;
  int port = -1;
  int error = 0;
  template <class A>
  void serialize(A& a) {
    a(ok, host_or_error, port, error);
  }
};

}  // namespace mpxx::detail::mgr
