// A program built against the installed mpxx package.
#include <mpxx/mpxx.hpp>

#include <cstdio>

int square_exit(int x) { std::exit(x * x); }

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process a(square_exit, 3);
  mpxx::Process b({.context = &mpxx::get_context("spawn")}, square_exit, 2);
  a.start();
  b.start();
  a.join();
  b.join();
  std::printf("consumer: %d %d\n", *a.exitcode(), *b.exitcode());
  return *a.exitcode() == 9 && *b.exitcode() == 4 ? 0 : 1;
}
