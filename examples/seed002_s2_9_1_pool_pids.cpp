// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.9.1 进程池
//
//   def func(i):
//       print(i,os.getpid())
//       time.sleep(0.2)
//
//   p =Pool(4)                  # at most 4 worker processes
//   for i in range(20):
//       p.apply_async(func,args=(i,))   # submit without waiting
//   p.close()                   # no more tasks may be submitted
//   p.join()                    # wait for the workers to finish and exit
//
// Twenty tasks, four pids: the same four workers take turns. Time is scaled
// down: one second of the seed is 100 ms here.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>
#include <tuple>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void func(int i) {
  std::cout << i << " " << ::getpid() << std::endl;
  std::this_thread::sleep_for(kSecond / 5);
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Pool p(4);
  for (int i = 0; i < 20; ++i) p.apply_async(func, std::tuple{i});
  p.close();
  p.join();
}
