// soak/common.cpp - the figures, messages, ledgers and child helpers that
// every workload uses.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "soak.hpp"

namespace soak {

namespace {
Figures* g_figs = nullptr;
}

thread_local std::string current_round;

void init_figures() {
  // Anonymous shared memory: inherited by every forked child, no fd, no name.
  void* p = ::mmap(nullptr, sizeof(Figures), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mpxx_soak: mmap");
    std::exit(2);
  }
  g_figs = new (p) Figures{};
}

Figures& figs() { return *g_figs; }

void fail(Fig f, const std::string& what) {
  add(f);
  // One write: lines from several processes do not interleave.
  std::string line = "mpxx_soak: [pid " + std::to_string(::getpid()) + ", " + current_round + "] " + what + "\n";
  (void)!::write(2, line.data(), line.size());
}

std::uint64_t checksum(const std::string& s) {
  // FNV-1a over 8-byte words: fast enough for multi-MiB payloads.
  std::uint64_t h = 1469598103934665603ULL ^ s.size();
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 1099511628211ULL;
  }
  for (; i < s.size(); ++i) h = (h ^ static_cast<unsigned char>(s[i])) * 1099511628211ULL;
  return h;
}

Msg make_msg(std::uint32_t producer, std::uint32_t seq, std::size_t len) {
  Msg m;
  m.producer = producer;
  m.seq = seq;
  m.len = len;
  m.payload.resize(len);
  std::uint64_t x = (std::uint64_t{producer} << 32 | seq) * 0x9e3779b97f4a7c15ULL + 1;
  std::size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(m.payload.data() + i, &x, 8);
  }
  for (; i < len; ++i) m.payload[i] = static_cast<char>(i);
  m.sum = checksum(m.payload);
  return m;
}

std::size_t msg_len(Rng& r, bool big_ok) {
  if (big_ok && r.chance(0.04)) return static_cast<std::size_t>(r.between(1 << 20, 4 << 20));
  if (r.chance(0.2)) return static_cast<std::size_t>(r.between(4096, 256 << 10));
  return static_cast<std::size_t>(r.between(0, 512));
}

bool whole(const Msg& m) { return m.len == m.payload.size() && m.sum == checksum(m.payload); }

// ------------------------------------------------------------------ ledger

Ledger::Ledger(int producers, int per_producer)
    : producers_(producers),
      per_(per_producer),
      cells_(static_cast<std::size_t>(producers) * per_producer),
      sent_(static_cast<std::size_t>(producers)),
      finished_(static_cast<std::size_t>(producers)) {}

void Ledger::finished(std::uint32_t producer) { std::atomic_ref<std::uint32_t>(finished_[producer]).store(1); }

void Ledger::delivered(const Msg& m) {
  add(checked_msgs);
  if (!whole(m)) {
    std::string where;
    if (m.len == m.payload.size()) {
      const Msg e = make_msg(m.producer, m.seq, m.len);
      std::size_t i = 0, j;
      while (i < m.len && e.payload[i] == m.payload[i]) ++i;
      for (j = i; j < m.len && e.payload[j] != m.payload[j]; ++j) {
      }
      where = ", bytes " + std::to_string(i) + ".." + std::to_string(j) + " differ";
    }
    fail(torn, "message " + std::to_string(m.producer) + "/" + std::to_string(m.seq) + " arrived torn (" +
                   std::to_string(m.payload.size()) + " of " + std::to_string(m.len) + " bytes" + where + ")");
    return;
  }
  if (m.producer >= static_cast<std::uint32_t>(producers_) || m.seq >= static_cast<std::uint32_t>(per_)) {
    fail(torn, "a message with an impossible id " + std::to_string(m.producer) + "/" + std::to_string(m.seq));
    return;
  }
  std::atomic_ref<std::uint32_t>(cells_[m.producer * per_ + m.seq]).fetch_add(1);
}

void Ledger::sent(std::uint32_t producer, std::uint32_t seq_done) {
  std::atomic_ref<std::uint32_t>(sent_[producer]).store(seq_done);
}

std::uint32_t Ledger::sent_count(std::uint32_t producer) const {
  return std::atomic_ref<std::uint32_t>(const_cast<std::uint32_t&>(sent_[producer])).load();
}

void Ledger::check(const char* path, int may_lose) {
  int missing_allowed = 0;
  for (int p = 0; p < producers_; ++p) {
    const std::uint32_t done = sent_count(p);
    for (int s = 0; s < per_; ++s) {
      const std::uint32_t n = cells_[p * per_ + s];
      const std::string id = std::string(path) + " message " + std::to_string(p) + "/" + std::to_string(s);
      if (n > 1) fail(duplicated, id + " arrived " + std::to_string(n) + " times");
      if (static_cast<std::uint32_t>(s) < done) {
        if (n == 0) {
          if (missing_allowed < may_lose)
            ++missing_allowed;  // in the hands of a consumer that was killed
          else
            fail(lost, id + " was put but never arrived");
        }
      } else if (static_cast<std::uint32_t>(s) == done) {
        // The put in flight when the producer died: whole or absent. A
        // producer that finished by itself gave up on it (Full): absent.
        if (n != 0 && finished_[p]) fail(duplicated, id + " arrived, but its put raised Full");
      } else if (n != 0) {
        fail(duplicated, id + " arrived but was never put");
      }
    }
  }
  add(allowed_absent, missing_allowed);
}

// ---------------------------------------------------------------- children

mpxx::ProcessOptions child_options(const char* name) {
  return {.name = name, .context = &mpxx::get_context("fork")};
}

void child_body(const char* what, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    fail(unexpected_error, std::string(what) + ": " + e.what());
    ::_exit(70);
  }
}

void join_checked(mpxx::Process& p, VictimGuard& g, const char* what, std::vector<int> also) {
  g.release();
  const bool ok = timed("Process::join", 60s, [&] { return p.join(60s); });
  if (!ok) {
    fail(hangs, std::string(what) + ": child " + std::to_string(p.pid()) + " did not end within 60 s");
    p.kill();
    p.join();
  }
  add(op_process);
  const int code = p.exitcode().value_or(-999);
  const bool killed = victims().killed(p.pid());
  victims().clear_killed(p.pid());
  if (code == 0 || (killed && code == -SIGKILL)) return;
  for (int a : also)
    if (code == a) return;
  fail(wrong_exitcode, std::string(what) + ": child " + std::to_string(p.pid()) + " exited with " +
                           std::to_string(code) + (killed ? " (SIGKILLed)" : ""));
}

}  // namespace soak
