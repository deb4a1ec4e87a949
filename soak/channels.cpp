// soak/channels.cpp - Pipe, Queue and JoinableQueue traffic with sequence
// ids, and plain Process start/join/terminate.
//
// Producers are children (victims of the chaos); each records in the
// ledger how many of its puts/sends returned, so the checker knows which
// messages must have arrived: all of those, plus the one in flight unless
// its producer was killed. Consumers are children too (Queue) or the
// parent (Pipe: one end may not be read by two processes).
#include <signal.h>

#include <memory>

#include "soak.hpp"

namespace soak {
namespace {

// ------------------------------------------------------------------- Pipe

void pipe_round(Rng& rng, Clock::time_point) {
  const bool shared_memory = rng.chance(0.7);
  // Several writers share an end only with the shared-memory ring: on a
  // Pipe made with {.shared_memory = false} nothing orders the writers, and
  // their pieces interleave (torn messages, a corrupt stream, or a reader
  // and writers all blocked): a known bug, docs/reliability.md.
  const int producers = shared_memory ? static_cast<int>(rng.between(1, 3)) : 1;
  const int per = static_cast<int>(rng.between(10, 120));
  const bool big = rng.chance(0.5);
  Ledger ledger(producers, per);
  auto [rd, wr] = mpxx::Pipe(false, {.shared_memory = shared_memory});
  std::vector<std::unique_ptr<mpxx::Process>> ps;
  std::vector<VictimGuard> guards;
  for (int p = 0; p < producers; ++p) {
    const std::uint64_t seed = rng.g();
    ps.push_back(std::make_unique<mpxx::Process>(child_options("pipe-producer"), [&, p, seed] {
      child_body("pipe producer", [&] {
        Rng r(seed);
        for (int s = 0; s < per; ++s) {
          wr.send(make_msg(p, s, msg_len(r, big)));
          ledger.sent(p, s + 1);
          add(op_pipe_msg);
        }
        ledger.finished(p);
      });
    }));
    ps.back()->start();
    guards.emplace_back(ps.back()->pid(), "pipe producer");
  }
  wr.close();  // our copy: EOF once every producer is gone
  int eofs_in_a_row = 0;
  const auto give_up = Clock::now() + 90s;
  for (;;) {
    if (Clock::now() > give_up) {
      fail(hangs, "pipe: the reader saw no end after 90 s");
      break;
    }
    if (!timed("Connection::poll", 500ms, [&] { return rd.poll(500ms); })) continue;
    try {
      Msg m = rd.recv<Msg>();
      eofs_in_a_row = 0;
      ledger.delivered(m);
    } catch (const mpxx::EOFError&) {
      // Either every writer is gone, or a writer died while its value was
      // being read from its memory (docs/pipes.md): the other writers go on.
      bool alive = false;
      for (auto& p : ps) alive = alive || p->is_alive();
      if (!alive && ++eofs_in_a_row > producers) break;
    } catch (const mpxx::ProtocolError& e) {
      fail(torn, std::string("pipe: recv raised ProtocolError: ") + e.what());
    }
  }
  for (int p = 0; p < producers; ++p) join_checked(*ps[p], guards[p], "pipe producer");
  ledger.check("pipe", 0);
}

// ---------------------------------------------------------- Queue, JoinableQueue

template <bool Joinable>
void queue_round(Rng& rng, Clock::time_point until) {
  using Q = std::conditional_t<Joinable, mpxx::JoinableQueue<Msg>, mpxx::Queue<Msg>>;
  const Fig op = Joinable ? op_jq_msg : op_queue_msg;
  const char* path = Joinable ? "joinable queue" : "queue";
  const int producers = static_cast<int>(rng.between(1, 3));
  const int consumers = static_cast<int>(rng.between(1, 3));
  const int per = static_cast<int>(rng.between(10, 150));
  const bool big = rng.chance(0.5);
  Q q(rng.chance(0.5) ? 0 : rng.between(2, 32));
  Ledger ledger(producers, per);
  mpxx::RawValue<int> stop(0);

  auto take = [&](std::chrono::milliseconds timeout) -> bool {
    try {
      Msg m = timed("Queue::get", timeout, [&] { return q.get(timeout); });
      ledger.delivered(m);
      if constexpr (Joinable) q.task_done();
      add(op);
      return true;
    } catch (const mpxx::Empty&) {
      return false;
    }
  };

  std::vector<std::unique_ptr<mpxx::Process>> prod, cons;
  std::vector<VictimGuard> pg, cg;
  for (int c = 0; c < consumers; ++c) {
    cons.push_back(std::make_unique<mpxx::Process>(child_options("queue-consumer"), [&] {
      child_body("queue consumer", [&] {
        for (;;)
          if (!take(200ms) && std::atomic_ref<int>(stop.value()).load()) return;
      });
    }));
    cons.back()->start();
    cg.emplace_back(cons.back()->pid(), "queue consumer");
  }
  for (int p = 0; p < producers; ++p) {
    const std::uint64_t seed = rng.g();
    prod.push_back(std::make_unique<mpxx::Process>(child_options("queue-producer"), [&, p, seed] {
      child_body("queue producer", [&] {
        Rng r(seed);
        // With every consumer killed, a bounded queue stays full: give up
        // some time after the round's end.
        const auto give_up = until + 5s;
        for (int s = 0; s < per; ++s) {
          const Msg m = make_msg(p, s, msg_len(r, big));
          for (;;) {
            try {
              timed("Queue::put", 1s, [&] { q.put(m, 1s); });
              break;
            } catch (const mpxx::Full&) {
              if (Clock::now() > give_up) {
                ledger.finished(p);
                return;
              }
            }
          }
          ledger.sent(p, s + 1);
        }
        ledger.finished(p);
      });
    }));
    prod.back()->start();
    pg.emplace_back(prod.back()->pid(), "queue producer");
  }
  for (int p = 0; p < producers; ++p) join_checked(*prod[p], pg[p], "queue producer");
  std::atomic_ref<int>(stop.value()).store(1);
  int consumers_killed = 0;
  for (int c = 0; c < consumers; ++c) {
    join_checked(*cons[c], cg[c], "queue consumer");
    consumers_killed += cons[c]->exitcode() == -SIGKILL;
  }
  while (take(200ms)) {
  }
  if constexpr (Joinable) {
    // Every item taken was marked done, except by a consumer killed
    // between its get and its task_done: then join must time out.
    const bool joined = timed("JoinableQueue::join", 1s, [&] { return q.join(1s); });
    if (!joined && consumers_killed == 0)
      fail(invariant_broken, "JoinableQueue::join timed out though every item was marked done");
  }
  ledger.check(path, consumers_killed);
}

// ---------------------------------------------------------------- Process

void process_round(Rng& rng, Clock::time_point) {
  const int n = static_cast<int>(rng.between(2, 6));
  mpxx::Event go;
  std::vector<std::unique_ptr<mpxx::Process>> ps;
  std::vector<VictimGuard> gs;
  std::vector<int> codes;
  std::vector<bool> terminated(n, false);
  for (int i = 0; i < n; ++i) {
    const int code = static_cast<int>(rng.between(0, 3));
    codes.push_back(code);
    ps.push_back(std::make_unique<mpxx::Process>(child_options("worker"), [&go, code] {
      timed("Event::wait", 2s, [&] { return go.wait(2s); });
      throw mpxx::SystemExit(code);
    }));
    ps.back()->start();
    gs.emplace_back(ps.back()->pid(), "process");
  }
  for (int i = 0; i < n; ++i)
    if (rng.chance(0.3)) {
      ps[i]->terminate();
      terminated[i] = true;
      add(fault_terminate);
    }
  go.set();
  for (int i = 0; i < n; ++i) {
    std::vector<int> ok = {codes[i]};
    if (terminated[i]) ok.push_back(-SIGTERM);
    if (codes[i] != 0) {
      // join_checked accepts 0 too: check the exact code here.
      gs[i].release();
      timed("Process::join", 30s, [&] { return ps[i]->join(30s); });
      const int got = ps[i]->exitcode().value_or(-999);
      const bool killed = victims().killed(ps[i]->pid());
      victims().clear_killed(ps[i]->pid());
      add(op_process);
      bool fine = (killed && got == -SIGKILL);
      for (int c : ok) fine = fine || got == c;
      if (!fine)
        fail(wrong_exitcode, "process: child exited with " + std::to_string(got) + ", expected " +
                                 std::to_string(codes[i]) + (terminated[i] ? " or -15" : ""));
    } else {
      join_checked(*ps[i], gs[i], "process", ok);
    }
  }
}

}  // namespace

std::vector<Workload> channel_workloads() {
  return {{"pipe", pipe_round},
          {"queue", queue_round<false>},
          {"joinable queue", queue_round<true>},
          {"process", process_round}};
}

}  // namespace soak
