// Shapes and callables shared by the fuzz target and its seed generator.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "mpxx/detail/codec.hpp"

namespace fuzz {

struct Record {
  std::string name;
  std::vector<int> values;
  double weight = 0;
  template <class A>
  void serialize(A& a) {
    a(name, values, weight);
  }
};

// A socket from which the bytes can be read, then EOF (the writing end is
// shut, or closed unless keep_writer); -1 if it could not be made. The
// bytes must fit in the socket's buffer (60000 do).
int stream_of(std::span<const std::byte> bytes, int* keep_writer = nullptr);

// The only calls the fuzz binary can make: harmless ones.
int add(int a, int b);
std::string echo(std::string s);
int square(int x);

}  // namespace fuzz
