// Mirrors /work/shared/seeds/004_54b26407610c32da.txt, 多进程模版 (多个子进程只需要for循环即可)
//
//   # 子进程要执行的代码
//   def run_proc(name):
//       print('Run child process %s (%s)...' % (name, os.getpid()))
//
//   if __name__=='__main__':
//       print('Parent process %s.' % os.getpid())
//       process_list = []
//       for i in range(10):
//           p = Process(target=run_proc, args=('test',))
//           print(f'{i}th Child process will start.')
//           p.start()	# 进程开始
//           process_list.append(p)
//       for p in process_list:
//           p.join()	# 等待进程结束
//       print('Done.')
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include <mpxx/mpxx.hpp>

// 子进程要执行的代码
void run_proc(const std::string& name) {
  std::cout << "Run child process " << name << " (" << ::getpid() << ")..." << std::endl;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::cout << "Parent process " << ::getpid() << "." << std::endl;

  std::vector<mpxx::Process> process_list;
  for (int i = 0; i < 10; ++i) {
    mpxx::Process p(run_proc, "test");
    std::cout << i << "th Child process will start." << std::endl;
    p.start();  // 进程开始
    process_list.push_back(std::move(p));
  }
  for (mpxx::Process& p : process_list) p.join();  // 等待进程结束

  std::cout << "Done." << std::endl;
}
