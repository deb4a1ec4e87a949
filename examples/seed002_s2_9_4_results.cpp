// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.9.4 进程池的返回值
//
//   # 2.9.4.1 普通函数方法
//   def func(i):
//       print('爬取的网页内容%s'%i)
//       return len('网页大小!')*i
//   p = Pool(5)
//   ret_l =[]
//   for i in range(10):
//       ret =p.apply_async(func,args =(i,))
//       ret_l.append(ret)
//   for ret in ret_l:
//       print(ret.get())
//   p.close(); p.join()
//
//   # 2.9.4.2 map函数方法
//   p = Pool(5)
//   ret =p.map(func,range(10))
//   for i in ret:
//       print(i)
//
// len('网页大小!') is 5 characters in Python; the C++ twin counts the same
// five code points.
#include <iostream>
#include <ranges>
#include <string>
#include <tuple>
#include <vector>

#include <mpxx/mpxx.hpp>

int func(int i) {
  std::cout << "爬取的网页内容" << i << std::endl;
  const int page_size = 5;  // len('网页大小!')
  return page_size * i;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  {
    mpxx::Pool p(5);
    std::vector<mpxx::AsyncResult<int>> ret_l;
    for (int i = 0; i < 10; ++i) ret_l.push_back(p.apply_async(func, std::tuple{i}));
    for (auto& ret : ret_l) std::cout << ret.get() << std::endl;
    p.close();
    p.join();
  }
  {
    mpxx::Pool p(5);
    std::vector<int> ret = p.map(func, std::views::iota(0, 10));
    for (int i : ret) std::cout << i << std::endl;
  }
}
