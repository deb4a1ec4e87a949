// Shapes and callables shared by the fuzz target and its seed generator.
#pragma once

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

// The only calls the fuzz binary can make: harmless ones.
int add(int a, int b);
std::string echo(std::string s);
int square(int x);

}  // namespace fuzz
