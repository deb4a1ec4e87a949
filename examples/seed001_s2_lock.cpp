// Mirrors seed 001, 2. Lock 锁
//
//   def worker_with(lock, f):
//       with lock:
//           fs = open(f, 'a+')
//           n = 5
//           while n > 1:
//               fs.write("Lockd acquired via with\n")
//               n -= 1
//           fs.close()
//
//   def worker_no_with(lock, f):
//       lock.acquire()
//       try:
//           fs = open(f, 'a+')
//           ... fs.write("Lock acquired directly\n") ...
//       finally:
//           lock.release()
//
//   if __name__ == "__main__":
//       lock = multiprocessing.Lock()
//       f = "file.txt"
//       w = multiprocessing.Process(target = worker_with, args=(lock, f))
//       nw = multiprocessing.Process(target = worker_no_with, args=(lock, f))
//       w.start()
//       nw.start()
//       print "end"
//
// `with lock:` is std::scoped_lock; acquire/try/finally/release is spelled
// out as in the seed. Not in the seed: main removes any stale file.txt
// first, and at the end joins the writers, prints file.txt (the seed shows
// its content as the result) and removes it.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>

#include <mpxx/mpxx.hpp>

void worker_with(mpxx::Lock lock, std::string f) {
  std::scoped_lock with(lock);
  std::ofstream fs(f, std::ios::app);
  int n = 5;
  while (n > 1) {
    fs << "Lockd acquired via with\n";
    n -= 1;
  }
}

void worker_no_with(mpxx::Lock lock, std::string f) {
  lock.acquire();
  try {
    std::ofstream fs(f, std::ios::app);
    int n = 5;
    while (n > 1) {
      fs << "Lock acquired directly\n";
      n -= 1;
    }
  } catch (...) {
    lock.release();
    throw;
  }
  lock.release();
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Lock lock;
  std::string f = "file.txt";
  std::remove(f.c_str());
  mpxx::Process w(worker_with, lock, f);
  mpxx::Process nw(worker_no_with, lock, f);
  w.start();
  nw.start();
  std::cout << "end" << std::endl;

  // Not in the seed: wait for the writers, show the file, clean up.
  w.join();
  nw.join();
  std::ifstream in(f);
  std::cout << in.rdbuf();
  std::remove(f.c_str());
}
