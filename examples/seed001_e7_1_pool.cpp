// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例7.1：使用进程池
//
//   def func(msg):
//       print "msg:", msg
//       time.sleep(3)
//       print "end"
//
//   pool = multiprocessing.Pool(processes = 3)
//   for i in xrange(4):
//       msg = "hello %d" %(i)
//       pool.apply_async(func, (msg, ))
//   print "Mark~ Mark~ Mark~~~~~~~~~~~~~~~~~~~~~~"
//   pool.close()
//   pool.join()   # close() first, or join() raises
//   print "Sub-process(es) done."
//
// Three workers take the first three messages; "hello 3" starts when one of
// them is free. Time is scaled down: one second of the seed is 100 ms here.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void func(const std::string& msg) {
  std::cout << "msg: " << msg << std::endl;
  std::this_thread::sleep_for(3 * kSecond);
  std::cout << "end" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Pool pool(3);
  for (int i = 0; i < 4; ++i) {
    std::string msg = "hello " + std::to_string(i);
    pool.apply_async(func, std::tuple{msg});
  }
  std::cout << "Mark~ Mark~ Mark~~~~~~~~~~~~~~~~~~~~~~" << std::endl;
  pool.close();
  pool.join();  // before close(): mpxx::ValueError, as in Python
  std::cout << "Sub-process(es) done." << std::endl;
}
