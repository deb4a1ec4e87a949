// mpxx/detail/manager_queues.hpp - the proxies of a manager's queues:
// QueueProxy and JoinableQueueProxy. Internal: users include
// mpxx/managers.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

#include "mpxx/detail/manager_proxy.hpp"

namespace mpxx {

// A queue.Queue on the server: put/get with block and timeout, Full/Empty.
// Unlike mpxx::Queue it lives in the manager, so it can be shared with
// processes that are not children (a remote manager's clients).
template <class T>
class QueueProxy : public detail::mgr::ProxyBase {
  using M = detail::mgr::Method;

 public:
  QueueProxy() noexcept : ProxyBase(detail::mgr::Kind::queue) {}
  explicit QueueProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(detail::mgr::Kind::queue, std::move(r)) {}

  void put(const T& v, bool block = true) { put_ns(v, detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  void put(const T& v, std::chrono::duration<Rep, Period> timeout) {
    put_ns(v, detail::mgr::ns_of(timeout));
  }
  void put_nowait(const T& v) { put(v, false); }
  T get(bool block = true) { return get_ns(detail::mgr::ns_of(block)); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_ns(detail::mgr::ns_of(timeout));
  }
  T get_nowait() { return get(false); }
  std::int64_t qsize() const { return sizes().first; }
  bool empty() const { return qsize() == 0; }
  bool full() const {
    auto [n, max] = sizes();
    return max > 0 && n >= max;
  }

  void load(detail::wire::InArchive& ar) {
    detail::mgr::Token t;
    ar(t);
    if (t.kind != detail::mgr::Kind::queue && t.kind != detail::mgr::Kind::joinable_queue)
      throw ProtocolError("mpxx: a proxy of another kind arrived");
    kind_ = t.kind;
    ref_ = std::make_shared<detail::mgr::Ref>(std::move(t), true);
  }

 protected:
  QueueProxy(detail::mgr::Kind k, std::shared_ptr<detail::mgr::Ref> r) noexcept
      : ProxyBase(k, std::move(r)) {}

 private:
  void put_ns(const T& v, std::chrono::nanoseconds t) {
    call(M::q_put, [&](auto& w) {
      detail::mgr::put_value(w, v);
      w.pod(detail::mgr::wire_timeout(t));
    });
  }
  T get_ns(std::chrono::nanoseconds t) {
    auto r = call(M::q_get, [&](auto& w) { w.pod(detail::mgr::wire_timeout(t)); });
    auto rd = detail::mgr::reader(r);
    return detail::mgr::take_value<T>(rd);
  }
  std::pair<std::int64_t, std::int64_t> sizes() const {
    auto r = call(M::q_qsize);
    auto rd = detail::mgr::reader(r);
    auto n = rd.template pod<std::int64_t>();
    return {n, rd.template pod<std::int64_t>()};
  }
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
  using M = detail::mgr::Method;

 public:
  JoinableQueueProxy() noexcept : QueueProxy<T>(detail::mgr::Kind::joinable_queue, nullptr) {}
  explicit JoinableQueueProxy(std::shared_ptr<detail::mgr::Ref> r) noexcept
      : QueueProxy<T>(detail::mgr::Kind::joinable_queue, std::move(r)) {}
  // ValueError when called more times than items were taken.
  void task_done() { this->call(M::q_task_done); }
  void join() { this->call_bool(M::q_join, -1); }
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->call_bool(M::q_join, detail::mgr::wire_timeout(detail::mgr::ns_of(timeout)));
  }
  void load(detail::wire::InArchive& ar) { detail::mgr::ProxyBase::load(ar); }
};

}  // namespace mpxx
