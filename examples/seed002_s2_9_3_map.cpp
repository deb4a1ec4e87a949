// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.9.3 进程池的其他机制
//
//   def func(i):
//       print(i,os.getpid())
//       time.sleep(0.2)
//
//   p =Pool(4)
//   p.map(func,range(20))       # two steps: map submits and waits
//
// Time is scaled down: one second of the seed is 100 ms here.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <ranges>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void func(int i) {
  std::cout << i << " " << ::getpid() << std::endl;
  std::this_thread::sleep_for(kSecond / 5);
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Pool p(4);
  p.map(func, std::views::iota(0, 20));
}
