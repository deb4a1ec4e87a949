// mpxx/detail/manager_proxy.hpp - what every manager proxy is built on:
// ProxyBase (a shared reference to one server object, and its round trips)
// and ItemRef (c[key] read and written through the server). Internal: users
// include mpxx/managers.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "mpxx/connection.hpp"
#include "mpxx/detail/manager_core.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"

namespace mpxx::detail::mgr {

inline std::chrono::nanoseconds ns_of(bool block) { return block ? kForever : nanos::zero(); }
template <class Rep, class Period>
std::chrono::nanoseconds ns_of(std::chrono::duration<Rep, Period> d) {
  return to_nanos(d);  // the sync primitives' rule: <= 0 no wait, a century or more forever
}

inline wire::Reader reader(const std::string& s) {
  return wire::Reader(std::as_bytes(std::span(s.data(), s.size())));
}

// What every proxy is: a shared reference to one server object.
class ProxyBase {
 public:
  // The object's id on its server, and the server's address.
  std::uint64_t id() const { return ref().token.id; }
  Address address() const { return ref().token.address(); }
  explicit operator bool() const noexcept { return ref_ != nullptr; }
  Kind kind() const noexcept { return kind_; }
  friend bool operator==(const ProxyBase& a, const ProxyBase& b) noexcept {
    return a.ref_ && b.ref_ && a.ref_->token.id == b.ref_->token.id &&
           a.ref_->token.host == b.ref_->token.host && a.ref_->token.port == b.ref_->token.port;
  }

  void save(wire::OutArchive& ar) const {
    note_encoded_proxy(ref().token);
    ar(ref().token);
  }
  void load(wire::InArchive& ar) {
    Token t;
    ar(t);
    if (t.kind != kind_) throw ProtocolError("mpxx: a proxy of another kind arrived");
    ref_ = std::make_shared<Ref>(std::move(t), true);
  }

 protected:
  explicit ProxyBase(Kind kind) noexcept : kind_(kind) {}
  ProxyBase(Kind kind, std::shared_ptr<Ref> ref) noexcept : ref_(std::move(ref)), kind_(kind) {}

  const Ref& ref() const;
  const Token& token() const { return ref().token; }

  // One call: [call][id][method][what fill writes] -> the result bytes.
  template <class Fill>
  std::string call(Method m, Fill&& fill) const {
    wire::Writer w;
    begin(w, Op::call, id());
    w.pod(m);
    {
      RequestTo to(token());
      fill(w);
    }
    return transact(token(), w);
  }
  std::string call(Method m) const {
    return call(m, [](wire::Writer&) {});
  }
  template <class Fill>
  std::string typed(std::uint64_t op, Fill&& fill) const {
    wire::Writer w;
    begin(w, Op::typed, id());
    w.pod(op);
    {
      RequestTo to(token());
      fill(w);
    }
    return transact(token(), w);
  }
  bool call_bool(Method m, std::int64_t arg) const {
    auto r = call(m, [&](wire::Writer& w) { w.pod(arg); });
    auto rd = reader(r);
    return rd.pod<std::uint8_t>() != 0;
  }
  std::int64_t call_int(Method m) const {
    auto r = call(m);
    auto rd = reader(r);
    return rd.pod<std::int64_t>();
  }

  std::shared_ptr<Ref> ref_;
  Kind kind_;
};

// c[key] (a dict item, a list or array element) read and written through
// the server: each use is one round trip, and a compound assignment is two
// (read, then write), so not atomic, as in Python.
template <class C, class K, class V>
class ItemRef {
 public:
  ItemRef(C* c, K k) : c_(c), k_(std::move(k)) {}
  operator V() const { return c_->at(k_); }
  V get() const { return c_->at(k_); }
  ItemRef& operator=(const V& v) {
    c_->set(k_, v);
    return *this;
  }
  ItemRef& operator=(const ItemRef& o) { return *this = o.get(); }
  template <class X>
  ItemRef& operator+=(const X& x) { return *this = static_cast<V>(get() + x); }
  template <class X>
  ItemRef& operator-=(const X& x) { return *this = static_cast<V>(get() - x); }
  template <class X>
  ItemRef& operator*=(const X& x) { return *this = static_cast<V>(get() * x); }
  template <class X>
  ItemRef& operator/=(const X& x) { return *this = static_cast<V>(get() / x); }

 private:
  C* c_;
  K k_;
};

}  // namespace mpxx::detail::mgr
