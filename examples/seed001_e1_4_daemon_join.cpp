// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例1.4：daemon程序对比结果
//
//   def worker(interval):
//       print("work start:{0}".format(time.ctime()));
//       time.sleep(interval)
//       print("work end:{0}".format(time.ctime()));
//
//   if __name__ == "__main__":
//       p = multiprocessing.Process(target = worker, args = (3,))
//       p.daemon = True
//       p.start()
//       p.join()
//       print "end!"
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (interval 3 -> 300 ms), so start and end may show the same second.
// The daemon must be set before start(); join() makes main wait for it, so
// "work end" is printed before "end!" (without join, the daemon would be
// terminated when main ends).
#include <chrono>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

// time.ctime(): "Mon Nov  9 14:37:07 2015"
std::string ctime_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
  return buf;
}

void worker(int interval) {
  std::cout << "work start:" << ctime_now() << std::endl;
  std::this_thread::sleep_for(interval * kSecond);
  std::cout << "work end:" << ctime_now() << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p(worker, 3);
  p.set_daemon(true);  // p.daemon = True  (must come before start())
  p.start();
  p.join();
  std::cout << "end!" << std::endl;
}
