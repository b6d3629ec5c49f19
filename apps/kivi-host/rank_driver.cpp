#include "rank_driver.h"

#include <array>
#include <atomic>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "kivi/cache/cache_usage.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/util/error.h"

namespace kivi::host {
namespace {

// What rank 0 asks of the others. The header is 8 int64: {op, cache id, arguments...}; the
// payload tensors that follow have sizes the header gives.
enum Op : int64_t {
  kStop = 1,
  kForward,      // {id, last_only, B, T, counts} + ids [B, T], positions [B, T], counts
  kUse,          // {factory, cache name bytes, options, attention name, options} + the bytes
  kCreate,       // {id, factory, max_batch, max_tokens, pool_pages}
  kDestroy,      // {id}
  kReorder,      // {id, n} + beam_index [n]
  kTruncate,     // {id, new_length, seq}
  kReset,        // {id}
  kPublish,      // {id, seq, n} + tokens [n]
  kSharePrefix,  // {id, seq, n} + tokens [n]
  kMemory,       // {id}: every rank's MemoryStats summed
  kUsage,        // {id}: every rank's CacheUsage byte counts summed
  kPoolStats,    // {id}: every rank's page bytes summed
  kAppend,       // {id, layer, B, T, counts} + counts: K/V appended outside a forward pass
};

using Header = std::array<int64_t, 8>;

at::Tensor longs(std::span<const int64_t> values) {
  return at::tensor(std::vector<int64_t>(values.begin(), values.end()), at::kLong);
}
std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// The control channel: rank 0 sends, the others receive the same tensors in the same order.
class Channel {
 public:
  explicit Channel(TensorParallelGroup& group) : group_(group) {}
  void send(const Header& h) {
    at::Tensor t = longs(h);
    group_.broadcast_control(t);
  }
  void send(at::Tensor t) {  // int64 or uint8, any shape
    at::Tensor c = t.to(at::kCPU).contiguous();
    group_.broadcast_control(c);
  }
  void send(const std::string& bytes) {
    if (bytes.empty()) return;
    at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::copy(bytes.begin(), bytes.end(), t.data_ptr<uint8_t>());
    group_.broadcast_control(t);
  }
  Header receive_header() {
    at::Tensor t = at::empty({8}, at::kLong);
    group_.broadcast_control(t);
    Header h;
    std::copy(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + 8, h.begin());
    return h;
  }
  at::Tensor receive(at::IntArrayRef shape, at::ScalarType dtype = at::kLong) {
    at::Tensor t = at::empty(shape, dtype);
    if (t.numel() > 0) group_.broadcast_control(t);
    return t;
  }
  std::string receive_string(int64_t size) {
    if (size == 0) return {};
    const at::Tensor t = receive({size}, at::kByte);
    return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), size);
  }
  // Sums int64 counters over the ranks (rank 0's and the others' in the same order).
  std::vector<int64_t> sum(std::vector<int64_t> values) {
    at::Tensor t = longs(values);
    group_.all_reduce_control(t);
    return to_vector(t);
  }
  TensorParallelGroup& group() { return group_; }

 private:
  TensorParallelGroup& group_;
};

// The statistics every rank adds its shard's bytes to (the token counts are every rank's own
// and equal: rank 0's stand).
MemoryStats sum_memory(Channel& channel, MemoryStats m) {
  const auto s = channel.sum({m.payload_bytes, m.scale_bytes, m.residual_bytes, m.workspace_bytes});
  m.payload_bytes = s[0];
  m.scale_bytes = s[1];
  m.residual_bytes = s[2];
  m.workspace_bytes = s[3];
  return m;
}
CacheUsage sum_usage(Channel& channel, CacheUsage u) {
  const auto s = channel.sum({u.elements, u.code_bytes, u.scale_bytes, u.full_bytes});
  u.elements = s[0];
  u.code_bytes = s[1];
  u.scale_bytes = s[2];
  u.full_bytes = s[3];
  return u;
}
PoolStats sum_pool(Channel& channel, PoolStats p) {
  p.page_bytes = channel.sum({p.page_bytes})[0];
  return p;
}

}  // namespace

// Rank 0's end of the channel; one mutex orders whole calls (serve's statistics thread asks a
// cache for its memory while the scheduler's thread runs a forward pass).
class RankDriver {
 public:
  explicit RankDriver(std::shared_ptr<TensorParallelGroup> group)
      : group_(std::move(group)), channel_(*group_) {}
  ~RankDriver() {
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      channel_.send(Header{kStop});
    } catch (const std::exception&) {
      // The other ranks are gone already; each says why itself.
    }
  }
  std::mutex& mutex() { return mutex_; }
  Channel& channel() { return channel_; }
  int64_t next_cache_id() { return ++last_cache_id_; }
  // Set while rank 0 runs a forward pass, which appends to the caches on every rank.
  bool in_forward = false;
  int64_t next_factory_id() { return ++last_factory_id_; }

 private:
  std::shared_ptr<TensorParallelGroup> group_;
  Channel channel_;
  std::mutex mutex_;
  int64_t last_cache_id_ = 0, last_factory_id_ = 0;
};

namespace {

class DriverCache final : public KVCache {
 public:
  DriverCache(std::shared_ptr<RankDriver> driver, int64_t id, std::unique_ptr<KVCache> local)
      : driver_(std::move(driver)), id_(id), local_(std::move(local)) {}
  ~DriverCache() override {
    try {
      std::lock_guard<std::mutex> lock(driver_->mutex());
      driver_->channel().send(Header{kDestroy, id_});
    } catch (const std::exception&) {
    }
  }
  int64_t id() const { return id_; }
  KVCache& local() { return *local_; }

  const CacheGeometry& geometry() const override { return local_->geometry(); }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> counts) override {
    if (driver_->in_forward) {  // every rank's forward pass appends its own K/V
      local_->append(layer, k, v, counts);
      return;
    }
    // Straight into the cache (bench's fill = "random"): the other ranks append random K/V of
    // their own heads, the same number of tokens per row.
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(
        Header{kAppend, id_, layer, k.size(0), k.size(2), static_cast<int64_t>(counts.size())});
    if (!counts.empty()) driver_->channel().send(longs(counts));
    local_->append(layer, k, v, counts);
  }
  CacheView view(int64_t layer) const override { return local_->view(layer); }
  int64_t length(int64_t seq) const override { return local_->length(seq); }
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override {
    return local_->owned_tensors();  // this rank's
  }
  int64_t pages_for(int64_t tokens) const override { return local_->pages_for(tokens); }

  void reorder(std::span<const int64_t> beam_index) override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kReorder, id_, static_cast<int64_t>(beam_index.size())});
    driver_->channel().send(longs(beam_index));
    local_->reorder(beam_index);
  }
  void truncate(int64_t new_length, int64_t seq) override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kTruncate, id_, new_length, seq});
    local_->truncate(new_length, seq);
  }
  void reset() override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kReset, id_});
    local_->reset();
  }
  void publish(int64_t seq, std::span<const int64_t> tokens) override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kPublish, id_, seq, static_cast<int64_t>(tokens.size())});
    driver_->channel().send(longs(tokens));
    local_->publish(seq, tokens);
  }
  int64_t share_prefix(int64_t seq, std::span<const int64_t> tokens) override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kSharePrefix, id_, seq, static_cast<int64_t>(tokens.size())});
    driver_->channel().send(longs(tokens));
    return local_->share_prefix(seq, tokens);  // the same on every rank: the same pages
  }
  MemoryStats memory() const override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kMemory, id_});
    return sum_memory(driver_->channel(), local_->memory());
  }
  CacheUsage usage() const override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kUsage, id_});
    return sum_usage(driver_->channel(), local_->usage());
  }
  PoolStats pool_stats() const override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->channel().send(Header{kPoolStats, id_});
    return sum_pool(driver_->channel(), local_->pool_stats());
  }

 private:
  std::shared_ptr<RankDriver> driver_;
  int64_t id_;
  std::unique_ptr<KVCache> local_;
};

class DriverFactory final : public KVCacheFactory {
 public:
  DriverFactory(std::shared_ptr<RankDriver> driver, int64_t id,
                std::shared_ptr<KVCacheFactory> local)
      : driver_(std::move(driver)), id_(id), local_(std::move(local)) {}
  std::string view_format() const override { return local_->view_format(); }
  std::string attention() const override { return local_->attention(); }
  // One rank's shard (the geometry's kv heads are this rank's): what each device holds.
  CacheSpec spec(const CacheGeometry& geometry) const override { return local_->spec(geometry); }
  std::unique_ptr<KVCache> create(const CacheGeometry& geometry) const override {
    std::lock_guard<std::mutex> lock(driver_->mutex());
    const int64_t cache = driver_->next_cache_id();
    driver_->channel().send(
        Header{kCreate, cache, id_, geometry.max_batch, geometry.max_tokens, geometry.pool_pages});
    return std::make_unique<DriverCache>(driver_, cache, local_->create(geometry));
  }

 private:
  std::shared_ptr<RankDriver> driver_;
  int64_t id_;
  std::shared_ptr<KVCacheFactory> local_;
};

class DriverModel final : public CausalLM {
 public:
  DriverModel(std::unique_ptr<CausalLM> shard, std::shared_ptr<RankDriver> driver)
      : shard_(std::move(shard)), driver_(std::move(driver)) {}
  const ModelConfig& config() const override { return shard_->config(); }
  const ModelOptions& options() const override { return shard_->options(); }
  CacheGeometry cache_geometry(int64_t max_batch, int64_t max_tokens) const override {
    return shard_->cache_geometry(max_batch, max_tokens);
  }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions,
                     std::span<const int64_t> counts, KVCache& cache) override {
    return run(ids, positions, counts, cache, false);
  }
  at::Tensor forward_last(const at::Tensor& ids, const at::Tensor& positions,
                          std::span<const int64_t> counts, KVCache& cache) override {
    return run(ids, positions, counts, cache, true);
  }
  // The attention of every rank changes with driver_pairing (use_cache); this is rank 0's.
  void set_attention(std::shared_ptr<const Attention> attention) override {
    shard_->set_attention(std::move(attention));
  }
  // A tap takes rank 0 off the CUDA graphs that the other ranks would replay, with their
  // collectives in another order: not offered.
  void set_tap(TapFn tap) override {
    check(!tap,
          "tensor parallel: debug taps are not available with [parallel] (rank 0 would "
          "leave the decode graphs the other ranks run)");
  }

 private:
  at::Tensor run(const at::Tensor& ids, const at::Tensor& positions,
                 std::span<const int64_t> counts, KVCache& cache, bool last_only) {
    auto* mirrored = dynamic_cast<DriverCache*>(&cache);
    check(mirrored != nullptr,
          "tensor parallel: the cache passed to the model was not made by the session's cache "
          "factory (the other ranks hold no copy of it)");
    check(ids.dim() == 2 && positions.sizes() == ids.sizes(),
          "tensor parallel: input_ids and positions must be [batch, tokens] of one shape");
    std::lock_guard<std::mutex> lock(driver_->mutex());
    driver_->in_forward = true;
    struct Done {
      RankDriver& d;
      ~Done() { d.in_forward = false; }
    } done{*driver_};
    Channel& channel = driver_->channel();
    channel.send(Header{kForward, mirrored->id(), last_only ? 1 : 0, ids.size(0), ids.size(1),
                        static_cast<int64_t>(counts.size())});
    channel.send(ids.to(at::kLong));
    channel.send(positions.to(at::kLong));
    if (!counts.empty()) channel.send(longs(counts));
    if (last_only) return shard_->forward_last(ids, positions, counts, mirrored->local());
    return shard_->forward(ids, positions, counts, mirrored->local());
  }

  std::unique_ptr<CausalLM> shard_;
  std::shared_ptr<RankDriver> driver_;
};

}  // namespace

std::shared_ptr<RankDriver> make_rank_driver(std::shared_ptr<TensorParallelGroup> group) {
  return std::make_shared<RankDriver>(std::move(group));
}

std::unique_ptr<CausalLM> make_driver_model(std::unique_ptr<CausalLM> shard,
                                            std::shared_ptr<RankDriver> driver) {
  return std::make_unique<DriverModel>(std::move(shard), std::move(driver));
}

CachePairing driver_pairing(const std::shared_ptr<RankDriver>& driver,
                            const CachePairing& pairing) {
  check(!pairing.cache_choice.name.empty(),
        "tensor parallel: the cache pairing carries no plugin choice to send the other ranks");
  std::lock_guard<std::mutex> lock(driver->mutex());
  const int64_t factory = driver->next_factory_id();
  const PluginChoice& c = pairing.cache_choice;
  const PluginChoice& a = pairing.attention_choice;
  driver->channel().send(Header{kUse, factory, static_cast<int64_t>(c.name.size()),
                                static_cast<int64_t>(c.options_toml.size()),
                                static_cast<int64_t>(a.name.size()),
                                static_cast<int64_t>(a.options_toml.size())});
  for (const std::string* s : {&c.name, &c.options_toml, &a.name, &a.options_toml})
    driver->channel().send(*s);
  CachePairing out = pairing;
  out.factory = std::make_shared<DriverFactory>(driver, factory, pairing.factory);
  return out;
}

void run_rank_worker(const HostContext& context, CausalLM& model, TensorParallelGroup& group) {
  Channel channel(group);
  std::map<int64_t, CachePairing> pairings;  // by factory id
  std::map<int64_t, std::unique_ptr<KVCache>> caches;
  auto cache = [&](int64_t id) -> KVCache& {
    auto it = caches.find(id);
    check(it != caches.end(), "tensor parallel rank " + std::to_string(group.rank()) +
                                  ": rank 0 names cache " + std::to_string(id) +
                                  ", which this rank does not hold");
    return *it->second;
  };
  for (;;) {
    const Header h = channel.receive_header();
    switch (h[0]) {
      case kStop:
        return;
      case kForward: {
        const int64_t batch = h[3], tokens = h[4];
        const at::Tensor ids = channel.receive({batch, tokens});
        const at::Tensor positions = channel.receive({batch, tokens});
        const std::vector<int64_t> counts =
            h[5] > 0 ? to_vector(channel.receive({h[5]})) : std::vector<int64_t>{};
        if (h[2]) {
          model.forward_last(ids, positions, counts, cache(h[1]));
        } else {
          model.forward(ids, positions, counts, cache(h[1]));
        }
        break;
      }
      case kUse: {
        PluginChoice c, a;
        c.name = channel.receive_string(h[2]);
        c.options_toml = channel.receive_string(h[3]);
        a.name = channel.receive_string(h[4]);
        a.options_toml = channel.receive_string(h[5]);
        c.explicit_choice = a.explicit_choice = true;
        CachePairing p = make_cache_pairing(context, c, a);
        model.set_attention(p.attention);
        pairings[h[1]] = std::move(p);
        break;
      }
      case kCreate: {
        auto it = pairings.find(h[2]);
        check(it != pairings.end(), "tensor parallel: rank 0 names an unknown cache factory");
        CacheGeometry g = model.cache_geometry(h[3], h[4]);
        g.pool_pages = h[5];
        caches[h[1]] = it->second.factory->create(g);
        break;
      }
      case kDestroy:
        caches.erase(h[1]);
        break;
      case kReorder:
        cache(h[1]).reorder(to_vector(channel.receive({h[2]})));
        break;
      case kTruncate:
        cache(h[1]).truncate(h[2], h[3]);
        break;
      case kReset:
        cache(h[1]).reset();
        break;
      case kPublish:
        cache(h[1]).publish(h[2], to_vector(channel.receive({h[3]})));
        break;
      case kSharePrefix:
        cache(h[1]).share_prefix(h[2], to_vector(channel.receive({h[3]})));
        break;
      case kMemory:
        sum_memory(channel, cache(h[1]).memory());
        break;
      case kUsage:
        sum_usage(channel, cache(h[1]).usage());
        break;
      case kPoolStats:
        sum_pool(channel, cache(h[1]).pool_stats());
        break;
      case kAppend: {
        KVCache& c = cache(h[1]);
        const std::vector<int64_t> counts =
            h[5] > 0 ? to_vector(channel.receive({h[5]})) : std::vector<int64_t>{};
        const CacheGeometry& g = c.geometry();
        const auto options = at::TensorOptions().dtype(g.dtype).device(g.device);
        const at::Tensor k = at::randn({h[3], g.num_kv_heads, h[4], g.head_dim}, options);
        c.append(h[2], k, at::randn_like(k), counts);
        break;
      }
      default:
        throw Error("tensor parallel rank " + std::to_string(group.rank()) +
                    ": rank 0 sent an unknown request " + std::to_string(h[0]) +
                    " (ranks of different kivi builds?)");
    }
  }
}

}  // namespace kivi::host
