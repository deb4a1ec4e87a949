// Mirrors seed 002, 2.8 进程间的数据共享, 方式二: with a Lock
//
//   def work(dict,lock):
//       with lock:#也可以用这个,上下文管理机制
//           dict['count']-=1
//   if __name__ == '__main__':
//       lock = Lock()
//       m = Manager()
//       dic = m.dict({'count':100})
//       p_list =[]
//       for i in range(100):
//           p = Process(target=work,args=(dic,lock))
//           p_list.append(p)
//           p.start()
//       for p in p_list:
//           p.join()
//       print(dic['count'])
//
// The lock makes the read and the write one step: the result is always 0.
// As in the seed, the lock is an mpxx::Lock in shared memory (a manager's
// Lock() would work too, at one round trip per acquire and release).
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include <mpxx/mpxx.hpp>

void work(mpxx::DictProxy<std::string, int> dict, mpxx::Lock lock) {
  std::scoped_lock g(lock);  // with lock:
  dict["count"] -= 1;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Lock lock;
  auto m = mpxx::Manager();
  auto dic = m.dict<std::string, int>({{"count", 100}});
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 100; ++i) {
    p_list.emplace_back(work, dic, lock);
    p_list.back().start();
  }
  for (auto& p : p_list) p.join();
  std::cout << dic["count"] << std::endl;  // 0
}
