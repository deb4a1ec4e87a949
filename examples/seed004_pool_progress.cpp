// Mirrors /work/shared/seeds/004_54b26407610c32da.txt: "多进程处理数据也可以
// 显示进度条" - multiprocessing with a progress bar, which Python users get
// from tqdm:
//
//   with Pool(4) as pool:
//       for r in tqdm(pool.imap(work, range(200)), total=200):
//           ...
//
// In mpxx the bar is an option of map / imap / imap_unordered / starmap:
// `.progress = true` draws it on stderr when stderr is a terminal and stays
// silent otherwise (logs, pipes); Progress::always() draws it regardless, as
// here, so the tour shows it even when its output is captured.
#include <chrono>
#include <iostream>
#include <ranges>
#include <thread>

#include <mpxx/mpxx.hpp>

int work(int i) {
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return i * i;
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Pool pool(4);
  long total = 0;
  for (int r : pool.imap(work, std::views::iota(0, 200), {.progress = mpxx::Progress::always()})) total += r;
  std::cout << "sum of squares: " << total << std::endl;
  auto v = pool.map(work, std::views::iota(0, 200), {.chunksize = 5, .progress = mpxx::Progress::always()});
  std::cout << "map returned " << v.size() << " results" << std::endl;
}
