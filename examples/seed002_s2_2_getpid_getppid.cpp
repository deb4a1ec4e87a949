// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.2 进程id的查询, 第二种方式
//
//   from multiprocessing import Process
//   import os
//   def func2(name):
//       print('%s is running'%name)
//       print('子进程为%s,父进程为%s'%(os.getpid(),os.getppid()))
//   if __name__ == '__main__':
//       p2 = Process(target= func2,args=('子进程1',))
//       p2.start()
//       print('主')
//       print('主进程为',os.getpid())
//
// The child prints the seed's line with getpid()/getppid(), then the same
// line again through mpxx's own handles: current_process() and
// parent_process() (Python 3.8+'s multiprocessing.parent_process()).
#include <unistd.h>

#include <iostream>
#include <optional>
#include <string>

#include <mpxx/mpxx.hpp>

void func2(const std::string& name) {
  std::cout << name << " is running" << std::endl;
  std::cout << "子进程为" << ::getpid() << ",父进程为" << ::getppid() << std::endl;
  // The same, with mpxx: parent_process() is std::nullopt only in the main program.
  mpxx::ProcessHandle me = mpxx::current_process();
  std::optional<mpxx::ProcessHandle> parent = mpxx::parent_process();
  std::cout << "子进程为" << me.pid() << ",父进程为" << (parent ? parent->pid() : 0) << "  ("
            << me.name() << " / " << (parent ? parent->name() : "None") << ")" << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Process p2(func2, "子进程1");
  p2.start();
  std::cout << "主" << std::endl;
  std::cout << "主进程为 " << ::getpid() << std::endl;
}
