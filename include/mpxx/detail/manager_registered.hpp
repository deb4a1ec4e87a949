// mpxx/detail/manager_registered.hpp - Proxy<T>, the proxy to an object of
// a type registered with BaseManager::register_type. Internal: users
// include mpxx/managers.hpp.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include "mpxx/detail/manager_proxy.hpp"

namespace mpxx {

// A proxy to an object of a type registered with BaseManager::register_type.
//   auto c = m.create<Counter>("Counter", 10);
//   int n = c.call<&Counter::add>(5);
// Each call runs the method on the server; with the registration's default
// {.serialize_calls = true} calls to one object never overlap. An exception
// the method throws arrives as RemoteError.
template <class T>
class Proxy : public detail::mgr::ProxyBase {
 public:
  Proxy() noexcept : ProxyBase(detail::mgr::Kind::user) {}
  explicit Proxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::user, std::move(r)) {}

  template <auto Method, class... A>
  auto call(A&&... args) const {
    using Op = detail::mgr::CallMethod<Method>;
    static_assert(std::is_same_v<typename Op::T, T>, "mpxx: call<&X::method>: X is not this proxy's type");
    using R = std::decay_t<typename Op::R>;
    auto r = this->typed(Op::id, [&](auto& w) {
      detail::wire::encode(w, typename Op::Args(std::forward<A>(args)...));
    });
    if constexpr (!std::is_void_v<R>) {
      auto rd = detail::mgr::reader(r);
      return detail::mgr::take_value<R>(rd);
    }
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    if (t.kind != detail::mgr::Kind::user || t.type_tag != detail::wire::type_tag<T>())
      throw ProtocolError("mpxx: a proxy to another type arrived, not " + detail::wire::type_name<T>());
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }
};

}  // namespace mpxx
