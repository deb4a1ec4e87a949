// soak/sync.cpp - Lock/Semaphore/Condition/Event/Barrier use, Value/Array
// and SharedMemory, by children the chaos kills and stops.
//
// The Lock workload keeps an invariant a dead holder cannot break for good:
// a counter in a Value equals the sum of the increments each child
// recorded, both written under the Value's lock with a journal, so the next
// holder (the lock recovered from a dead one) finishes a half-done
// increment. A SIGKILLed holder must never deadlock the others: every
// acquire has a timeout, and a lock that stays unavailable for 20 s counts
// as a hang.
#include <signal.h>

#include <cstring>
#include <memory>

#include "resources.hpp"
#include "soak.hpp"

namespace soak {
namespace {

// The journal of the increment in progress: who, and the values before.
struct Journal {
  std::int64_t who = 0;  // child + 1, 0: none in progress
  std::int64_t value_before = 0;
  std::int64_t done_before = 0;
};

// Finishes a dead holder's half-done increment (called holding the lock).
void repair(Journal& j, std::int64_t value, mpxx::RawArray<std::int64_t>& done) {
  if (j.who == 0) return;
  const std::size_t c = static_cast<std::size_t>(j.who - 1);
  if (value == j.value_before + 1 && done[c] == j.done_before) ++done[c];
  j.who = 0;
}

void sync_round(Rng& rng, Clock::time_point until) {
  const int n = static_cast<int>(rng.between(2, 4));
  const int iterations = static_cast<int>(rng.between(50, 400));
  mpxx::Value<std::int64_t> counter(0);
  mpxx::RawArray<std::int64_t> done(static_cast<std::size_t>(n));
  mpxx::RawValue<Journal> journal;
  const int units = static_cast<int>(rng.between(1, 2));
  mpxx::Semaphore sem(units);
  mpxx::RawArray<std::int32_t> in_sem(static_cast<std::size_t>(n));
  mpxx::Condition cond;
  mpxx::RawValue<std::int64_t> ticket(0);
  mpxx::Event go;
  mpxx::Barrier barrier(n);

  auto child = [&](int c, std::uint64_t seed) {
    child_body("sync child", [&] {
      Rng r(seed);
      // Every party once at the barrier: a killed or stopped party breaks
      // it (BrokenBarrierError) or makes the others time out.
      try {
        timed("Barrier::wait", 2s, [&] { return barrier.wait(2s); });
      } catch (const mpxx::BrokenBarrierError&) {
      }
      timed("Event::wait", 5s, [&] { return go.wait(5s); });
      auto stuck_since = Clock::now();
      for (int i = 0; i < iterations; ++i) {
        add(op_sync);
        const auto dice = r.below(100);
        if (dice < 70) {
          auto& lock = counter.get_lock();
          if (!timed("RLock::acquire", 1s, [&] { return lock.acquire(1s); })) {
            if (Clock::now() - stuck_since > 20s) {
              fail(hangs, "sync: the Value's lock stayed unavailable for 20 s");
              return;
            }
            continue;
          }
          stuck_since = Clock::now();
          Journal& j = journal.value();
          std::int64_t& v = counter.get_obj();
          repair(j, v, done);
          j = Journal{c + 1, v, done[c]};
          v += 1;
          done[c] += 1;
          j.who = 0;
          lock.release();
        } else if (dice < 85) {
          if (!timed("Semaphore::acquire", 300ms, [&] { return sem.acquire(300ms); })) continue;
          std::atomic_ref<std::int32_t>(in_sem[c]).store(1);
          std::int32_t holders = 0;
          for (int k = 0; k < n; ++k) holders += std::atomic_ref<std::int32_t>(in_sem[k]).load();
          if (holders > units)
            fail(invariant_broken, "sync: " + std::to_string(holders) + " holders of a Semaphore(" +
                                       std::to_string(units) + ")");
          std::atomic_ref<std::int32_t>(in_sem[c]).store(0);
          sem.release();
        } else {
          if (!timed("Condition::acquire", 1s, [&] { return cond.acquire(1s); })) continue;
          const std::int64_t seen = ++ticket.value();
          cond.notify_all();
          timed("Condition::wait_for", 50ms, [&] { return cond.wait_for([&] { return ticket.value() != seen; }, 50ms); });
          cond.release();
        }
      }
    });
  };

  std::vector<std::unique_ptr<mpxx::Process>> ps;
  std::vector<VictimGuard> gs;
  for (int c = 0; c < n; ++c) {
    const std::uint64_t seed = rng.g();
    ps.push_back(std::make_unique<mpxx::Process>(child_options("sync"), [&, c, seed] { child(c, seed); }));
    ps.back()->start();
    gs.emplace_back(ps.back()->pid(), "sync");
  }
  go.set();
  for (int c = 0; c < n; ++c) join_checked(*ps[c], gs[c], "sync child");
  (void)until;
  // The last holder may have died mid-increment with no one after it.
  auto& lock = counter.get_lock();
  if (!timed("RLock::acquire", 5s, [&] { return lock.acquire(5s); })) {
    fail(hangs, "sync: the Value's lock was not recovered from its dead holder within 5 s");
    return;
  }
  repair(journal.value(), counter.get_obj(), done);
  std::int64_t sum = 0;
  for (int c = 0; c < n; ++c) sum += done[c];
  const std::int64_t value = counter.get_obj();
  lock.release();
  if (value != sum)
    fail(invariant_broken, "sync: the counter is " + std::to_string(value) + " but the children recorded " +
                               std::to_string(sum) + " increments");
}

// ------------------------------------------------ Value/Array, SharedMemory

std::uint64_t word(int child, std::uint64_t it, std::size_t k) {
  return (std::uint64_t(child) << 48) ^ (it << 16) ^ k;
}

void shm_round(Rng& rng, Clock::time_point) {
  const int n = static_cast<int>(rng.between(2, 4));
  const std::size_t per = static_cast<std::size_t>(rng.between(1, 64));
  const int iterations = static_cast<int>(rng.between(20, 200));
  mpxx::Array<std::uint64_t> arr(n * per);
  // A named block of ours (children attach by name) and an unnamed one
  // (inherited), each child writing its own region of both.
  const std::size_t region = static_cast<std::size_t>(rng.between(1, 1 << 18)) & ~std::size_t{7};
  const std::string name = shm_prefix() + std::to_string(rng.g() % 1000000000);
  auto named = mpxx::SharedMemory::create(std::max<std::size_t>(8, region * n), name);
  auto unnamed = mpxx::SharedMemory::create(std::max<std::size_t>(8, region * n));

  std::vector<std::unique_ptr<mpxx::Process>> ps;
  std::vector<VictimGuard> gs;
  for (int c = 0; c < n; ++c) {
    const std::string own = name + "_" + std::to_string(c);
    ps.push_back(std::make_unique<mpxx::Process>(child_options("shm"), [&, c, own] {
      child_body("shm child", [&] {
        // A block this child creates: if the chaos kills it, the tracker
        // must remove the name (the leak check counts our names), even if
        // it dies in the middle of the create.
        auto mine = mpxx::SharedMemory::create(4096, own);
        auto there = mpxx::SharedMemory::attach(name);
        for (int it = 1; it <= iterations; ++it) {
          add(op_shm);
          {
            std::scoped_lock g(arr.get_lock());
            auto a = arr.get_obj();
            for (std::size_t k = 0; k < per; ++k) a[c * per + k] = word(c, it, k);
          }
          for (auto* b : {&there, &unnamed}) {
            auto buf = b->buf().subspan(c * region, region);
            for (std::size_t k = 0; k + 8 <= region; k += 8) {
              const std::uint64_t w = word(c, it, k);
              std::memcpy(buf.data() + k, &w, 8);
            }
          }
          std::memcpy(mine.buf().data(), &it, sizeof it);
        }
        there.close();
        mine.close();
        mine.unlink();
      });
    }));
    ps.back()->start();
    gs.emplace_back(ps.back()->pid(), "shm");
  }
  for (int c = 0; c < n; ++c) {
    join_checked(*ps[c], gs[c], "shm child");
    if (ps[c]->exitcode() != 0) continue;  // killed: its regions may be half-written
    const std::uint64_t it = static_cast<std::uint64_t>(iterations);
    auto a = arr.get_obj();
    for (std::size_t k = 0; k < per; ++k)
      if (a[c * per + k] != word(c, it, k)) {
        fail(wrong_result, "shm: Array slot " + std::to_string(c * per + k) + " does not hold its child's last write");
        break;
      }
    for (auto* b : {&named, &unnamed}) {
      auto buf = b->buf().subspan(c * region, region);
      for (std::size_t k = 0; k + 8 <= region; k += 8) {
        std::uint64_t w;
        std::memcpy(&w, buf.data() + k, 8);
        if (w != word(c, it, k)) {
          fail(wrong_result, std::string("shm: ") + (b == &named ? "named" : "unnamed") +
                                 " SharedMemory does not hold child " + std::to_string(c) + "'s last write");
          break;
        }
      }
    }
  }
  named.close();
  named.unlink();
}

}  // namespace

std::vector<Workload> sync_workloads() { return {{"sync", sync_round}, {"shared memory", shm_round}}; }

}  // namespace soak
