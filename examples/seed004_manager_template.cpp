// Mirrors seed 004, Manager模版
//
//   def fun1(dic,lis,index):
//       dic[index] = 'a'
//       dic['2'] = 'b'
//       lis.append(index)    #[0,1,2,3,4,0,1,2,3,4,5,6,7,8,9]
//
//   if __name__ == '__main__':
//       with Manager() as manager:
//           dic = manager.dict()#注意字典的声明方式，不能直接通过{}来定义
//           l = manager.list(range(5))#[0,1,2,3,4]
//           process_list = []
//           for i in range(10):
//               p = Process(target=fun1, args=(dic,l,i))
//               p.start()
//               process_list.append(p)
//           for res in process_list:
//               res.join()
//           print(dic)
//           print(l)
//
// The seed's dict mixes int keys (index) and a str key ('2'); a
// std::variant key does the same. The order of the printed items follows
// the order in which the children ran, as in Python.
#include <iostream>
#include <ranges>
#include <string>
#include <variant>
#include <vector>

#include <mpxx/mpxx.hpp>

using Key = std::variant<int, std::string>;

void fun1(mpxx::DictProxy<Key, std::string> dic, mpxx::ListProxy<int> lis, int index) {
  dic[index] = "a";
  dic[std::string("2")] = "b";
  lis.append(index);  // [0,1,2,3,4,0,1,2,3,4,5,6,7,8,9] in some order
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto manager = mpxx::Manager();
  auto dic = manager.dict<Key, std::string>();  // 注意字典的声明方式
  auto l = manager.list(std::views::iota(0, 5));  // [0,1,2,3,4]
  std::vector<mpxx::Process> process_list;
  for (int i = 0; i < 10; ++i) {
    process_list.emplace_back(fun1, dic, l, i);
    process_list.back().start();
  }
  for (auto& res : process_list) res.join();
  std::cout << dic << std::endl;
  std::cout << l << std::endl;
}
