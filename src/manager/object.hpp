// src/manager/object.hpp - what the manager server's objects share: the Obj
// interface every object kind implements, the client context a request runs
// in (Ctx, with the wait a dropped client or a stopping server abandons),
// the errors a call raises, and one maker per object kind, which server.cpp
// calls for a create request. Values are opaque blobs here (see
// detail/manager_core.hpp); only typed operations decode them. Internal.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mpxx/managers.hpp"

namespace mpxx::detail::mgr {

using Clock = std::chrono::steady_clock;
using Blob = std::string;

Blob blob(wire::Reader& r);
void put(wire::Writer& w, const Blob& b);
void put_u8(wire::Writer& w, bool b);

// Thrown inside a blocking wait when its client has gone away or the server
// is stopping: the call is abandoned without a reply.
struct Abandoned {};

struct ServerFail {
  ErrKind kind;
  std::string message;
};
[[noreturn]] void fail(ErrKind k, std::string m);
[[noreturn]] void bad_method(Method m, const char* what);

struct Obj;

// The server's side of the proxies inside stored values (kHeldIds): a value
// entering an object keeps the objects it names alive, a value leaving it
// lets them go (and frees those it held last).
class Keeper {
 public:
  virtual ~Keeper() = default;
  // A reference on each object `v` names; ValueError, and none taken, if
  // one of them is gone.
  virtual void keep_ids(const Blob& v) = 0;
  virtual void release_ids(const Blob& v) noexcept = 0;
};
inline bool holds_ids(const Blob& v) noexcept {
  std::uint64_t tag = 0;
  if (v.size() >= sizeof tag) std::memcpy(&tag, v.data(), sizeof tag);
  return tag == kHeldIds;
}

// The client connection a request came from.
struct Ctx {
  std::uint64_t client = 0;
  int fd = -1;
  const std::atomic<bool>* stopping = nullptr;
  // Locks this client took, released if it goes.
  std::unordered_map<const Obj*, std::weak_ptr<Obj>> held;
  std::function<void()>* before_block = nullptr;  // run once before a wait sleeps or user code runs
  bool never_block = false;                       // (the fuzzer's server)
  // Values holding ids that left an object in this request's reply (a pop,
  // a get from a queue), and in the previous one. Their references are
  // given back only after the client's next request: the client takes its
  // own reference (an incref on this connection) as it decodes the reply.
  std::vector<Blob> handed_over, handed_before;

  // A value removed from an object and sent to this client.
  void hand_over(Blob&& v) {
    if (holds_ids(v)) handed_over.push_back(std::move(v));
  }
  // After each request, and (twice) when the client leaves.
  void after_request(Keeper& k) noexcept {
    for (const Blob& v : handed_before) k.release_ids(v);
    handed_before = std::move(handed_over);
    handed_over.clear();
  }

  void hold(const std::shared_ptr<Obj>& o);
  void ensure_acceptor();
  bool peer_gone() const;

  // Waits until pred() (true), the timeout (false: -1 none, 0 no wait), the
  // client leaving or the server stopping (Abandoned).
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, std::int64_t timeout,
            Pred pred) {
    if (pred()) return true;
    if (timeout == 0) return false;
    if (never_block) throw Abandoned{};
    if (before_block) {
      lk.unlock();
      ensure_acceptor();
      lk.lock();
      if (pred()) return true;
    }
    // Beyond a century is forever (and a hostile value cannot overflow).
    constexpr std::int64_t kCentury = 100LL * 365 * 24 * 3600 * 1000000000LL;
    auto deadline = timeout < 0 || timeout > kCentury ? Clock::time_point::max()
                                                      : Clock::now() + std::chrono::nanoseconds(timeout);
    for (;;) {
      auto slice = std::min(deadline, Clock::now() + std::chrono::milliseconds(100));
      if (cv.wait_until(lk, slice, pred)) {
        // Woken for a client that has gone: leave what woke it (a unit, an
        // item, the lock) to the next waiter instead of consuming it.
        if (peer_gone()) {
          cv.notify_one();
          throw Abandoned{};
        }
        return true;
      }
      if (Clock::now() >= deadline) return false;
      if (stopping->load() || peer_gone()) throw Abandoned{};
    }
  }
};

// An object the server holds. A kind answers the requests it knows: call()
// for the built-in methods, typed() for the operations registered in the
// program (see OpDef); the others are refused.
struct Obj : std::enable_shared_from_this<Obj> {
  Kind kind;
  std::uint64_t type_tag = 0;
  std::atomic<std::int64_t> refs{1};
  bool pinned = false;  // named: lives as long as the server
  Keeper* keeper = nullptr;  // set by the server once the object is made
  explicit Obj(Kind k) : kind(k) {}
  virtual ~Obj() = default;
  // Keeps what the values about to be stored name: all or none.
  void keep(std::initializer_list<const Blob*> vs) {
    if (!keeper) return;
    std::size_t kept = 0;
    try {
      for (const Blob* v : vs) {
        if (holds_ids(*v)) keeper->keep_ids(*v);
        ++kept;
      }
    } catch (...) {
      for (const Blob* v : vs) {
        if (kept-- == 0) break;
        release(*v);
      }
      throw;
    }
  }
  template <class Range>
  void keep_all(const Range& vs) {
    if (!keeper) return;
    auto it = std::begin(vs);
    try {
      for (; it != std::end(vs); ++it)
        if (holds_ids(*it)) keeper->keep_ids(*it);
    } catch (...) {
      for (auto jt = std::begin(vs); jt != it; ++jt) release(*jt);
      throw;
    }
  }
  void release(const Blob& v) noexcept {
    if (keeper && holds_ids(v)) keeper->release_ids(v);
  }
  // Keeps what the values it was made with name (list, Array, Value).
  virtual void keep_initial() {}
  virtual void call(Ctx&, Method m, wire::Reader&, wire::Writer&);
  virtual void typed(Ctx&, const OpDef& op, wire::Reader&, wire::Writer&);
  // ProtocolError unless the object lets clients call operation `op_id`.
  virtual void check_exposed(std::uint64_t /*op_id*/) const {}
  virtual void client_gone(std::uint64_t) {}
};

// The object kinds, one maker each, reading the create request's arguments
// from `in`.
// containers.cpp
std::shared_ptr<Obj> make_dict();
std::shared_ptr<Obj> make_list(Kind list_or_array, wire::Reader& in);
std::shared_ptr<Obj> make_namespace();
std::shared_ptr<Obj> make_value(wire::Reader& in);
// sync_objects.cpp
std::shared_ptr<Obj> make_lock(bool recursive);
std::shared_ptr<Obj> make_semaphore(Kind semaphore_or_bounded, wire::Reader& in);
// `find` gives the object an id names (the Lock or RLock to use).
std::shared_ptr<Obj> make_condition(wire::Reader& in, const std::function<std::shared_ptr<Obj>(std::uint64_t)>& find);
std::shared_ptr<Obj> make_event();
std::shared_ptr<Obj> make_barrier(wire::Reader& in);
// queue_object.cpp
std::shared_ptr<Obj> make_queue(Kind queue_or_joinable, wire::Reader& in);

// user_object.cpp
// The call mutex of each registered-type object (a factory may hand out one
// object under many ids).
class CallMutexes {
 public:
  std::shared_ptr<std::mutex> of(const void* obj);

 private:
  std::mutex mu_;
  std::unordered_map<const void*, std::weak_ptr<std::mutex>> mutexes_;
};
// An object of the type registered as `reg`, made by its factory.
std::shared_ptr<Obj> make_user(const Registration& reg, wire::Reader& in, CallMutexes& mutexes);

}  // namespace mpxx::detail::mgr
