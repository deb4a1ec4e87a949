// Mirrors /work/shared/seeds/000_3a908d496bf0d478.txt, §2 进程池 (Pool)
//
//   def f1(i):
//       time.sleep(0.5)
//       print(i)
//       return i+100
//
//   pool = Pool(5)
//   for i in range(1,31):
//       pool.apply(func=f1, args=(i,))          # one at a time: apply blocks
//   pool.close(); pool.join()
//
//   ###apply_async
//   def f2(arg):
//       print(arg)
//   pool = Pool(5)
//   for i in range(1,31):
//       pool.apply_async(func=f1, args=(i,), callback=f2)
//   pool.close(); pool.join()
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here. apply() waits for each result, so the first half takes 30 sleeps
// one after the other; apply_async() lets five workers sleep at once, and
// f2 runs in the main process as each result arrives.
#include <chrono>
#include <iostream>
#include <thread>
#include <tuple>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

int f1(int i) {
  std::this_thread::sleep_for(kSecond / 2);
  std::cout << i << std::endl;
  return i + 100;
}

void f2(int arg) { std::cout << arg << std::endl; }

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  {
    mpxx::Pool pool(5);
    for (int i = 1; i < 31; ++i) pool.apply(f1, i);
    pool.close();
    pool.join();
  }
  std::cout << "###apply_async" << std::endl;
  {
    mpxx::Pool pool(5);
    for (int i = 1; i < 31; ++i) pool.apply_async(f1, std::tuple{i}, {.callback = f2});
    pool.close();
    pool.join();
  }
}
