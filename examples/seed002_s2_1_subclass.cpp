// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.1 进程创建的俩种方式, 方式二:自建类
//
//   import time
//   from multiprocessing import Process
//   class MyProcess(Process):
//       def __init__(self,name):
//           super().__init__()
//           self.name = name
//       def run(self):#这里必须是RUN函数,否则无法调用
//           print('%s is running!'%self.name)
//           time.sleep(2)
//           print('%s is done!'%self.name)
//   if __name__ == '__main__':
//       p1 = MyProcess('子进程1')
//       p1.start()
//       print('主进程!')
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (sleep 2 -> 200 ms). The child is joined at program exit. (A subclass
// overriding run() needs the default 'fork' start method.)
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

class MyProcess : public mpxx::Process {
 public:
  explicit MyProcess(std::string name) : mpxx::Process() {
    set_name(std::move(name));  // self.name = name
  }

  void run() override {  // must be run(): start() calls it in the child
    std::cout << name() << " is running!" << std::endl;
    std::this_thread::sleep_for(2 * kSecond);
    std::cout << name() << " is done!" << std::endl;
  }
};

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  MyProcess p1("子进程1");
  p1.start();
  std::cout << "主进程!" << std::endl;
}
