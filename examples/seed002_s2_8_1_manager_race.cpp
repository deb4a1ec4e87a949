// Mirrors seed 002, 2.8 进程间的数据共享, 方式一(失败): without a lock
//
//   def work(dict):
//       dict['count']-=1
//   if __name__ == '__main__':
//       m = Manager()
//       dic = m.dict({'count':100})
//       p_list =[]
//       for i in range(100):
//           p = Process(target=work,args=(dic,))
//           p_list.append(p)
//           p.start()
//       for p in p_list:
//           p.join()
//       print(dic['count'])
//
// `dic["count"] -= 1` is two round trips to the manager (read, then write),
// exactly as in Python, so processes that interleave lose updates: the
// result is usually above 0, and higher the more cores run the children.
// The next two examples fix it.
#include <iostream>
#include <string>
#include <vector>

#include <mpxx/mpxx.hpp>

void work(mpxx::DictProxy<std::string, int> dict) {
  dict["count"] -= 1;  // read, then write: not atomic
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto m = mpxx::Manager();
  auto dic = m.dict<std::string, int>({{"count", 100}});
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 100; ++i) {
    p_list.emplace_back(work, dic);
    p_list.back().start();
  }
  for (auto& p : p_list) p.join();
  std::cout << dic["count"] << std::endl;  // often not 0: updates were lost
}
