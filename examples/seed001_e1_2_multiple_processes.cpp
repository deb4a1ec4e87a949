// Mirrors /work/shared/seeds/001_3bb88aa2fe4081f0.txt, 例1.2：创建函数并将其作为多个进程
//
//   def worker_1(interval):
//       print "worker_1"
//       time.sleep(interval)
//       print "end worker_1"
//
//   def worker_2(interval):
//       print "worker_2"
//       time.sleep(interval)
//       print "end worker_2"
//
//   if __name__ == "__main__":
//       p1 = multiprocessing.Process(target = worker_1, args = (2,))
//       p2 = multiprocessing.Process(target = worker_2, args = (3,))
//       p1.start()
//       p2.start()
//       print("The number of CPU is:" + str(multiprocessing.cpu_count()))
//       for p in multiprocessing.active_children():
//           print("child   p.name:" + p.name + "\tp.id" + str(p.pid))
//       print "END!!!!!!!!!!!!!!!!!"
//
// Time is scaled down so the tour runs fast: one second of the seed is 100 ms
// here (intervals 2 and 3 -> 200 ms and 300 ms). As in Python, main does not
// join: both workers are joined at program exit, after "END!!!...".
#include <chrono>
#include <iostream>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};  // one "second" of the seed

void worker_1(int interval) {
  std::cout << "worker_1" << std::endl;
  std::this_thread::sleep_for(interval * kSecond);
  std::cout << "end worker_1" << std::endl;
}

void worker_2(int interval) {
  std::cout << "worker_2" << std::endl;
  std::this_thread::sleep_for(interval * kSecond);
  std::cout << "end worker_2" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p1(worker_1, 2);
  mpxx::Process p2(worker_2, 3);

  p1.start();
  p2.start();

  std::cout << "The number of CPU is:" << mpxx::cpu_count() << std::endl;
  for (const mpxx::ProcessHandle& p : mpxx::active_children())
    std::cout << "child   p.name:" << p.name() << "\tp.id" << p.pid() << std::endl;
  std::cout << "END!!!!!!!!!!!!!!!!!" << std::endl;
}
