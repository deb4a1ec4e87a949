// Mirrors seed 002, 2.6 进程的同步控制--互斥锁 (未加锁的情况, without a lock)
//
//   def func(name):
//       print('1,%s is running'%name)
//       time.sleep(1)
//       print('2,%s is runing!'%name)
//       time.sleep(1)
//       print('3,%s is running'%name)
//   if __name__ =='__main__':
//       for i in range(3):
//           ret = Process(target= func,args=('%s子进程'%i,))
//           ret.start()
//
// One second of the seed is 100 ms here. The three processes' lines
// interleave: that is the point of the demo. As in the seed, main does not
// join: mpxx joins the children at program exit, as Python does.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void func(std::string name) {
  std::cout << "1," << name << " is running" << std::endl;
  std::this_thread::sleep_for(kSecond);
  std::cout << "2," << name << " is runing!" << std::endl;
  std::this_thread::sleep_for(kSecond);
  std::cout << "3," << name << " is running" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  for (int i = 0; i < 3; ++i) {
    mpxx::Process ret(func, std::to_string(i) + "子进程");
    ret.start();
  }
}
