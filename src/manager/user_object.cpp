// src/manager/user_object.cpp - the manager server's objects of registered
// types: made by the registered factory, called through the registered
// method operations (only the exposed ones when the registration names
// some), one call at a time per object unless the registration allows
// overlapping calls.
#include <algorithm>
#include <mutex>

#include "manager/object.hpp"

namespace mpxx::detail::mgr {

namespace {

struct UserObj : Obj {
  std::shared_ptr<void> obj;
  std::shared_ptr<std::mutex> mu;  // one per T object, however many ids name it; null: calls overlap
  const Registration* reg;         // lives as long as the server
  UserObj(std::shared_ptr<void> o, std::uint64_t tag, std::shared_ptr<std::mutex> m, const Registration* r)
      : Obj(Kind::user), obj(std::move(o)), mu(std::move(m)), reg(r) {
    type_tag = tag;
  }
  void check_exposed(std::uint64_t op_id) const override {
    if (!reg->exposed.empty() && std::find(reg->exposed.begin(), reg->exposed.end(), op_id) == reg->exposed.end())
      throw ProtocolError("mpxx: '" + reg->type_id + "' does not expose this method");
  }
  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::method || op.type_tag != type_tag) Obj::typed(ctx, op, in, out);
    std::unique_lock<std::mutex> lk;
    if (mu) lk = std::unique_lock(*mu);
    op.method(obj.get(), in, out);
  }
};

}  // namespace

std::shared_ptr<std::mutex> CallMutexes::of(const void* obj) {
  std::lock_guard g(mu_);
  if (mutexes_.size() > 64)
    std::erase_if(mutexes_, [](const auto& kv) { return kv.second.expired(); });
  auto& w = mutexes_[obj];
  auto m = w.lock();
  if (!m) w = m = std::make_shared<std::mutex>();
  return m;
}

std::shared_ptr<Obj> make_user(const Registration& reg, wire::Reader& in, CallMutexes& mutexes) {
  wire::Reader state(std::as_bytes(std::span(reg.factory.data(), reg.factory.size())));
  const OpDef* op = find_op(state.pod<std::uint64_t>());
  if (!op || op->kind != OpKind::factory)
    throw ProtocolError("mpxx: the factory of '" + reg.type_id + "' is not in this program");
  auto obj = op->factory(state, in);
  if (!obj) throw ValueError("mpxx: the factory of '" + reg.type_id + "' returned a null pointer");
  auto m = reg.serialize_calls ? mutexes.of(obj.get()) : nullptr;
  return std::make_shared<UserObj>(std::move(obj), op->type_tag, std::move(m), &reg);
}

}  // namespace mpxx::detail::mgr
