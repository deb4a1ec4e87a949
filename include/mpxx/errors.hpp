// mpxx/errors.hpp - the exception hierarchy.
//
// Every error mpxx raises derives from mpxx::Error (itself a
// std::runtime_error), and is named after the exception Python's
// multiprocessing raises in the same situation, so a reader of Python code
// finds the same names in the same places:
//
//   try {
//     r.get(std::chrono::seconds(1));
//   } catch (const mpxx::TimeoutError& e) {
//     ...
//   }
//
// mpxx::SystemExit and mpxx::KeyboardInterrupt stand outside the hierarchy,
// as Python's BaseException subclasses do: they are not errors but requests
// to stop, so `catch (const std::exception&)` does not swallow them.
#pragma once

#include <stdexcept>
#include <string>
#include <sys/types.h>

namespace mpxx {

// Base of everything mpxx throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Misuse of a process object or a manager (start twice, join before start,
// a daemonic process creating children, ...), where Python asserts
// (AssertionError). Where Python raises ValueError, so does mpxx.
class ProcessError : public Error {
 public:
  using Error::Error;
};

// An argument or value that cannot be accepted (an unknown start method,
// an invalid handle, a closed object).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A synchronization primitive used against its rules: waiting on or
// notifying a Condition without holding its lock, releasing an RLock this
// thread does not hold (threading's RuntimeError; multiprocessing asserts).
class RuntimeError : public Error {
 public:
  using Error::Error;
};

// An index outside a shared array or list.
class IndexError : public Error {
 public:
  using Error::Error;
};

// A key missing from a manager's dict (Python's KeyError); what() is the
// key's repr, as in Python.
class KeyError : public Error {
 public:
  using Error::Error;
};

// A missing attribute of a manager's Namespace (Python's AttributeError).
class AttributeError : public Error {
 public:
  using Error::Error;
};

// A system call failed; carries errno. Messages say what was being done:
// "mpxx: cannot start Process-3: fork: Resource temporarily unavailable".
class OSError : public Error {
 public:
  OSError(int err, const std::string& what);
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// A blocking call ran out of time.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// Bytes that crossed a process boundary are truncated, oversized, of an
// unknown kind or version, or name a callable this binary does not contain.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// An exception escaped a task in another process. Carries the original
// type name, message and the remote backtrace; what() is
// "<type>: <message>".
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message, std::string backtrace);
  const std::string& type_name() const noexcept { return type_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& backtrace() const noexcept { return backtrace_; }

 private:
  std::string type_, message_, backtrace_;
};

// A worker process died (signal, exit, OOM kill) while it held a task.
class WorkerLostError : public Error {
 public:
  WorkerLostError(pid_t pid, int exitcode, long task_index, const std::string& what)
      : Error(what), pid_(pid), exitcode_(exitcode), task_index_(task_index) {}
  pid_t pid() const noexcept { return pid_; }
  // Python's convention: -N when killed by signal N, else the exit status.
  int exitcode() const noexcept { return exitcode_; }
  long task_index() const noexcept { return task_index_; }

 private:
  pid_t pid_;
  int exitcode_;
  long task_index_;
};

// A task was cancelled (AsyncResult::cancel) or its pool terminated before
// it finished (concurrent.futures.CancelledError).
class CancelledError : public Error {
 public:
  using Error::Error;
};

class Empty : public Error {  // queue.Empty
 public:
  Empty() : Error("queue is empty") {}
  using Error::Error;
};

class Full : public Error {  // queue.Full
 public:
  Full() : Error("queue is full") {}
  using Error::Error;
};

class BrokenBarrierError : public Error {
 public:
  BrokenBarrierError() : Error("barrier is broken") {}
  using Error::Error;
};

class AuthenticationError : public Error {
 public:
  using Error::Error;
};

// The other end of a connection is closed and nothing is left to read.
class EOFError : public Error {
 public:
  EOFError() : Error("end of file: the other end is closed") {}
  using Error::Error;
};

// Thrown by Connection::recv_bytes_into when the buffer is too small; the
// complete message is available from message().
class BufferTooShort : public Error {
 public:
  BufferTooShort(std::string message)
      : Error("buffer too short for the received message"), message_(std::move(message)) {}
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};

// Ends the current child process with `code`, like Python's sys.exit(n)
// inside a Process target: the exit code becomes Process::exitcode().
// Deliberately not a std::exception.
class SystemExit {
 public:
  explicit SystemExit(int code = 0) noexcept : code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// Ctrl-C (SIGINT) arrived while this thread waited for Pool results: the
// pool's workers have been stopped. Left uncaught, the program ends as an
// interrupted program does (killed by SIGINT, "KeyboardInterrupt" on
// stderr). Deliberately not a std::exception.
class KeyboardInterrupt {
 public:
  const char* what() const noexcept { return "KeyboardInterrupt"; }
};

}  // namespace mpxx
