#include "kivi/cache/cache_checks.h"

#include <sstream>

#include "kivi/util/error.h"

namespace kivi {

void check_geometry(const CacheGeometry& g) {
  std::ostringstream msg;
  if (g.num_layers <= 0 || g.num_kv_heads <= 0 || g.head_dim <= 0 || g.max_batch <= 0 ||
      g.max_tokens < 0) {
    msg << "cache geometry: expected num_layers, num_kv_heads, head_dim, max_batch > 0 and "
           "max_tokens >= 0; got num_layers="
        << g.num_layers << " num_kv_heads=" << g.num_kv_heads << " head_dim=" << g.head_dim
        << " max_batch=" << g.max_batch << " max_tokens=" << g.max_tokens;
    throw Error(msg.str());
  }
  if (g.pool_pages < 0)
    throw Error("cache geometry: pool_pages = " + std::to_string(g.pool_pages) +
                ", expected 0 (contiguous) or > 0 (paged)");
}

void check_not_paged(const CacheGeometry& g, const std::string& who) {
  if (g.pool_pages > 0)
    throw Error(who + ": paged storage (pool_pages = " + std::to_string(g.pool_pages) +
                ") is not supported by this cache; use pool_pages = 0");
}

void check_row_range(const CacheGeometry& g, int64_t first, int64_t n, const std::string& who) {
  check(first >= 0 && n > 0 && first + n <= g.max_batch,
        who + ": rows [" + std::to_string(first) + ", " + std::to_string(first + n) +
            ") are not a range of the cache's " + std::to_string(g.max_batch) + " slots");
}

int64_t check_range_append_inputs(const CacheGeometry& g, int64_t first, const at::Tensor& k,
                                  const at::Tensor& v, std::span<const int64_t> new_counts,
                                  const std::string& who) {
  // The range is k's rows (k not 4-D: the shape error then names the rows from first on).
  CacheGeometry rows = g;
  rows.max_batch = k.defined() && k.dim() == 4 ? k.size(0) : g.max_batch - first;
  check_row_range(g, first, rows.max_batch, who);
  check_append_inputs(rows, k, v, new_counts, who);
  return rows.max_batch;
}

void check_append_inputs(const CacheGeometry& g, const at::Tensor& k, const at::Tensor& v,
                         std::span<const int64_t> new_counts, const std::string& who) {
  auto shape_error = [&](const char* name, const at::Tensor& t) {
    std::ostringstream msg;
    msg << who << ": append " << name << " has shape " << t.sizes() << " on " << t.device()
        << ", expected [" << g.max_batch << ", " << g.num_kv_heads << ", new_tokens, " << g.head_dim
        << "] on " << g.device;
    throw Error(msg.str());
  };
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"k", &k}, {"v", &v}}) {
    if (!t->defined() || t->dim() != 4 || t->size(0) != g.max_batch ||
        t->size(1) != g.num_kv_heads || t->size(3) != g.head_dim || t->device() != g.device)
      shape_error(name, *t);
  }
  check(k.size(2) == v.size(2), who + ": append k and v have different token counts (" +
                                    std::to_string(k.size(2)) + " vs " + std::to_string(v.size(2)) +
                                    ")");
  if (new_counts.empty()) return;
  check(static_cast<int64_t>(new_counts.size()) == g.max_batch,
        who + ": new_counts has " + std::to_string(new_counts.size()) + " entries, expected " +
            std::to_string(g.max_batch));
  for (size_t b = 0; b < new_counts.size(); ++b)
    check(new_counts[b] >= 0 && new_counts[b] <= k.size(2),
          who + ": new_counts[" + std::to_string(b) + "] = " + std::to_string(new_counts[b]) +
              ", expected 0.." + std::to_string(k.size(2)));
}

void check_beam_index(const CacheGeometry& g, std::span<const int64_t> beam_index,
                      const std::string& who) {
  check(static_cast<int64_t>(beam_index.size()) == g.max_batch,
        who + ": reorder index has " + std::to_string(beam_index.size()) + " entries, expected " +
            std::to_string(g.max_batch));
  for (size_t i = 0; i < beam_index.size(); ++i)
    check(beam_index[i] >= 0 && beam_index[i] < g.max_batch,
          who + ": reorder index[" + std::to_string(i) + "] = " + std::to_string(beam_index[i]) +
              ", expected 0.." + std::to_string(g.max_batch - 1));
}

}  // namespace kivi
