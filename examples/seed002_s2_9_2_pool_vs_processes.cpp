// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.9.2 进程池以及多进程的性能测试
//
//   def func(i):
//       print(i,os.getpid())
//
//   start_time = time.time()
//   p_list =[]
//   for i in range(100):
//       p = Process(target= func,args=(i,))
//       p_list .append(p)
//       p.start()
//   for p in p_list:
//       p.join()
//   process_time = time.time()-start_time
//
//   start_time = time.time()
//   p =Pool(4)
//   for i in range(20):
//       p.apply_async(func,args=(i,))
//   p.close()
//   p.join()
//   pool_time = time.time()-start_time
//   print(process_time,pool_time)
//
// The seed measured 7.38 s against 0.44 s in Python. `./run bench` runs the
// same experiment for mpxx and CPython side by side.
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <tuple>
#include <vector>

#include <mpxx/mpxx.hpp>

void func(int i) { std::cout << i << " " << ::getpid() << std::endl; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto start_time = std::chrono::steady_clock::now();
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 100; ++i) {
    p_list.emplace_back(func, i);
    p_list.back().start();
  }
  for (auto& p : p_list) p.join();
  double process_time = seconds_since(start_time);

  start_time = std::chrono::steady_clock::now();
  mpxx::Pool p(4);
  for (int i = 0; i < 20; ++i) p.apply_async(func, std::tuple{i});
  p.close();
  p.join();
  double pool_time = seconds_since(start_time);
  std::cout << process_time << " " << pool_time << std::endl;
}
