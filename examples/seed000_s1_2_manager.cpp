// Mirrors seed 000, 1.2 multiprocessing, Manager
//
//   def func(d, l):
//       d['name'] = 'zhangchunhua'
//       d['age'] = 21
//       d['job'] = 'teacher'
//       l.reverse()
//
//   if __name__ == '__main__':
//       with Manager() as man:
//           d = man.dict()
//           l = man.list(range(10))
//           print(l)
//           p = Process(target=func, args=(d, l))
//           p.start()
//           p.join()
//           print(d)
//           print(l)
//
// The dict holds a std::variant so that, as in the seed, a name and an age
// live side by side; proxies print as Python prints the objects.
#include <iostream>
#include <ranges>
#include <string>
#include <variant>

#include <mpxx/mpxx.hpp>

using Field = std::variant<std::string, int>;

void func(mpxx::DictProxy<std::string, Field> d, mpxx::ListProxy<int> l) {
  d["name"] = Field("zhangchunhua");
  d["age"] = Field(21);
  d["job"] = Field("teacher");
  l.reverse();
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto man = mpxx::Manager();  // with Manager() as man: (shut down at the end of scope)
  auto d = man.dict<std::string, Field>();
  auto l = man.list(std::views::iota(0, 10));
  std::cout << l << std::endl;
  mpxx::Process p(func, d, l);
  p.start();
  p.join();
  std::cout << d << std::endl;
  std::cout << l << std::endl;
}
