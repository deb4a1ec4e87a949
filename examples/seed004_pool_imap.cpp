// Mirrors /work/shared/seeds/004_54b26407610c32da.txt, 进程池的 map 和 imap
//
//   def foo(param):
//       arg1, arg2 = param
//       pass
//
//   params = []
//   for i in range(10):
//       params.append((i, i+1))
//   with Pool(8) as pool:
//       pool.imap(foo, params)
//
// imap does not turn its input into a list first and hands back each result
// as soon as it is ready, where map returns them all at the end. In mpxx,
// imap is a lazy range: input is sent to the workers as the results are
// consumed, so the loop below is what makes the work happen (and an endless
// input works too). The twin's foo returns arg1 + arg2 so there is something
// to print.
#include <unistd.h>

#include <iostream>
#include <utility>
#include <vector>

#include <mpxx/mpxx.hpp>

int foo(std::pair<int, int> param) {
  auto [arg1, arg2] = param;
  return arg1 + arg2;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::vector<std::pair<int, int>> params;
  for (int i = 0; i < 10; ++i) params.emplace_back(i, i + 1);
  mpxx::Pool pool(8);
  for (int r : pool.imap(foo, params)) std::cout << r << " ";
  std::cout << std::endl;
  // map: all results at once, in order.
  for (int r : pool.map(foo, params)) std::cout << r << " ";
  std::cout << std::endl;
}
