// Mirrors /work/shared/seeds/002_223ff695fa4cd070.txt, 2.9.4.3 回调函数
//
//   # 正常版: results collected in submission order
//   def func(i):
//       print('爬取的网页的内容%s'%i)
//       time.sleep(random.random())
//       return len('网页大小!')*i
//   p = Pool(5)
//   ret_l = []
//   for i in range(10):
//       ret =p.apply_async(func,args =(i,))
//       ret_l.append(ret)
//   for ret in ret_l:
//       print(ret.get())
//
//   # 采用回调函数的版本: whichever page is fetched first is counted first
//   def func(i):                # in a worker
//       time.sleep(random.random())
//       print('爬取的网页的内容%s'%i)
//       return len('网页大小!')*i
//   def call_back(contact):     # in the main process
//       print(contact)
//   p = Pool(5)
//   for i in range(20):
//       ret =p.apply_async(func,args =(i,),callback=call_back)
//   p.close()
//   p.join()
//
// Time is scaled down: one second of the seed is 100 ms here.
#include <chrono>
#include <iostream>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include <mpxx/mpxx.hpp>

constexpr std::chrono::milliseconds kSecond{100};

// random.random(): each worker seeds its own generator.
double random_random() {
  thread_local std::mt19937 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

int fetch_then_sleep(int i) {
  std::cout << "爬取的网页的内容" << i << std::endl;
  std::this_thread::sleep_for(random_random() * kSecond);
  return 5 * i;  // len('网页大小!') * i
}

int sleep_then_fetch(int i) {
  std::this_thread::sleep_for(random_random() * kSecond);
  std::cout << "爬取的网页的内容" << i << std::endl;
  return 5 * i;
}

void call_back(int contact) { std::cout << contact << std::endl; }

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  std::cout << "# 正常版" << std::endl;
  {
    mpxx::Pool p(5);
    std::vector<mpxx::AsyncResult<int>> ret_l;
    for (int i = 0; i < 10; ++i) ret_l.push_back(p.apply_async(fetch_then_sleep, std::tuple{i}));
    for (auto& ret : ret_l) std::cout << ret.get() << std::endl;
    p.close();
    p.join();
  }
  std::cout << "# 采用回调函数的版本" << std::endl;
  {
    mpxx::Pool p(5);
    for (int i = 0; i < 20; ++i) p.apply_async(sleep_then_fetch, std::tuple{i}, {.callback = call_back});
    p.close();
    p.join();
  }
}
