// Mirrors seed 000, 1.1 multiprocessing，Array，Value
//
//   def func(a,b):
//       a.value = 3.333333333333333
//       for i in range(len(b)):
//           print(-b[i])
//           b[i] = -b[i]
//           print('b[i]',b[i])
//
//   if __name__ == "__main__":
//       num = Value('d',0.0)
//       arr = Array('i',range(11))
//       c = Process(target=func,args=(num,arr))
//       d= Process(target=func,args=(num,arr))
//       c.start(); d.start(); c.join(); d.join()
//       print(num.value)
//       for i in arr:
//           print(i)
//
// Both children negate the same shared array, so (as in Python) the result
// depends on how their steps interleave: each element ends up negated once
// or twice.
#include <iostream>
#include <ranges>

#include <mpxx/mpxx.hpp>

void func(mpxx::Value<double> a, mpxx::Array<int> b) {
  a.value() = 3.333333333333333;
  for (std::size_t i = 0; i < b.size(); ++i) {
    std::cout << -b[i] << std::endl;
    b[i] = -b[i];
    std::cout << "b[i] " << b[i] << std::endl;
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Value<double> num(0.0);
  mpxx::Array<int> arr(std::views::iota(0, 11));

  mpxx::Process c(func, num, arr);
  mpxx::Process d(func, num, arr);
  c.start();
  d.start();
  c.join();
  d.join();

  std::cout.precision(16);
  std::cout << num.value() << std::endl;
  for (int i : arr) std::cout << i << std::endl;
}
