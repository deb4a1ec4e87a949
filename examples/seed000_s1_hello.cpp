// Mirrors /work/shared/seeds/000_3a908d496bf0d478.txt, §1 (multiprocessing模块):
//
//   from multiprocessing import Process
//
//   def func(name):
//       print('hello', name)
//
//   if __name__ == '__main__':
//       p = Process(target=func, args=('guoguoguo',))
//       p.start()
//       p.join()
#include <iostream>
#include <string>

#include <mpxx/mpxx.hpp>

void func(const std::string& name) { std::cout << "hello " << name << std::endl; }

int main(int argc, char** argv) {
  mpxx::init(argc, argv);  // if __name__ == '__main__':
  mpxx::Process p(func, "guoguoguo");
  p.start();
  p.join();
}
