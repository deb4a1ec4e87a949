// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.5 守护进程
//
//   #守护进程小测试,设定守护进程对主函数以及子进程都守护!
//   from multiprocessing import Process
//   import time
//   def eye():
//       while True:
//           print('SERVER,我很好!')
//           time.sleep(1)
//   def func2():
//       print('进程2要做的事情!')
//       time.sleep(8)
//       print('进程2已经结束!')
//   def main():
//       print('做我主要的事情')
//       time.sleep(5)
//       print('done')
//   if __name__ == '__main__':
//       p = Process(target= eye,)
//       p2 = Process(target=func2)
//       p.daemon = True
//       p.start()
//       p2.start()
//       main()
//       p2.join()
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (1 s, 8 s, 5 s -> 100 ms, 800 ms, 500 ms). The daemon `eye` reports
// about eight times, while main waits for p2; when main's code ends the daemon
// is terminated (it never ends by itself).
#include <chrono>
#include <iostream>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

void eye() {
  while (true) {
    std::cout << "SERVER,我很好!" << std::endl;
    std::this_thread::sleep_for(1 * kSecond);
  }
}

void func2() {
  std::cout << "进程2要做的事情!" << std::endl;
  std::this_thread::sleep_for(8 * kSecond);
  std::cout << "进程2已经结束!" << std::endl;
}

void main_work() {  // the seed's main()
  std::cout << "做我主要的事情" << std::endl;
  std::this_thread::sleep_for(5 * kSecond);
  std::cout << "done" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p(eye);
  mpxx::Process p2(func2);
  p.set_daemon(true);  // p.daemon = True
  p.start();
  p2.start();
  main_work();
  p2.join();
}
