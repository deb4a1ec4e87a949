// Mirrors seed 002, 2.7 (2.0版本,使用JoinableQueue: daemon consumers)
//
//   def consumer(name,q):
//       while True:
//           msg = q.get()
//           if not msg :break
//           time.sleep(0.7)
//           print('%s 抢着吃了%s'%(name,msg))
//           q.task_done()#消费者告诉生产者他已经吃了一个
//   def producer(name,produce,q):
//       for i in range(20):
//           msg = '%s %s'%(produce,i)
//           q.put(msg)
//           print('%s 生产了%s'%(name,msg))
//           time.sleep(0.2)
//       q.join()#确保生产者生产的东西全部被吃完
//   if __name__ == '__main__':
//       q = JoinableQueue(5)
//       c1 = Process(target=consumer,args=('饭桶1',q)); c1.daemon = True
//       c2 = Process(target=consumer,args=('饭桶2',q)); c2.daemon = True
//       p1 = Process(target=producer,args=('生产者','包子',q))
//       p2 = Process(target=producer,args=('生产者','叉烧包',q))
//       for p in [c1,c2,p1,p2]: p.start()
//       p1.join(); p2.join()
//
// When both producers are done (every item task_done), main ends and the
// daemonic consumers are terminated with it. Sleeps are 1/10 of the seed's,
// and each producer makes 10 items instead of 20 to keep the tour short.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <mpxx/mpxx.hpp>

void consumer(std::string name, mpxx::JoinableQueue<std::string> q) {
  for (;;) {
    std::string msg = q.get();
    if (msg.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(70));
    std::cout << name << " 抢着吃了" << msg << std::endl;
    q.task_done();  // 消费者告诉生产者他已经吃了一个
  }
}

void producer(std::string name, std::string produce, mpxx::JoinableQueue<std::string> q) {
  for (int i = 0; i < 10; ++i) {
    std::string msg = produce + " " + std::to_string(i);
    q.put(msg);
    std::cout << name << " 生产了" << msg << std::endl;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  q.join();  // 确保生产者生产的东西全部被吃完
}

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  mpxx::JoinableQueue<std::string> q(5);
  mpxx::Process c1(consumer, "饭桶1", q);
  c1.set_daemon(true);  // 生产者生产完之后,消费者也没有存在的必要
  mpxx::Process c2(consumer, "饭桶2", q);
  c2.set_daemon(true);
  mpxx::Process p1(producer, "生产者", "包子", q);
  mpxx::Process p2(producer, "生产者", "叉烧包", q);
  for (mpxx::Process* p : {&c1, &c2, &p1, &p2}) p->start();
  p1.join();  // 确认所有的生产者已经全部生产全部数据
  p2.join();
}
