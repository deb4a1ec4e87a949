// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.4 进程对象的其他属性 (p.join())
//
//   from multiprocessing import Process
//   def func(n):
//       print('发送邮件%s'%n)
//   if __name__ == '__main__':
//       p_list =[]
//       for i in range(10):
//           p = Process(target= func,args=(i,))
//           p_list.append(p)
//           p.start()
//       for p in p_list:
//           p.join()
//       print('全部邮件已经发送成功!')
//
// All ten children run concurrently; joining each one means the last line
// comes after every '发送邮件n'.
#include <iostream>
#include <vector>

#include <mpxx/mpxx.hpp>

void func(int n) { std::cout << "发送邮件" << n << std::endl; }

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 10; ++i) {
    mpxx::Process p(func, i);
    p.start();
    p_list.push_back(std::move(p));
  }
  for (mpxx::Process& p : p_list) p.join();
  std::cout << "全部邮件已经发送成功!" << std::endl;
}
