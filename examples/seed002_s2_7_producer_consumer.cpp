// Mirrors seed 002, 2.7 生产者消费者模型 (Queue(5) with None as the end mark)
//
//   def consumer(name,q):
//       while True:
//           msg = q.get()#get 会阻塞,直到队列中有一个数据
//           if not msg :break
//           time.sleep(0.7)
//           print('%s 抢着吃了%s'%(name,msg))
//   def producer(name,produce,q):
//       for i in range(20):
//           msg = '%s %s'%(produce,i)
//           q.put(msg)#由于整个队列大小只有5,在最大数量时,阻塞
//           print('%s 生产了%s'%(name,msg))
//           time.sleep(0.2)
//   if __name__ == '__main__':
//       q = Queue(5)
//       p1 = Process(target=consumer,args=('饭桶1',q))
//       p2 = Process(target=consumer,args=('饭桶2',q))
//       p3 = Process(target=producer,args=('生产者','包子',q))
//       p3.start(); p1.start(); p2.start()
//       p3.join()#确认所有的生产者已经全部生产全部数据
//       q.put(None)#发送最终标志位,确认消费者收到明确的标志
//       q.put(None)
//
// None is the empty optional here. Sleeps are 1/10 of the seed's.
#include <chrono>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

using Msg = std::optional<std::string>;

void consumer(std::string name, mpxx::Queue<Msg> q) {
  for (;;) {
    Msg msg = q.get();  // get 会阻塞,直到队列中有一个数据
    if (!msg) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(70));
    std::cout << name << " 抢着吃了" << *msg << std::endl;
  }
}

void producer(std::string name, std::string produce, mpxx::Queue<Msg> q) {
  for (int i = 0; i < 20; ++i) {
    std::string msg = produce + " " + std::to_string(i);
    q.put(msg);  // 由于整个队列大小只有5,在最大数量时,阻塞
    std::cout << name << " 生产了" << msg << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::Queue<Msg> q(5);
  mpxx::Process p1(consumer, "饭桶1", q);
  mpxx::Process p2(consumer, "饭桶2", q);
  mpxx::Process p3(producer, "生产者", "包子", q);
  p3.start();
  p1.start();
  p2.start();
  p3.join();         // 确认所有的生产者已经全部生产全部数据
  q.put(std::nullopt);  // 发送最终标志位,确认消费者收到明确的标志
  q.put(std::nullopt);
}
