// The callable registry and checked function references (see
// include/mpxx/detail/callable.hpp for the format and the reasoning).
#include "mpxx/detail/callable.hpp"

#include <elf.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mpxx::detail {

namespace {

struct Registry {
  std::mutex mu;
  std::unordered_map<std::uint64_t, EntryFns> entries;
};

Registry& registry() {
  static auto* r = new Registry;  // leaked: entries are used until _exit
  return *r;
}

std::uint64_t fnv1a(const void* p, std::size_t n, std::uint64_t h = 0xcbf29ce484222325ull) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// One loaded ELF object: its identity and executable address ranges.
struct Module {
  std::uint64_t key;
  std::uintptr_t base;
  std::string name;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> exec;  // [begin, end) absolute
};

std::uint64_t module_key(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      ElfW(Nhdr) nh;
      std::memcpy(&nh, p, sizeof nh);
      const unsigned char* name = p + sizeof nh;
      const unsigned char* desc = name + ((nh.n_namesz + 3) & ~3u);
      const unsigned char* next = desc + ((nh.n_descsz + 3) & ~3u);
      if (next > end) break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return fnv1a(desc, nh.n_descsz);
      p = next;
    }
  }
  // No build-id: fall back to the object's file name (the main program's is
  // empty), which is stable across exec of the same binary.
  const char* n = info->dlpi_name ? info->dlpi_name : "";
  return fnv1a(n, std::strlen(n), 0x84222325cbf29ce4ull);
}

struct ModuleTable {
  std::mutex mu;
  std::vector<Module> modules;

  void rebuild() {
    modules.clear();
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* self) -> int {
          Module m{module_key(info), info->dlpi_addr, info->dlpi_name ? info->dlpi_name : "", {}};
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const auto& ph = info->dlpi_phdr[i];
            if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X))
              m.exec.emplace_back(info->dlpi_addr + ph.p_vaddr,
                                  info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
          }
          if (!m.exec.empty()) static_cast<ModuleTable*>(self)->modules.push_back(std::move(m));
          return 0;
        },
        this);
  }
};

ModuleTable& modules() {
  static auto* t = new ModuleTable;
  return *t;
}

// Hashes up to 16 code bytes at addr without reading past the segment,
// with the function's offset in its module: many functions begin with the
// same 16 bytes (an unoptimized build's prologue), so a corrupted offset
// that lands on the start of another one must not hash the same.
std::uint64_t code_hash(std::uintptr_t addr, std::uintptr_t seg_end, std::uint64_t offset) {
  std::size_t n = seg_end - addr < 16 ? seg_end - addr : 16;
  return fnv1a(reinterpret_cast<const void*>(addr), n) ^ (offset * 0x9e3779b97f4a7c15u);
}

}  // namespace

std::uint64_t register_entry(const char* mangled_name, EntryFns fn) noexcept {
  std::uint64_t id = wire::type_tag_of(mangled_name);
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  // The same template instance may exist in several loaded objects; all
  // copies behave alike, so the first one serves.
  r.entries.emplace(id, fn);
  return id;
}

EntryFns find_entry(std::uint64_t id) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  auto it = r.entries.find(id);
  if (it == r.entries.end())
    throw ProtocolError("mpxx: unknown callable id " + hex(id) +
                        ": this program does not contain that call (is the receiving process "
                        "running the same build of the same binary?)");
  return it->second;
}

FnRef make_fn_ref(const void* fn) {
  auto addr = reinterpret_cast<std::uintptr_t>(fn);
  ModuleTable& t = modules();
  std::lock_guard lk(t.mu);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt == 1 || t.modules.empty()) t.rebuild();
    for (const Module& m : t.modules)
      for (auto [b, e] : m.exec)
        if (addr >= b && addr < e) return FnRef{m.key, addr - m.base, code_hash(addr, e, addr - m.base)};
  }
  throw ValueError("mpxx: function at " + hex(addr) +
                   " is not in the code of any loaded module and cannot be sent to another process");
}

const void* resolve_fn_ref(const FnRef& ref) {
  ModuleTable& t = modules();
  std::lock_guard lk(t.mu);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt == 1 || t.modules.empty()) t.rebuild();
    for (const Module& m : t.modules) {
      if (m.key != ref.module) continue;
      std::uintptr_t addr = m.base + ref.offset;
      if (addr < m.base) break;  // offset wrapped around
      for (auto [b, e] : m.exec) {
        if (addr < b || addr >= e) continue;
        if (code_hash(addr, e, ref.offset) != ref.code_hash)
          throw ProtocolError("mpxx: forged or stale function reference: the code at offset " +
                              hex(ref.offset) + " of " + (m.name.empty() ? "the program" : m.name) +
                              " does not match (different build?)");
        return reinterpret_cast<const void*>(addr);
      }
      throw ProtocolError("mpxx: forged function reference: offset " + hex(ref.offset) +
                          " is outside the code of " + (m.name.empty() ? "the program" : m.name));
    }
  }
  throw ProtocolError("mpxx: function reference names module " + hex(ref.module) +
                      ", which is not loaded here (is the receiving process running the same "
                      "build of the same binary?)");
}

void invoke_call(wire::Reader& in, wire::Writer* out) {
  auto id = in.pod<std::uint64_t>();
  find_entry(id).invoke(in, out);
}

Target bind_call(wire::Reader& in) {
  auto id = in.pod<std::uint64_t>();
  return find_entry(id).bind(in);
}

}  // namespace mpxx::detail
