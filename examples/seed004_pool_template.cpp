// Mirrors /work/shared/seeds/004_54b26407610c32da.txt, 进程池 (Pool) 模版
//
//   def long_time_task(name):
//       print('Run task %s (%s)...' % (name, os.getpid()))
//       start = time.time()
//       time.sleep(random.random() * 3)
//       end = time.time()
//       print('Task %s runs %0.2f seconds.' % (name, (end - start)))
//
//   print('Parent process %s.' % os.getpid())
//   p = Pool(4)                 # four tasks at a time
//   for i in range(5):          # so the fifth waits for a free worker
//       p.apply_async(long_time_task, args=(i,))
//   print('Waiting for all subprocesses done...')
//   p.close()
//   p.join()
//   print('All subprocesses done.')
//
// Time is scaled down: one second of the seed is 100 ms here (the printed
// durations are the real ones).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <tuple>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void long_time_task(int name) {
  std::printf("Run task %d (%d)...\n", name, static_cast<int>(::getpid()));
  std::fflush(stdout);
  auto start = std::chrono::steady_clock::now();
  std::mt19937 gen{std::random_device{}()};
  std::this_thread::sleep_for(std::uniform_real_distribution<double>(0, 3)(gen) * kSecond);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("Task %d runs %0.2f seconds.\n", name, secs);
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::printf("Parent process %d.\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  mpxx::Pool p(4);
  for (int i = 0; i < 5; ++i) p.apply_async(long_time_task, std::tuple{i});
  std::printf("Waiting for all subprocesses done...\n");
  std::fflush(stdout);
  p.close();
  p.join();
  std::printf("All subprocesses done.\n");
}
