// Mirrors seed 002, 2.6 模拟一次抢票的过程 (ten buyers, one ticket file)
//
//   def show_ticket(name):
//       with open('test.txt','r')as f1:
//           file =json.load(f1)
//       if file['number'] >=0:
//           print('%s 查询余票数量,余票数量为%s'%(name,file['number']))
//       else:
//           print('%s 查询余票数量,余票为0')
//   def get_ticket(name):
//       with open('test.txt','r')as f1:
//           file = json.load(f1)
//       time.sleep(0.2)
//       if file['number'] >0:
//           file['number'] -= 1
//           print('%s 购票成功!'%name)
//       else:
//           print('余票不足,%s 购票失败'%name)
//       time.sleep(0.2)
//       with open('test.txt', 'w')as f2:
//           json.dump(file, f2)
//   def func(name,lock):
//       show_ticket(name)
//       lock.acquire()
//       get_ticket(name)
//       lock.release()
//   if __name__ == '__main__':
//       lock = Lock()
//       for i in range(10):
//           p = Process(target=func,args= ('购票者%s'%i,lock))
//           p.start()
//
// The seed starts from an existing test.txt; here main writes
// {"number": 3} first (and removes the file at the end). The sleeps are
// 20 ms instead of 0.2 s. Querying is unlocked, buying is locked: every
// buyer sees some tickets left, but exactly three buy one.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kPause{20};
const char* const kFile = "test.txt";

// The one-field JSON object of the seed: {"number": N}.
int load_number() {
  std::ifstream f(kFile);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  auto colon = text.find(':');
  if (text.find("\"number\"") == std::string::npos || colon == std::string::npos)
    throw std::runtime_error("test.txt is not {\"number\": N}");
  return std::stoi(text.substr(colon + 1));
}

void dump_number(int n) { std::ofstream(kFile) << "{\"number\": " << n << "}"; }

void show_ticket(const std::string& name) {
  int number = load_number();
  if (number >= 0)
    std::cout << name << " 查询余票数量,余票数量为" << number << std::endl;
  else
    std::cout << "%s 查询余票数量,余票为0" << std::endl;  // (sic: the seed's message)
}

void get_ticket(const std::string& name) {
  int number = load_number();
  std::this_thread::sleep_for(kPause);
  if (number > 0) {
    number -= 1;
    std::cout << name << " 购票成功!" << std::endl;
  } else {
    std::cout << "余票不足," << name << " 购票失败" << std::endl;
  }
  std::this_thread::sleep_for(kPause);
  dump_number(number);
}

void func(std::string name, mpxx::Lock lock) {
  show_ticket(name);
  lock.acquire();
  get_ticket(name);
  lock.release();
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  dump_number(3);
  mpxx::Lock lock;
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 10; ++i) {
    p_list.emplace_back(func, "购票者" + std::to_string(i), lock);
    p_list.back().start();
  }
  for (auto& p : p_list) p.join();  // (added: so the file can be checked and removed)
  std::cout << "余票: " << load_number() << std::endl;
  std::remove(kFile);
}
