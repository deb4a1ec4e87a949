// Mirrors seed 001, 3. Semaphore 信号
//
//   def worker(s, i):
//       s.acquire()
//       print(multiprocessing.current_process().name + "acquire");
//       time.sleep(i)
//       print(multiprocessing.current_process().name + "release\n");
//       s.release()
//
//   if __name__ == "__main__":
//       s = multiprocessing.Semaphore(2)
//       for i in range(3):
//           p = multiprocessing.Process(target = worker, args=(s, i*2))
//           p.start()
//
// One second of the seed is 100 ms here. At most two workers hold the
// semaphore at once; the third acquires when the first releases. As in the
// seed, main does not join: mpxx joins the children at program exit, as
// Python does.
#include <chrono>
#include <iostream>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void worker(mpxx::Semaphore s, int i) {
  s.acquire();
  std::cout << mpxx::current_process().name() + "acquire" << std::endl;
  std::this_thread::sleep_for(i * kSecond);
  std::cout << mpxx::current_process().name() + "release\n" << std::endl;
  s.release();
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Semaphore s(2);
  for (int i = 0; i < 3; ++i) {
    mpxx::Process p(worker, s, i * 2);
    p.start();
  }
}
