// mpxx/detail/exception.hpp - exceptions as bytes.
//
// An exception escaping a task travels as (type name, what(), backtrace) and
// is raised on the other side as mpxx::RemoteError carrying all three. The
// backtrace is the one captured where the exception was thrown, when mpxx
// was running the task (see src/wire/exception.cpp), else where it was
// caught.
#pragma once

#include <exception>
#include <string>

#include "mpxx/detail/buffer.hpp"
#include "mpxx/errors.hpp"

namespace mpxx::detail {

struct ExceptionInfo {
  std::string type;
  std::string message;
  std::string backtrace;
};

// Describes the exception being handled; call from inside a catch block.
ExceptionInfo describe_current_exception();
void encode_exception(wire::Writer& w, const ExceptionInfo& e);
RemoteError decode_exception(wire::Reader& r);

// While a ThrowTrace is alive on a thread, every throw on that thread records
// its backtrace, so that describe_current_exception() can report where the
// exception came from rather than where it was caught.
class ThrowTrace {
 public:
  ThrowTrace() noexcept;
  ~ThrowTrace();
  ThrowTrace(const ThrowTrace&) = delete;
  ThrowTrace& operator=(const ThrowTrace&) = delete;

 private:
  bool prev_;
};

// A readable backtrace of the calling thread (one frame a line).
std::string current_backtrace(int skip = 0);

}  // namespace mpxx::detail
