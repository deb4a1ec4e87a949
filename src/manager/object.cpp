// src/manager/object.cpp - what all the manager server's objects use: blob
// reading and writing, the errors a call raises, the client context's
// bookkeeping, and the default answers of Obj (the request does not apply).
#include "manager/object.hpp"

#include <poll.h>
#include <utility>

#include "mpxx/errors.hpp"

namespace mpxx::detail::mgr {

Blob blob(wire::Reader& r) {
  auto b = get_blob(r);
  return Blob(reinterpret_cast<const char*>(b.data()), b.size());
}
void put(wire::Writer& w, const Blob& b) { put_blob(w, std::as_bytes(std::span(b.data(), b.size()))); }
void put_u8(wire::Writer& w, bool b) { w.pod(static_cast<std::uint8_t>(b)); }

[[noreturn]] void fail(ErrKind k, std::string m) { throw ServerFail{k, std::move(m)}; }

[[noreturn]] void bad_method(Method m, const char* what) {
  throw ProtocolError("mpxx: unknown method " + std::to_string(static_cast<int>(m)) + " for a " + what);
}

void Ctx::hold(const std::shared_ptr<Obj>& o) {
  if (held.size() > 64)
    std::erase_if(held, [](const auto& kv) { return kv.second.expired(); });
  held.emplace(o.get(), o);
}

void Ctx::ensure_acceptor() {
  if (before_block) (*std::exchange(before_block, nullptr))();
}

bool Ctx::peer_gone() const {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

void Obj::call(Ctx&, Method m, wire::Reader&, wire::Writer&) {
  fail(ErrKind::remote, "mpxx: method " + std::to_string(static_cast<int>(m)) + " does not apply here");
}

void Obj::typed(Ctx&, const OpDef& op, wire::Reader&, wire::Writer&) {
  throw ProtocolError(std::string("mpxx: operation '") + op.name + "' does not apply to this object");
}

}  // namespace mpxx::detail::mgr
