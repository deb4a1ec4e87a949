// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例7.3：使用进程池，并关注结果
//
//   def func(msg):
//       print "msg:", msg
//       time.sleep(3)
//       print "end"
//       return "done" + msg
//
//   pool = multiprocessing.Pool(processes=4)
//   result = []
//   for i in xrange(3):
//       msg = "hello %d" %(i)
//       result.append(pool.apply_async(func, (msg, )))
//   pool.close()
//   pool.join()
//   for res in result:
//       print ":::", res.get()
//   print "Sub-process(es) done."
//
// Time is scaled down: one second of the seed is 100 ms here.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

std::string func(const std::string& msg) {
  std::cout << "msg: " << msg << std::endl;
  std::this_thread::sleep_for(3 * kSecond);
  std::cout << "end" << std::endl;
  return "done" + msg;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Pool pool(4);
  std::vector<mpxx::AsyncResult<std::string>> result;
  for (int i = 0; i < 3; ++i) {
    std::string msg = "hello " + std::to_string(i);
    result.push_back(pool.apply_async(func, std::tuple{msg}));
  }
  pool.close();
  pool.join();
  for (auto& res : result) std::cout << "::: " << res.get() << std::endl;
  std::cout << "Sub-process(es) done." << std::endl;
}
