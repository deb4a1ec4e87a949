// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.2 进程id的查询, 第一种方式
//
//   from multiprocessing import Process
//   def func1(name):
//       print('%s is running'%name)
//       print('%s is done'%name)
//   if __name__ =='__main__':
//       p1 = Process(target= func1,args=('子进程1',))
//       p1.start()
//       print(p1.pid)
//       print('主')
#include <iostream>
#include <string>

#include <mpxx/mpxx.hpp>

void func1(const std::string& name) {
  std::cout << name << " is running" << std::endl;
  std::cout << name << " is done" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p1(func1, "子进程1");
  p1.start();
  std::cout << p1.pid() << std::endl;
  std::cout << "主" << std::endl;
}
