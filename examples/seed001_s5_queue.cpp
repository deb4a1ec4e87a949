// Mirrors seed 001, 5. Queue 队列,进程间数据传递
//
//   def writer_proc(q):
//       q.put(1, block = False)
//       ...
//   if __name__ == "__main__":
//       q = multiprocessing.Queue()
//       writer = multiprocessing.Process(target=writer_proc, args=(q,))
//       writer.start()
//       writer.join()
//       ...
//
// The seed elides the reader; here a reader process takes the item with
// get(block=False) after the writer is done, as the text describes, and
// then shows Empty when nothing is left.
#include <iostream>

#include <mpxx/mpxx.hpp>

void writer_proc(mpxx::Queue<int> q) {
  try {
    q.put(1, /*block=*/false);
  } catch (const mpxx::Full&) {
  }
}

void reader_proc(mpxx::Queue<int> q) {
  try {
    std::cout << q.get(/*block=*/false) << std::endl;
    q.get(false);
  } catch (const mpxx::Empty&) {
    std::cout << "Queue.Empty" << std::endl;
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Queue<int> q;
  mpxx::Process writer(writer_proc, q);
  writer.start();
  writer.join();
  mpxx::Process reader(reader_proc, q);
  reader.start();
  reader.join();
}
