// src/manager/queue_object.cpp - the manager server's Queue and
// JoinableQueue: a deque of blobs with an optional bound, whose put, get
// and join wait through Ctx::wait (Full/Empty on a timeout).
#include <deque>
#include <mutex>

#include "manager/object.hpp"

namespace mpxx::detail::mgr {

namespace {

struct QueueObj : Obj {
  std::mutex mu;
  std::condition_variable not_empty, not_full, all_done;
  std::deque<Blob> items;
  std::int64_t maxsize, unfinished = 0;
  QueueObj(Kind k, std::int64_t max) : Obj(k), maxsize(max) {}
  ~QueueObj() override {
    for (const Blob& b : items) release(b);
  }

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::unique_lock lk(mu);
    switch (m) {
      case Method::q_put: {
        Blob v = blob(in);
        auto t = in.pod<std::int64_t>();
        auto room = [&] { return maxsize <= 0 || static_cast<std::int64_t>(items.size()) < maxsize; };
        if (!ctx.wait(lk, not_full, t, room)) fail(ErrKind::full, "queue is full");
        keep({&v});
        items.push_back(std::move(v));
        ++unfinished;
        not_empty.notify_one();
        return;
      }
      case Method::q_get: {
        auto t = in.pod<std::int64_t>();
        if (!ctx.wait(lk, not_empty, t, [&] { return !items.empty(); })) fail(ErrKind::empty, "queue is empty");
        put(out, items.front());
        Blob v = std::move(items.front());
        items.pop_front();
        ctx.hand_over(std::move(v));
        not_full.notify_one();
        return;
      }
      case Method::q_qsize:
        out.pod(static_cast<std::int64_t>(items.size()));
        out.pod(maxsize);
        return;
      case Method::q_task_done:
        if (kind != Kind::joinable_queue) bad_method(m, "Queue");
        if (unfinished <= 0) fail(ErrKind::value, "task_done() called too many times");
        if (--unfinished == 0) all_done.notify_all();
        return;
      case Method::q_join:
        if (kind != Kind::joinable_queue) bad_method(m, "Queue");
        put_u8(out, ctx.wait(lk, all_done, in.pod<std::int64_t>(), [&] { return unfinished == 0; }));
        return;
      default: bad_method(m, "Queue");
    }
  }
};

}  // namespace

std::shared_ptr<Obj> make_queue(Kind queue_or_joinable, wire::Reader& in) {
  return std::make_shared<QueueObj>(queue_or_joinable, in.pod<std::int64_t>());
}

}  // namespace mpxx::detail::mgr
