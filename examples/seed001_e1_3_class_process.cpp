// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例1.3：将进程定义为类
//
//   class ClockProcess(multiprocessing.Process):
//       def __init__(self, interval):
//           multiprocessing.Process.__init__(self)
//           self.interval = interval
//
//       def run(self):
//           n = 3
//           while n > 0:
//               print("the time is {0}".format(time.ctime()))
//               time.sleep(self.interval)
//               n -= 1
//
//   if __name__ == '__main__':
//       p = ClockProcess(2)
//       p.start()
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (interval 2 -> 200 ms). start() calls run() in the child; main does
// not join, the child is joined at program exit. (A subclass overriding run()
// needs the default 'fork' start method.)
#include <chrono>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

// time.ctime(): "Mon Nov  9 14:30:32 2015"
std::string ctime_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
  return buf;
}

class ClockProcess : public mpxx::Process {
 public:
  explicit ClockProcess(int interval) : mpxx::Process(), interval_(interval) {}

  void run() override {
    int n = 3;
    while (n > 0) {
      std::cout << "the time is " << ctime_now() << std::endl;
      std::this_thread::sleep_for(interval_ * kSecond);
      n -= 1;
    }
  }

 private:
  int interval_;
};

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  ClockProcess p(2);
  p.start();
}
