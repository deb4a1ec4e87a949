// soak/manager.cpp - Manager proxies (dict, list, Queue, Lock, a registered
// type), from children the chaos kills and stops, on a local manager and on
// a remote one over TCP on 127.0.0.1 (the children connect by address and
// key and use named objects).
//
// A killed client's last call may or may not have reached the server; each
// check allows exactly that one call per killed child and nothing else.
#include <signal.h>

#include <memory>

#include "soak.hpp"

namespace soak {
namespace {

struct Counter {
  std::int64_t n = 0;
  std::int64_t add(std::int64_t k) { return n += k; }
  std::int64_t get() const { return n; }
};

std::shared_ptr<Counter> the_counter() {
  static auto c = std::make_shared<Counter>();
  return c;
}

using Dict = mpxx::DictProxy<std::string, std::int64_t>;

// The objects a client uses, by name, so that remote clients find them.
struct Objects {
  Dict d;
  mpxx::ListProxy<std::int64_t> l;
  mpxx::QueueProxy<Msg> q;
  mpxx::AcquirerProxy lock;
  mpxx::Proxy<Counter> counter;
  explicit Objects(mpxx::BaseManager& m, const std::string& tag)
      : d(m.named<Dict>("d" + tag)),
        l(m.named<mpxx::ListProxy<std::int64_t>>("l" + tag)),
        q(m.named<mpxx::QueueProxy<Msg>>("q" + tag)),
        lock(m.named_lock("lock" + tag)),
        counter(m.create<Counter>("Counter")) {}
};

// Per child, how many calls of each kind returned.
enum Done { d_put, d_append, d_fetch_add, d_locked, d_counter, kDone };

void manager_round_impl(Rng& rng, bool remote) {
  const Fig op = remote ? op_remote : op_manager;
  const std::string key = "soak-" + std::to_string(rng.g());
  std::unique_ptr<mpxx::BaseManager> m;
  if (remote)
    m = std::make_unique<mpxx::BaseManager>(mpxx::Address::tcp("127.0.0.1", 0), key);
  else
    m = std::make_unique<mpxx::BaseManager>();
  m->register_type<Counter>("Counter", the_counter);
  m->start();
  const mpxx::Address address = m->address();
  const std::string tag = std::to_string(rng.g());
  const int n = static_cast<int>(rng.between(2, 3));
  const int iterations = static_cast<int>(rng.between(10, 80));
  Objects objs(*m, tag);
  const std::int64_t counter_before = objs.counter.call<&Counter::get>();
  Ledger queue_ledger(n, iterations), list_ledger(n, iterations);
  mpxx::RawArray<std::int64_t> done(static_cast<std::size_t>(n) * kDone);

  std::vector<std::unique_ptr<mpxx::Process>> ps;
  std::vector<VictimGuard> gs;
  for (int c = 0; c < n; ++c) {
    const std::uint64_t seed = rng.g();
    ps.push_back(std::make_unique<mpxx::Process>(child_options("manager-client"), [&, c, seed] {
      child_body(remote ? "remote manager client" : "manager client", [&] {
        Rng r(seed);
        std::unique_ptr<mpxx::BaseManager> conn;
        std::optional<Objects> own;
        if (remote) {  // a client that knows only the address and the key
          conn = std::make_unique<mpxx::BaseManager>(address, key);
          conn->connect();
          own.emplace(*conn, tag);
        }
        Objects& o = remote ? *own : objs;
        auto count = [&](Done k) { std::atomic_ref<std::int64_t>(done[c * kDone + k]).fetch_add(1); };
        for (int s = 0; s < iterations; ++s) {
          o.q.put(make_msg(c, s, msg_len(r, false) % 2048));
          queue_ledger.sent(c, s + 1);
          o.l.append(std::int64_t{c} << 32 | s);
          list_ledger.sent(c, s + 1);
          o.d.fetch_add("c" + std::to_string(c), 1);
          count(d_fetch_add);
          if (timed("AcquirerProxy::acquire", 1s, [&] { return o.lock.acquire(1s); })) {
            o.d["locked"] = o.d.get("locked", 0) + 1;  // two calls: the lock makes them one
            count(d_locked);
            o.lock.release();
          }
          o.counter.call<&Counter::add>(1);
          count(d_counter);
          add(op, 5);
        }
        queue_ledger.finished(c);
        list_ledger.finished(c);
      });
    }));
    ps.back()->start();
    gs.emplace_back(ps.back()->pid(), remote ? "remote manager client" : "manager client");
  }
  int killed = 0;
  for (int c = 0; c < n; ++c) {
    join_checked(*ps[c], gs[c], "manager client");
    killed += ps[c]->exitcode() == -SIGKILL;
  }
  // What arrived: the queue drained, the list read.
  for (;;) {
    try {
      queue_ledger.delivered(timed("QueueProxy::get", 200ms, [&] { return objs.q.get(200ms); }));
    } catch (const mpxx::Empty&) {
      break;
    }
  }
  for (std::int64_t v : objs.l.copy())
    list_ledger.delivered(make_msg(static_cast<std::uint32_t>(v >> 32), static_cast<std::uint32_t>(v & 0xffffffff), 0));
  queue_ledger.check(remote ? "remote manager queue" : "manager queue", 0);
  list_ledger.check(remote ? "remote manager list" : "manager list", 0);
  // Counts: each killed child's last call may have been done unrecorded.
  auto within = [&](const std::string& what, std::int64_t got, std::int64_t recorded) {
    if (got < recorded || got > recorded + killed)
      fail(invariant_broken, std::string(remote ? "remote " : "") + "manager: " + what + " is " + std::to_string(got) +
                                 " but the clients recorded " + std::to_string(recorded) + " (" +
                                 std::to_string(killed) + " killed)");
  };
  std::int64_t locked = 0, counted = 0;
  for (int c = 0; c < n; ++c) {
    const bool dead = ps[c]->exitcode() == -SIGKILL;
    const std::int64_t fa = objs.d.get("c" + std::to_string(c), 0), rec = done[c * kDone + d_fetch_add];
    if (fa < rec || fa > rec + dead)
      fail(invariant_broken, "manager: fetch_add counter of client " + std::to_string(c) + " is " +
                                 std::to_string(fa) + ", recorded " + std::to_string(rec));
    locked += done[c * kDone + d_locked];
    counted += done[c * kDone + d_counter];
  }
  // The lock of a killed holder is released by the server: acquirable now.
  if (!timed("AcquirerProxy::acquire", 5s, [&] { return objs.lock.acquire(5s); }))
    fail(hangs, "manager: a dead client's Lock was not released");
  else
    objs.lock.release();
  within("the locked counter", objs.d.get("locked", 0), locked);
  within("the registered Counter's growth", objs.counter.call<&Counter::get>() - counter_before, counted);
  add(op, 10);
}

void manager_round(Rng& rng, Clock::time_point) { manager_round_impl(rng, false); }
void remote_round(Rng& rng, Clock::time_point) { manager_round_impl(rng, true); }

}  // namespace

std::vector<Workload> manager_workloads() { return {{"manager", manager_round}, {"remote manager", remote_round}}; }

}  // namespace soak
