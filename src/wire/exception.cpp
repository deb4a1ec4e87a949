// Exceptions as bytes, and the backtrace of where they were thrown.
//
// A backtrace taken in a catch block shows where the exception was caught,
// after the stack that threw it is gone. To report where it was thrown, mpxx
// wraps __cxa_throw (the C++ runtime's throw entry point): while a
// ThrowTrace is alive on the current thread - that is, while mpxx runs a
// task - each throw records the stack first, then continues into the real
// __cxa_throw. Everywhere else the wrapper costs one thread-local test.
// Sanitizer runtimes wrap __cxa_throw themselves; there the hook is left
// out and the backtrace is the catch site's.
#include "mpxx/detail/exception.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <execinfo.h>

#include <cstdio>
#include <cstring>
#include <typeinfo>
#include <vector>

#include "mpxx/detail/codec.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MPXX_NO_THROW_HOOK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define MPXX_NO_THROW_HOOK 1
#endif
#endif

namespace mpxx::detail {

namespace {
constexpr int kMaxFrames = 64;
struct ThrowRecord {
  bool capturing = false;
  const std::type_info* type = nullptr;
  int depth = 0;
  void* frames[kMaxFrames];
};
thread_local ThrowRecord t_throw;

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// Formats frames innermost first in `frames`, printed outermost first like
// Python's "most recent call last". mpxx's own bootstrap below the task and
// the std::invoke/std::function plumbing between frames are left out.
std::string format_frames(void* const* frames, int n) {
  std::vector<std::string> lines;
  char** syms = backtrace_symbols(frames, n);
  for (int i = 0; i < n; ++i) {
    std::string line = syms ? syms[i] : "?";
    // "module(mangled+0x1f) [0x...]": demangle the middle part.
    auto open = line.find('('), plus = line.find('+', open == std::string::npos ? 0 : open);
    std::string fn;
    if (open != std::string::npos && plus != std::string::npos && plus > open + 1) {
      std::string mangled = line.substr(open + 1, plus - open - 1);
      fn = wire::demangle(mangled.c_str());
      line = fn + " " + line.substr(plus, line.find(')', plus) - plus) + " in " +
             line.substr(0, open);
    }
    if (i > 0 && (starts_with(fn, "mpxx::detail::") || starts_with(fn, "mpxx::Process::run") ||
                  starts_with(fn, "mpxx::detail::run_child_body")))
      break;  // the task ends here; below is mpxx's bootstrap
    static const char* const plumbing[] = {"std::__invoke", "std::invoke<", "std::_Function_handler",
                                           "std::function<", "std::__apply", "std::apply<",
                                           "mpxx::detail::make_target"};
    bool skip = false;
    for (const char* p : plumbing) skip = skip || fn.find(p) != std::string::npos;
    if (skip) continue;
    lines.push_back(std::move(line));
  }
  std::free(syms);
  std::string out;
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) out += "  " + *it + "\n";
  return out;
}
}  // namespace

ThrowTrace::ThrowTrace() noexcept : prev_(t_throw.capturing) {
  t_throw.capturing = true;
  t_throw.type = nullptr;
}
ThrowTrace::~ThrowTrace() { t_throw.capturing = prev_; }

std::string current_backtrace(int skip) {
  void* frames[kMaxFrames];
  int n = backtrace(frames, kMaxFrames);
  skip += 1;  // this function
  if (skip > n) skip = n;
  return format_frames(frames + skip, n - skip);
}

ExceptionInfo describe_current_exception() {
  ExceptionInfo info;
  const std::type_info* t = abi::__cxa_current_exception_type();
  info.type = t ? wire::demangle(t->name()) : "unknown exception";
  try {
    throw;
  } catch (const RemoteError& e) {
    // Re-raised from a further process: keep the original description.
    info.type = e.type_name();
    info.message = e.message();
    info.backtrace = e.backtrace();
    return info;
  } catch (const std::exception& e) {
    info.message = e.what();
  } catch (...) {
    info.message = "(not derived from std::exception)";
  }
  if (t && t_throw.type && *t_throw.type == *t && t_throw.depth > 0) {
    // Skip the hook's own frame.
    info.backtrace = format_frames(t_throw.frames + 1, t_throw.depth - 1);
  } else {
    info.backtrace = current_backtrace(1);
  }
  return info;
}

void encode_exception(wire::Writer& w, const ExceptionInfo& e) {
  wire::encode(w, e.type);
  wire::encode(w, e.message);
  wire::encode(w, e.backtrace);
}

RemoteError decode_exception(wire::Reader& r) {
  auto type = wire::decode<std::string>(r);
  auto message = wire::decode<std::string>(r);
  auto backtrace = wire::decode<std::string>(r);
  return RemoteError(std::move(type), std::move(message), std::move(backtrace));
}

}  // namespace mpxx::detail

#ifndef MPXX_NO_THROW_HOOK
namespace __cxxabiv1 {
extern "C" void __cxa_throw(void* obj, std::type_info* type, void (*dtor)(void*)) {
  using Real = void (*)(void*, std::type_info*, void (*)(void*));
  static Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "__cxa_throw"));
  auto& rec = mpxx::detail::t_throw;
  if (rec.capturing) {
    rec.type = type;
    rec.depth = backtrace(rec.frames, mpxx::detail::kMaxFrames);
  }
  real(obj, type, dtor);
  __builtin_unreachable();
}
}  // namespace __cxxabiv1
#endif
