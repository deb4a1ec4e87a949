// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.2 (注意:补充内容) 3.如何开启多个子进程 4.如何给子进程传参
//
//   from multiprocessing import Process
//   import os
//   def func(name):
//       print('%s is start,id is %s,father id is %s'%(name,os.getpid(),os.getppid()))
//   if __name__ == '__main__':
//       for i in range(10):
//           p = Process(target= func,args= ('子进程%s'%i,))#这个时候传参里面必须是集合
//           p.start()#非阻塞,只要告诉系统开启就好,开启并不是真正的开启
//
// As in Python, the loop drops each Process object right after start(); the
// children keep running and are joined at program exit.
#include <unistd.h>

#include <iostream>
#include <string>

#include <mpxx/mpxx.hpp>

void func(const std::string& name) {
  std::cout << name << " is start,id is " << ::getpid() << ",father id is " << ::getppid()
            << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  for (int i = 0; i < 10; ++i) {
    mpxx::Process p(func, "子进程" + std::to_string(i));
    p.start();  // does not block
  }
}
