// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例1.1：创建函数并将其作为单个进程
//
//   def worker(interval):
//       n = 3
//       while n > 0:
//           print("The time is {0}".format(time.ctime()))
//           time.sleep(interval)
//           n -= 1
//
//   if __name__ == "__main__":
//       p = multiprocessing.Process(target = worker, args = (2,))
//       p.start()
//       print "p.pid:", p.pid
//       print "p.name:", p.name
//       print "p.is_alive:", p.is_alive()
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (interval 2 -> 200 ms), so consecutive times may show the same second.
// As in Python, main does not join: the child is joined at program exit.
#include <chrono>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

// time.ctime(): "Mon Nov  9 14:12:46 2015"
std::string ctime_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
  return buf;
}

void worker(int interval) {
  int n = 3;
  while (n > 0) {
    std::cout << "The time is " << ctime_now() << std::endl;
    std::this_thread::sleep_for(interval * kSecond);
    n -= 1;
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p(worker, 2);
  p.start();
  std::cout << "p.pid: " << p.pid() << std::endl;
  std::cout << "p.name: " << p.name() << std::endl;
  std::cout << "p.is_alive: " << (p.is_alive() ? "True" : "False") << std::endl;
}
