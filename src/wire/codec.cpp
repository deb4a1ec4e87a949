#include "mpxx/detail/codec.hpp"

#include <cxxabi.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <memory>

namespace mpxx::detail::wire {

std::uint64_t type_tag_of(const char* s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001b3ull;
  return h;
}

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                           std::free);
  if (status == 0 && p) return p.get();
  return mangled;
}

void check_size_prefix(const Reader& r, std::uint64_t n) {
  // Every element costs at least one byte, except empty classes; a handful
  // of those is the only honest way to exceed what is left.
  constexpr std::uint64_t kSlack = 4096;
  if (n > r.remaining() + kSlack)
    throw ProtocolError("mpxx: corrupt value: a size prefix of " + std::to_string(n) +
                        " elements exceeds the " + std::to_string(r.remaining()) +
                        " bytes left in the message");
}

void check_block_prefix(const Reader& r, std::uint64_t n, std::size_t size) {
  if (n > r.remaining() / size)
    throw ProtocolError("mpxx: corrupt value: a size prefix of " + std::to_string(n) + " elements of " +
                        std::to_string(size) + " bytes exceeds the " + std::to_string(r.remaining()) +
                        " bytes left in the message");
}

void bad_bool(unsigned value) {
  throw ProtocolError("mpxx: corrupt value: a bool holds " + std::to_string(value));
}

void out_of_memory_decoding(const std::string& type, std::size_t bytes) {
  throw OSError(ENOMEM, "mpxx: out of memory receiving a " + type + " (a message of " + std::to_string(bytes) +
                            " bytes): " + std::strerror(ENOMEM));
}

void type_mismatch(std::uint64_t got, std::uint64_t want, const std::string& want_name) {
  char buf[96];
  std::snprintf(buf, sizeof buf, " (type tag %016llx, expected %016llx)",
                static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
  throw ProtocolError("mpxx: type mismatch: the message does not hold a " + want_name + buf);
}

}  // namespace mpxx::detail::wire
