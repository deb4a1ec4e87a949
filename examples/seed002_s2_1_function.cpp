// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.1 进程创建的俩种方式, 方式一:调用直接模块实现
//
//   import time
//   from multiprocessing import Process
//   def funk(name):
//       print('%s is running!'%name)
//       time.sleep(2)
//       print('%s is done!'%name)
//   if __name__ == '__main__':
//       p1 = Process(target= funk,args=('子进程1',))
//       p1.start()
//       print('主')
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (sleep 2 -> 200 ms). start() does not wait, so '主' usually comes
// first; the child is joined at program exit.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

void funk(const std::string& name) {
  std::cout << name << " is running!" << std::endl;
  std::this_thread::sleep_for(2 * kSecond);
  std::cout << name << " is done!" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p1(funk, "子进程1");
  p1.start();
  std::cout << "主" << std::endl;
}
