// Seed 002, 2.8 once more, with neither a race nor a lock: the decrement
// runs on the manager's server as one step.
//
//   dic['count'] -= 1            # seed: two round trips, races
//   with lock: dic['count'] -= 1 # seed: correct, four round trips
//
// mpxx adds the atomic forms: d.fetch_add(key, n) for numbers, and
// d.update(key, fn) for any transferable function (here a captureless
// lambda), each one round trip. Half the processes use each.
#include <iostream>
#include <string>
#include <vector>

#include <mpxx/mpxx.hpp>

void work(mpxx::DictProxy<std::string, int> dict, int i) {
  if (i % 2)
    dict.fetch_add("count", -1);
  else
    dict.update("count", [](int v) { return v - 1; });
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  auto m = mpxx::Manager();
  auto dic = m.dict<std::string, int>({{"count", 100}});
  std::vector<mpxx::Process> p_list;
  for (int i = 0; i < 100; ++i) {
    p_list.emplace_back(work, dic, i);
    p_list.back().start();
  }
  for (auto& p : p_list) p.join();
  std::cout << dic["count"] << std::endl;  // 0, without a lock
}
