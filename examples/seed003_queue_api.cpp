// Mirrors seed 003, 进程间通信 / Queue: the API the text walks through.
//
//   q = Queue(3)          # at most 3 messages
//   q.put("消息1"); q.put("消息2"); print(q.full())    # False
//   q.put("消息3"); print(q.full())                     # True
//   try: q.put("消息4", True, 2)   except Full: print("消息列队已满,现有消息数量:%s" % q.qsize())
//   try: q.put_nowait("消息4")     except Full: ...
//   if not q.empty(): for i in range(q.qsize()): print(q.get_nowait())
//   try: q.get(True, 2) / q.get_nowait() except Empty: ...
//
// The timeouts are 200 ms instead of 2 s.
#include <chrono>
#include <iostream>
#include <string>

#include <mpxx/mpxx.hpp>

int main(int argc, char** argv) {
  mpxx::init(argc, argv);
  using namespace std::chrono_literals;
  mpxx::Queue<std::string> q(3);  // 初始化一个Queue对象,最多可接收三条put消息
  q.put("消息1");
  q.put("消息2");
  std::cout << std::boolalpha << q.full() << std::endl;  // false
  q.put("消息3");
  std::cout << q.full() << std::endl;  // true

  // 因为消息列队已满: put(block, timeout) waits, then raises Full.
  try {
    q.put("消息4", 200ms);
  } catch (const mpxx::Full&) {
    std::cout << "消息列队已满,现有消息数量:" << q.qsize() << std::endl;
  }
  try {
    q.put_nowait("消息4");
  } catch (const mpxx::Full&) {
    std::cout << "消息列队已满,现有消息数量:" << q.qsize() << std::endl;
  }

  // 推荐的方式,先判断消息列队是否已满,再写入
  if (!q.full()) q.put_nowait("消息4");

  // 读取消息时,先判断消息列队是否为空,再读取
  if (!q.empty()) {
    for (auto n = q.qsize(); n > 0; --n) std::cout << q.get_nowait() << std::endl;
  }
  try {
    q.get(200ms);
  } catch (const mpxx::Empty&) {
    std::cout << "消息列队为空" << std::endl;
  }
  try {
    q.get_nowait();
  } catch (const mpxx::Empty&) {
    std::cout << "消息列队为空" << std::endl;
  }
}
