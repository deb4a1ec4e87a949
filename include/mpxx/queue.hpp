// mpxx/queue.hpp - Queue, SimpleQueue, JoinableQueue.
//
//   mpxx::Queue<std::string> q(5);               // Queue(maxsize=5)
//   mpxx::Process p(producer, q);                 // any start method
//   q.put("item");                                // blocks while 5 items wait (Full after a timeout)
//   std::string s = q.get(std::chrono::seconds(1));  // Empty after the timeout
//
// A queue is a ring of bytes in shared memory (a sparse memfd: pages exist
// only while messages occupy them), shared by every handle in every
// process. put() encodes the value synchronously, in the caller: a value
// that cannot be encoded raises there and takes no slot, and there is no
// feeder thread, so joining a process that put items nobody has read yet
// never deadlocks (CPython's does). Producers serialize on one robust lock
// and consumers on another; items are FIFO.
//
// When a process dies: a producer killed in the middle of a put never
// makes a partial message visible (a message becomes visible only when it
// is complete), and the next producer takes the lock over within ~50 ms. A
// consumer killed in the middle of a get leaves the message in the queue
// for the next consumer. Values that carry file descriptors (locks, shared
// values, connections) cannot go through a queue, as in Python: pass them
// to the Process, or send them over a Pipe.
//
// Capacity: one message may be up to half the ring (512 MiB by default);
// maxsize bounds the number of items, as in Python.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "mpxx/detail/codec.hpp"
#include "mpxx/detail/timeout.hpp"
#include "mpxx/errors.hpp"

namespace mpxx {

namespace detail {
struct QueueShared;

// The type-independent queue: a shared ring of byte messages.
class QueueCore {
 public:
  QueueCore(std::int64_t maxsize, bool joinable, std::uint64_t capacity);
  explicit QueueCore(wire::empty_t) noexcept {}

  // Copies one message in; false on timeout (Full). nanoseconds::max():
  // wait forever; zero: do not wait.
  bool put(std::span<const std::byte> message, std::chrono::nanoseconds timeout);
  // The same for a Writer's bytes and the blocks it references.
  bool put(const wire::Writer& message, std::chrono::nanoseconds timeout);
  // Hands the next message to `consume` (in place, under the consumer lock)
  // and removes it once consume returns; false on timeout (Empty).
  bool get(const std::function<void(std::span<const std::byte>)>& consume,
           std::chrono::nanoseconds timeout);
  // The same, but a message of kStreamedMin bytes or more comes as an empty
  // span and a Source that reads it from the shared memory on demand, so
  // that a decoder copies it once, straight into its destination. A read
  // that fails raises like a failed decode: the message is consumed.
  static constexpr std::size_t kStreamedMin = std::size_t{1} << 20;
  bool get_streamed(const std::function<void(std::span<const std::byte>, wire::Source*)>& consume,
                    std::chrono::nanoseconds timeout);
  // Waits, without taking the consumer lock, until a message may be there
  // or `also()` holds (checked whenever the waiter wakes, so whoever makes
  // it true must then put a message); false on timeout.
  bool wait_readable(std::chrono::nanoseconds timeout, const std::function<bool()>& also) const;

  std::int64_t qsize() const noexcept;
  std::int64_t maxsize() const noexcept;
  void close() noexcept;  // this process will put no more
  bool closed() const noexcept;

  void task_done();
  bool join(std::chrono::nanoseconds timeout);

  void save(wire::OutArchive& ar) const;
  void load(wire::InArchive& ar);

 private:
  using StreamedConsume = std::function<void(std::span<const std::byte>, wire::Source*)>;
  // `handover`: put's message, if it may be handed straight to a waiting
  // consumer; get's consume for such a message, if this consumer takes
  // them (see src/queue/handover.hpp).
  template <class Copy>
  bool put_impl(std::size_t size, const Copy& copy, std::chrono::nanoseconds timeout,
                const wire::Writer* handover = nullptr);
  template <class Consume>
  bool get_impl(const Consume& consume, std::chrono::nanoseconds timeout,
                const StreamedConsume* handover = nullptr);
  std::shared_ptr<QueueShared> sh_;
  std::shared_ptr<bool> closed_;
  friend std::size_t fuzz_queue_ring(std::span<const std::byte> input);
};

// For the fuzzer: gets (up to 64 messages) from a new queue whose positions
// and ring are the bytes in `input` ([u64 head][u64 tail][ring]), as from a
// queue another process wrote; returns how many it got.
std::size_t fuzz_queue_ring(std::span<const std::byte> input);

inline std::chrono::nanoseconds queue_timeout(bool block) {
  return block ? std::chrono::nanoseconds::max() : std::chrono::nanoseconds::zero();
}
template <class Rep, class Period>
std::chrono::nanoseconds queue_timeout(std::chrono::duration<Rep, Period> d) {
  return to_nanos(d);
}
}  // namespace detail

template <class T>
class Queue {
 public:
  static constexpr std::uint64_t kDefaultCapacity = std::uint64_t{1} << 30;

  // maxsize <= 0: unbounded (as Python).
  explicit Queue(std::int64_t maxsize = 0) : core_(maxsize, false, kDefaultCapacity) {}
  explicit Queue(detail::wire::empty_t e) noexcept : core_(e) {}

  // put(x), put(x, false) = put_nowait, put(x, timeout): Full when there is
  // no room in time.
  void put(const T& v, bool block = true) { put_ns(v, detail::queue_timeout(block)); }
  template <class Rep, class Period>
  void put(const T& v, std::chrono::duration<Rep, Period> timeout) {
    put_ns(v, detail::queue_timeout(timeout));
  }
  void put_nowait(const T& v) { put(v, false); }

  // get(), get(false) = get_nowait, get(timeout): Empty when nothing came.
  T get(bool block = true) { return get_ns(detail::queue_timeout(block)); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_ns(detail::queue_timeout(timeout));
  }
  T get_nowait() { return get(false); }

  // Approximate, as in Python: other processes may change it at any time.
  std::int64_t qsize() const noexcept { return core_.qsize(); }
  bool empty() const noexcept { return qsize() == 0; }
  bool full() const noexcept { return core_.maxsize() > 0 && qsize() >= core_.maxsize(); }
  // This process will put and get no more (both raise ValueError, as in
  // Python); other processes still can.
  void close() noexcept { core_.close(); }

  void save(detail::wire::OutArchive& ar) const { core_.save(ar); }
  void load(detail::wire::InArchive& ar) { core_.load(ar); }

 protected:
  Queue(std::int64_t maxsize, bool joinable) : core_(maxsize, joinable, kDefaultCapacity) {}

  void put_ns(const T& v, std::chrono::nanoseconds timeout) {
    thread_local detail::wire::Writer w;  // reused: no allocation per put
    w.clear();
    // A large vector's or string's data goes into the queue from where it
    // is (put returns only once it is in).
    if constexpr (detail::by_reference_ok<T>::value) w.reference_large_blocks();
    detail::wire::encode_tagged(w, v);  // in the caller: a failure takes no slot
    // A large message's buffer is not kept for the next put.
    struct Trim {
      detail::wire::Writer& w;
      ~Trim() {
        if (w.size() > (std::size_t{1} << 20)) w = detail::wire::Writer{};
      }
    } trim{w};
    if (!w.fds().empty())
      throw ValueError(
          "mpxx: this value carries file descriptors (a lock, a shared value, a connection...) "
          "and cannot go through a Queue; pass it to the Process as an argument or send it "
          "over a Pipe");
    if (!core_.put(w, timeout)) throw Full();
  }

  T get_ns(std::chrono::nanoseconds timeout) {
    std::optional<T> out;
    bool got = core_.get_streamed(
        [&](std::span<const std::byte> bytes, detail::wire::Source* rest) {
          detail::wire::Reader r(bytes, rest);
          out.emplace(detail::wire::decode_tagged<T>(r));
          r.expect_done("Queue::get");
        },
        timeout);
    if (!got) throw Empty();
    return std::move(*out);
  }

  detail::QueueCore core_;

 private:
  template <class>
  friend class SimpleQueue;
};

// multiprocessing.SimpleQueue: unbounded, get/put/empty/close. After this
// process's close(), put, get and empty raise OSError (EBADF), as Python's
// do once their pipe is closed.
template <class T>
class SimpleQueue {
 public:
  SimpleQueue() = default;
  explicit SimpleQueue(detail::wire::empty_t e) noexcept : q_(e) {}
  void put(const T& v) {
    check_open("put");
    q_.put(v);
  }
  T get() {
    check_open("get");
    return q_.get();
  }
  bool empty() const {
    check_open("empty");
    return q_.empty();
  }
  void close() noexcept { q_.close(); }
  void save(detail::wire::OutArchive& ar) const { q_.save(ar); }
  void load(detail::wire::InArchive& ar) { q_.load(ar); }

 private:
  void check_open(const char* call) const {
    if (q_.core_.closed())
      throw OSError(EBADF, std::string("mpxx: SimpleQueue.") + call + "(): handle is closed (this process called close())");
  }
  Queue<T> q_;
};

// multiprocessing.JoinableQueue: a Queue whose join() waits until every
// item put has been matched by a task_done() (ValueError when called more
// often than items were put).
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(std::int64_t maxsize = 0) : Queue<T>(maxsize, true) {}
  explicit JoinableQueue(detail::wire::empty_t e) noexcept : Queue<T>(e) {}
  void task_done() { this->core_.task_done(); }
  void join() { this->core_.join(std::chrono::nanoseconds::max()); }
  // True if every item was done within the timeout.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->core_.join(detail::queue_timeout(timeout));
  }
};

}  // namespace mpxx
