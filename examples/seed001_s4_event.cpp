// Mirrors seed 001, 4. Event 进程间同步
//
//   def wait_for_event(e):
//       print("wait_for_event: starting")
//       e.wait()
//       print("wairt_for_event: e.is_set()->" + str(e.is_set()))
//
//   def wait_for_event_timeout(e, t):
//       print("wait_for_event_timeout:starting")
//       e.wait(t)
//       print("wait_for_event_timeout:e.is_set->" + str(e.is_set()))
//
//   if __name__ == "__main__":
//       e = multiprocessing.Event()
//       w1 = multiprocessing.Process(name = "block", target = wait_for_event, args = (e,))
//       w2 = multiprocessing.Process(name = "non-block", target = wait_for_event_timeout, args = (e, 2))
//       w1.start()
//       w2.start()
//       time.sleep(3)
//       e.set()
//       print("main: event is set")
//
// One second of the seed is 100 ms here. As in the seed, main does not join:
// mpxx joins the children at program exit, as Python does.
#include <chrono>
#include <iostream>
#include <thread>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

const char* str(bool b) { return b ? "True" : "False"; }

void wait_for_event(mpxx::Event e) {
  std::cout << "wait_for_event: starting" << std::endl;
  e.wait();
  std::cout << "wairt_for_event: e.is_set()->" << str(e.is_set()) << std::endl;
}

void wait_for_event_timeout(mpxx::Event e, int t) {
  std::cout << "wait_for_event_timeout:starting" << std::endl;
  e.wait(t * kSecond);
  std::cout << "wait_for_event_timeout:e.is_set->" << str(e.is_set()) << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Event e;
  mpxx::Process w1({.name = "block"}, wait_for_event, e);
  mpxx::Process w2({.name = "non-block"}, wait_for_event_timeout, e, 2);
  w1.start();
  w2.start();
  std::this_thread::sleep_for(3 * kSecond);
  e.set();
  std::cout << "main: event is set" << std::endl;
}
