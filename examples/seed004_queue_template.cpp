// Mirrors seed 004, 进程间通信 / Queue模版
//
//   def func_input(input_queue, name_list, i):
//       for name in name_list:
//           print(f"process {i} put data {name}")
//           input_queue.put(name)
//           time.sleep(1)
//       input_queue.put('quit')
//       print('exit input.')
//   def func_get(get_queue, i):
//       while True:
//           if not get_queue.empty():
//               name = get_queue.get()
//               if name == 'quit':
//                   get_queue.put('quit')
//                   print('exit get.')
//                   break
//               print(f"process {i} get data {name}")
//   if __name__ == "__main__":
//       queue = Queue()
//       name_lists = [['a', 'b', 'c'], ['d', 'e', 'f'], ['g', 'h']]
//       num_put_jobs = 2
//       num_get_jobs = 3
//       ... start 2 func_input and 3 func_get processes, join them all ...
//       print("Done.")
//
// One second is 100 ms. As in the seed, a reader checks empty() before
// get(); since another reader may take the item in between, get() here uses
// a short timeout instead of blocking forever (the seed's own race).
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <mpxx/mpxx.hpp>

void func_input(mpxx::Queue<std::string> input_queue, std::vector<std::string> name_list, int i) {
  for (const std::string& name : name_list) {
    std::cout << "process " << i << " put data " << name << std::endl;
    input_queue.put(name);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  input_queue.put("quit");
  std::cout << "exit input." << std::endl;
}

void func_get(mpxx::Queue<std::string> get_queue, int i) {
  for (;;) {
    if (get_queue.empty()) {
      std::this_thread::yield();
      continue;
    }
    std::string name;
    try {
      name = get_queue.get(std::chrono::milliseconds(10));
    } catch (const mpxx::Empty&) {
      continue;
    }
    if (name == "quit") {
      get_queue.put("quit");
      std::cout << "exit get." << std::endl;
      break;
    }
    std::cout << "process " << i << " get data " << name << std::endl;
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Queue<std::string> queue;
  std::vector<std::vector<std::string>> name_lists = {{"a", "b", "c"}, {"d", "e", "f"}, {"g", "h"}};
  const int num_put_jobs = 2;
  const int num_get_jobs = 3;
  std::vector<mpxx::Process> process_list;
  for (int i = 0; i < num_put_jobs; ++i) {
    process_list.emplace_back(func_input, queue, name_lists[static_cast<std::size_t>(i)], i);
    process_list.back().start();
  }
  for (int i = 0; i < num_get_jobs; ++i) {
    // 注意args里面要把q对象传给我们要执行的方法,这样子进程才能和主进程用Queue来通信
    process_list.emplace_back(func_get, queue, i + num_put_jobs);
    process_list.back().start();
  }
  for (auto& p : process_list) p.join();
  std::cout << "Done." << std::endl;
}
