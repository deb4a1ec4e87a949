// src/manager/containers.cpp - the manager server's containers: dict (an
// insertion-ordered hash of blobs), list and Array (a vector of blobs; an
// Array's size is fixed), Namespace (named attributes) and Value (one blob).
// Each guards its contents with a mutex of its own and never blocks.
#include <algorithm>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "manager/object.hpp"

namespace mpxx::detail::mgr {

namespace {

// ------------------------------------------------------------------- dict

struct Dict : Obj {
  std::mutex mu;
  std::vector<std::optional<std::pair<Blob, Blob>>> entries;  // insertion order, holes
  std::unordered_map<Blob, std::size_t> index;
  Dict() : Obj(Kind::dict) {}
  ~Dict() override {
    each([&](auto& e) {
      release(e.first);
      release(e.second);
    });
  }

  std::pair<Blob, Blob>* find(const Blob& k) {
    auto it = index.find(k);
    return it == index.end() ? nullptr : &*entries[it->second];
  }
  // Stores k: v, whose ids are kept already (Obj::keep).
  void set(Blob k, Blob v) {
    if (auto* e = find(k)) {
      release(k);  // the stored key holds the same
      release(e->second);
      e->second = std::move(v);
      return;
    }
    index.emplace(k, entries.size());
    entries.emplace_back(std::pair{std::move(k), std::move(v)});
  }
  // Removes k; its value is the caller's to release or hand over, and so is
  // the stored key when key_out asks for it.
  std::optional<Blob> take(const Blob& k, Blob* key_out = nullptr) {
    auto it = index.find(k);
    if (it == index.end()) return std::nullopt;
    Blob v = std::move(entries[it->second]->second);
    if (key_out)
      *key_out = std::move(entries[it->second]->first);
    else
      release(entries[it->second]->first);
    entries[it->second].reset();
    index.erase(it);
    compact();
    return v;
  }
  void compact() {
    while (!entries.empty() && !entries.back()) entries.pop_back();
    if (entries.size() < 2 * index.size() + 16) return;
    std::vector<std::optional<std::pair<Blob, Blob>>> live;
    live.reserve(index.size());
    for (auto& e : entries)
      if (e) {
        index[e->first] = live.size();
        live.push_back(std::move(e));
      }
    entries = std::move(live);
  }
  template <class F>
  void each(F f) {
    for (auto& e : entries)
      if (e) f(*e);
  }

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::d_get: {
        auto* e = find(blob(in));
        if (!e) fail(ErrKind::key, "key not found");
        put(out, e->second);
        return;
      }
      case Method::d_find: {
        auto* e = find(blob(in));
        put_u8(out, e != nullptr);
        if (e) put(out, e->second);
        return;
      }
      case Method::d_set: {
        Blob k = blob(in);
        Blob v = blob(in);
        keep({&k, &v});
        set(std::move(k), std::move(v));
        return;
      }
      case Method::d_contains: put_u8(out, find(blob(in)) != nullptr); return;
      case Method::d_take: {
        auto v = take(blob(in));
        put_u8(out, v.has_value());
        if (v) {
          put(out, *v);
          ctx.hand_over(std::move(*v));
        }
        return;
      }
      case Method::d_setdefault: {
        Blob k = blob(in);
        Blob v = blob(in);
        if (auto* e = find(k)) {
          put(out, e->second);
        } else {
          keep({&k, &v});
          put(out, v);
          set(std::move(k), std::move(v));
        }
        return;
      }
      case Method::d_update: {
        auto n = in.pod<std::uint64_t>();
        wire::check_size_prefix(in, n);
        std::vector<std::pair<Blob, Blob>> items;  // all decoded before any is applied
        for (std::uint64_t i = 0; i < n; ++i) {
          Blob k = blob(in);
          items.emplace_back(std::move(k), blob(in));
        }
        std::size_t kept = 0;
        try {
          for (auto& [k, v] : items) {
            keep({&k, &v});
            ++kept;
          }
        } catch (...) {
          for (std::size_t i = 0; i < kept; ++i) {
            release(items[i].first);
            release(items[i].second);
          }
          throw;
        }
        for (auto& [k, v] : items) set(std::move(k), std::move(v));
        return;
      }
      case Method::d_keys:
      case Method::d_values: {
        out.pod(static_cast<std::uint64_t>(index.size()));
        each([&](auto& e) { put(out, m == Method::d_keys ? e.first : e.second); });
        return;
      }
      case Method::d_items: {
        out.pod(static_cast<std::uint64_t>(index.size()));
        each([&](auto& e) {
          put(out, e.first);
          put(out, e.second);
        });
        return;
      }
      case Method::d_len: out.pod(static_cast<std::int64_t>(index.size())); return;
      case Method::d_clear:
        each([&](auto& e) {
          release(e.first);
          release(e.second);
        });
        entries.clear();
        index.clear();
        return;
      case Method::d_popitem: {
        if (index.empty()) fail(ErrKind::key, "popitem(): dictionary is empty");
        Blob k;
        Blob v = *take(Blob(entries.back()->first), &k);
        put(out, k);
        put(out, v);
        ctx.hand_over(std::move(k));
        ctx.hand_over(std::move(v));
        return;
      }
      default: bad_method(m, "dict");
    }
  }

  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::slot) Obj::typed(ctx, op, in, out);
    Blob k = blob(in);
    std::lock_guard g(mu);
    auto* e = find(k);
    Blob slot = e ? e->second : Blob();
    bool present = e != nullptr;
    op.slot(slot, present, in, out);
    if (!present) return;
    keep({&k, &slot});
    set(std::move(k), std::move(slot));
  }
};

// --------------------------------------------------------- list and Array

struct List : Obj {
  std::mutex mu;
  std::vector<Blob> items;
  explicit List(Kind k) : Obj(k) {}
  ~List() override {
    for (const Blob& b : items) release(b);
  }
  void keep_initial() override { keep_all(items); }

  std::size_t at(std::int64_t i, const char* what) const {
    auto n = static_cast<std::int64_t>(items.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) fail(ErrKind::index, std::string(kind == Kind::array ? "array" : "list") + what);
    return static_cast<std::size_t>(i);
  }
  // Python's slice.indices for one bound.
  static std::int64_t clamp(std::int64_t i, std::int64_t n, std::int64_t lo, std::int64_t hi) {
    if (i < 0) i += n;
    return std::clamp(i, lo, hi);
  }
  void growable(Method m) const {
    if (kind == Kind::array)
      fail(ErrKind::value, "mpxx: an Array has a fixed size (method " + std::to_string(static_cast<int>(m)) + ")");
  }

  void call(Ctx& ctx, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    auto n = static_cast<std::int64_t>(items.size());
    switch (m) {
      case Method::l_get: put(out, items[at(in.pod<std::int64_t>(), " index out of range")]); return;
      case Method::l_set: {
        std::size_t i = at(in.pod<std::int64_t>(), " assignment index out of range");
        Blob v = blob(in);
        keep({&v});
        release(items[i]);
        items[i] = std::move(v);
        return;
      }
      case Method::l_len: out.pod(n); return;
      case Method::l_slice: {
        auto start = in.pod<std::int64_t>(), stop = in.pod<std::int64_t>(), step = in.pod<std::int64_t>();
        if (step == 0) fail(ErrKind::value, "slice step cannot be zero");
        step = std::clamp<std::int64_t>(step, -(n + 1), n + 1);  // same slice, no overflow
        std::vector<std::size_t> idx;
        if (step > 0) {
          std::int64_t b = start == kNone ? 0 : clamp(start, n, 0, n);
          std::int64_t e = stop == kNone ? n : clamp(stop, n, 0, n);
          for (std::int64_t i = b; i < e; i += step) idx.push_back(static_cast<std::size_t>(i));
        } else {
          std::int64_t b = start == kNone ? n - 1 : clamp(start, n, -1, n - 1);
          std::int64_t e = stop == kNone ? -1 : clamp(stop, n, -1, n - 1);
          for (std::int64_t i = b; i > e; i += step) idx.push_back(static_cast<std::size_t>(i));
        }
        out.pod(static_cast<std::uint64_t>(idx.size()));
        for (auto i : idx) put(out, items[i]);
        return;
      }
      default: break;
    }
    growable(m);
    switch (m) {
      case Method::l_append: {
        Blob v = blob(in);
        keep({&v});
        items.push_back(std::move(v));
        return;
      }
      case Method::l_extend: {
        auto k = in.pod<std::uint64_t>();
        wire::check_size_prefix(in, k);
        std::vector<Blob> more;
        for (std::uint64_t i = 0; i < k; ++i) more.push_back(blob(in));
        keep_all(more);
        for (auto& b : more) items.push_back(std::move(b));
        return;
      }
      case Method::l_insert: {
        auto i = clamp(in.pod<std::int64_t>(), n, 0, n);
        Blob v = blob(in);
        keep({&v});
        items.insert(items.begin() + i, std::move(v));
        return;
      }
      case Method::l_pop: {
        auto i = in.pod<std::int64_t>();
        if (items.empty()) fail(ErrKind::index, "pop from empty list");
        std::size_t k = at(i, " pop index out of range");
        put(out, items[k]);
        Blob v = std::move(items[k]);
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(k));
        ctx.hand_over(std::move(v));
        return;
      }
      case Method::l_erase: {
        std::size_t k = at(in.pod<std::int64_t>(), " assignment index out of range");
        release(items[k]);
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(k));
        return;
      }
      case Method::l_remove: {
        auto it = std::find(items.begin(), items.end(), blob(in));
        if (it == items.end()) fail(ErrKind::value, "list.remove(x): x not in list");
        release(*it);
        items.erase(it);
        return;
      }
      case Method::l_index: {
        Blob v = blob(in);
        auto b = clamp(in.pod<std::int64_t>(), n, 0, n), e = clamp(in.pod<std::int64_t>(), n, 0, n);
        for (auto i = b; i < e; ++i)
          if (items[static_cast<std::size_t>(i)] == v) {
            out.pod(i);
            return;
          }
        fail(ErrKind::value, "x is not in list");
      }
      case Method::l_count: {
        Blob v = blob(in);
        out.pod(static_cast<std::uint64_t>(std::count(items.begin(), items.end(), v)));
        return;
      }
      case Method::l_reverse: std::reverse(items.begin(), items.end()); return;
      case Method::l_clear:
        for (const Blob& b : items) release(b);
        items.clear();
        return;
      default: bad_method(m, "list");
    }
  }

  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::items) Obj::typed(ctx, op, in, out);
    std::lock_guard g(mu);
    op.items(items, in, out);
  }
};

// -------------------------------------------------------- Namespace, Value

struct Namespace : Obj {
  std::mutex mu;
  std::vector<std::pair<std::string, Blob>> attrs;  // in the order first set
  Namespace() : Obj(Kind::ns) {}
  ~Namespace() override {
    for (auto& a : attrs) release(a.second);
  }
  std::pair<std::string, Blob>* find(const std::string& name) {
    for (auto& a : attrs)
      if (a.first == name) return &a;
    return nullptr;
  }
  [[noreturn]] static void missing(const std::string& name) {
    fail(ErrKind::attribute, "'Namespace' object has no attribute '" + name + "'");
  }
  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::n_get: {
        std::string name = get_str(in);
        auto* a = find(name);
        if (!a) missing(name);
        put(out, a->second);
        return;
      }
      case Method::n_set: {
        std::string name = get_str(in);
        Blob v = blob(in);
        keep({&v});
        if (auto* a = find(name)) {
          release(a->second);
          a->second = std::move(v);
        } else
          attrs.emplace_back(std::move(name), std::move(v));
        return;
      }
      case Method::n_del: {
        std::string name = get_str(in);
        auto* a = find(name);
        if (!a) missing(name);
        release(a->second);
        attrs.erase(attrs.begin() + (a - attrs.data()));
        return;
      }
      case Method::n_has: put_u8(out, find(get_str(in)) != nullptr); return;
      case Method::n_names:
        out.pod(static_cast<std::uint64_t>(attrs.size()));
        for (auto& a : attrs) put_str(out, a.first);
        return;
      default: bad_method(m, "Namespace");
    }
  }
};

struct Value : Obj {
  std::mutex mu;
  Blob v;
  Value() : Obj(Kind::value) {}
  ~Value() override { release(v); }
  void keep_initial() override { keep({&v}); }
  void call(Ctx&, Method m, wire::Reader& in, wire::Writer& out) override {
    std::lock_guard g(mu);
    switch (m) {
      case Method::v_get: put(out, v); return;
      case Method::v_set: {
        Blob nv = blob(in);
        keep({&nv});
        release(v);
        v = std::move(nv);
        return;
      }
      default: bad_method(m, "Value");
    }
  }
  void typed(Ctx& ctx, const OpDef& op, wire::Reader& in, wire::Writer& out) override {
    if (op.kind != OpKind::slot) Obj::typed(ctx, op, in, out);
    std::lock_guard g(mu);
    Blob slot = v;
    bool present = true;
    op.slot(slot, present, in, out);
    keep({&slot});
    release(v);
    v = std::move(slot);
  }
};

}  // namespace

std::shared_ptr<Obj> make_dict() { return std::make_shared<Dict>(); }

std::shared_ptr<Obj> make_list(Kind list_or_array, wire::Reader& in) {
  auto l = std::make_shared<List>(list_or_array);
  if (in.done()) return l;
  auto n = in.pod<std::uint64_t>();
  wire::check_size_prefix(in, n);
  for (std::uint64_t i = 0; i < n; ++i) l->items.push_back(blob(in));
  return l;
}

std::shared_ptr<Obj> make_namespace() { return std::make_shared<Namespace>(); }

std::shared_ptr<Obj> make_value(wire::Reader& in) {
  auto v = std::make_shared<Value>();
  v->v = blob(in);
  return v;
}

}  // namespace mpxx::detail::mgr
