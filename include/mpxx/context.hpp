// mpxx/context.hpp - start methods and mpxx::init.
//
// Three ways to start a child, as in Python:
//   fork        (default) the child is a copy of the parent made by fork();
//               it can run any callable, capturing lambdas included. Fast.
//   spawn       the child re-executes /proc/self/exe and branches off inside
//               mpxx::init(argc, argv) at the top of main, never reaching the
//               rest of main. It receives the target and arguments as bytes,
//               so both must be able to cross a process boundary (task.hpp).
//               Safe whatever the parent's threads were doing.
//   forkserver  a small single-threaded server process, started on first use
//               by re-executing the program, forks each child on request.
//               Safe when the parent has threads, and cheaper than spawn.
//
// Example:
//   int main(int argc, char** argv) {
//     mpxx::init(argc, argv);                 // like `if __name__ == "__main__":`
//     mpxx::set_start_method("spawn");
//     mpxx::Process p(work, 42);
//     p.start();
//     p.join();
//   }
//
// Without mpxx::init the fork method still works; spawn and forkserver throw
// a ProcessError that says init is missing.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mpxx {

enum class StartMethod { fork, spawn, forkserver };

std::string_view to_string(StartMethod m) noexcept;
// Parses "fork", "spawn" or "forkserver"; anything else is a ValueError.
StartMethod parse_start_method(std::string_view name);

// Call first thing in main. In the main program it records argv (spawn
// re-executes the program with the same arguments) and returns. In a spawn
// child or in the forkserver it runs the child's work and exits the process:
// it does not return.
void init(int argc, char** argv);
// True once init() has run in this process.
bool initialized() noexcept;

// The default start method for new processes. Python's rule: it may be set
// once; setting it again raises unless force is true.
void set_start_method(std::string_view method, bool force = false);
void set_start_method(StartMethod method, bool force = false);
// The default start method's name; with allow_none, std::nullopt if it was
// never set (Python's get_start_method(allow_none=True)).
std::string get_start_method();
std::optional<std::string> get_start_method(bool allow_none);
std::vector<std::string> get_all_start_methods();

// A context fixes the start method for the objects created through it:
//   auto& ctx = mpxx::get_context("spawn");
//   mpxx::Process p({.context = &ctx}, work, 1);
class Context {
 public:
  explicit constexpr Context(StartMethod m) noexcept : method_(m) {}
  StartMethod start_method() const noexcept { return method_; }
  std::string_view name() const noexcept { return to_string(method_); }

 private:
  StartMethod method_;
};

// The context for a method ("fork", "spawn", "forkserver"), or for the
// current default when called without an argument.
const Context& get_context();
const Context& get_context(std::string_view method);
const Context& get_context(StartMethod method);

}  // namespace mpxx
