// Mirrors /work/shared/seeds/004_54b26407610c32da.txt, 多进程模版 (single child)
//
//   import os
//   from multiprocessing import Process
//
//   # 子进程要执行的代码
//   def run_proc(name):
//       print('Run child process %s (%s)...' % (name, os.getpid()))
//
//   if __name__=='__main__':
//       print('Parent process %s.' % os.getpid())
//       p = Process(target=run_proc, args=('test',))
//       print('Child process will start.')
//       p.start()	# 进程开始
//       p.join()	# 等待进程结束
//       print('Child process end.')
#include <unistd.h>

#include <iostream>
#include <string>

#include <mpxx/mpxx.hpp>

// 子进程要执行的代码
void run_proc(const std::string& name) {
  std::cout << "Run child process " << name << " (" << ::getpid() << ")..." << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::cout << "Parent process " << ::getpid() << "." << std::endl;
  mpxx::Process p(run_proc, "test");
  std::cout << "Child process will start." << std::endl;
  p.start();  // 进程开始
  p.join();   // 等待进程结束
  std::cout << "Child process end." << std::endl;
}
