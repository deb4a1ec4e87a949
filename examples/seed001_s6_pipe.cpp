// Mirrors seed 001, 6. Pipe
//
//   def proc1(pipe):
//       while True:
//           for i in xrange(5):
//               print "send: %s" %(i)
//               pipe.send(i)
//               time.sleep(1)
//   def proc2(pipe):
//       while True:
//           print "proc2 rev:", pipe.recv()
//           time.sleep(1)
//   if __name__ == "__main__":
//       pipe = multiprocessing.Pipe()
//       p1 = multiprocessing.Process(target=proc1, args=(pipe[0],))
//       p2 = multiprocessing.Process(target=proc2, args=(pipe[1],))
//       p1.start(); p2.start(); p1.join(); p2.join()
//
// The seed's loops never end; here proc1 sends one round of five and proc2
// receives five. (Waiting for EOFError instead would need every copy of
// the sending end closed, including the one a forked proc2 inherits.)
// One second is 100 ms.
#include <chrono>
#include <iostream>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

void proc1(mpxx::Connection pipe) {
  for (int i = 0; i < 5; ++i) {
    std::cout << "send: " << i << std::endl;
    pipe.send(i);
    std::this_thread::sleep_for(kSecond);
  }
}

void proc2(mpxx::Connection pipe) {
  for (int i = 0; i < 5; ++i) {
    std::cout << "proc2 rev: " << pipe.recv<int>() << std::endl;
    std::this_thread::sleep_for(kSecond);
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto pipe = mpxx::Pipe();
  mpxx::Process p1(proc1, pipe.first);
  mpxx::Process p2(proc2, pipe.second);
  p1.start();
  p2.start();
  p1.join();
  p2.join();
}
