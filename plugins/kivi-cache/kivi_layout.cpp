#include "kivi_layout.h"

#include <algorithm>
#include <sstream>

#include "kivi/util/error.h"

namespace kivi::kivi_cache {

std::string KiviOptions::description() const {
  std::ostringstream out;
  out << "kivi k" << k_bits << "/v" << v_bits << " g" << group_size << " r" << residual_length;
  return out.str();
}

void check_options(const KiviOptions& o, const CacheGeometry& g) {
  auto fail = [](const std::string& message) { throw Error("kivi cache: " + message); };
  for (auto [name, bits] :
       {std::pair<const char*, int64_t>{"k_bits", o.k_bits}, {"v_bits", o.v_bits}})
    if (bits != 2 && bits != 4 && bits != 8 && bits != 16)
      fail(std::string(name) + " = " + std::to_string(bits) + ", expected 2, 4, 8 or 16");
  if (o.group_size <= 0) fail("group_size = " + std::to_string(o.group_size) + ", expected > 0");
  if (o.residual_length < 0 || o.residual_length % o.group_size != 0)
    fail("residual_length = " + std::to_string(o.residual_length) +
         ", expected 0 or a multiple of group_size = " + std::to_string(o.group_size));
  // A key group is packed along tokens and a value row along channels, whole words each.
  for (auto [name, bits] :
       {std::pair<const char*, int64_t>{"k_bits", o.k_bits}, {"v_bits", o.v_bits}})
    if (bits < 16 && o.group_size % (32 / bits) != 0)
      fail("group_size = " + std::to_string(o.group_size) + " with " + name + " = " +
           std::to_string(bits) + ": expected a multiple of " + std::to_string(32 / bits) +
           " (codes per int32 word)");
  if (o.quantize_values() && g.head_dim % o.group_size != 0)
    fail("group_size = " + std::to_string(o.group_size) + " does not divide head_dim = " +
         std::to_string(g.head_dim) + " (values are grouped over channels)");
  if (g.pool_pages > 0) {
    const int64_t page = o.page_tokens;
    if (!o.quantize_keys() || !o.quantize_values())
      fail("paged storage holds quantized keys and values: k_bits = " + std::to_string(o.k_bits) +
           ", v_bits = " + std::to_string(o.v_bits) + ", expected both below 16");
    if (page < o.group_size || page % o.group_size != 0 || (page & (page - 1)) != 0)
      fail("page_tokens = " + std::to_string(page) +
           ", expected a power of two and a multiple of group_size = " +
           std::to_string(o.group_size));
  }
  if (g.dtype != at::kHalf && g.dtype != at::kBFloat16 && g.dtype != at::kFloat)
    fail(std::string("model dtype ") + c10::toString(g.dtype) +
         ", expected float16, bfloat16 or float32");
}

SequenceSplit canonical_split(const KiviOptions& o, int64_t length) {
  SequenceSplit split;
  if (o.quantize_keys()) split.key_quantized = length / o.key_flush() * o.key_flush();
  if (o.quantize_values()) split.value_quantized = std::max<int64_t>(0, length - o.residual_length);
  return split;
}

LayerCapacity preallocated_capacity(const KiviOptions& o, int64_t max_tokens) {
  LayerCapacity c;
  if (max_tokens <= 0) {
    // Grown on demand: only the bounded windows exist from the start.
    if (o.quantize_keys()) c.key_slots = o.key_flush();
    if (o.quantize_values()) c.value_slots = o.residual_length + 1;
    return c;
  }
  const SequenceSplit most = canonical_split(o, max_tokens);
  if (o.quantize_keys()) {
    c.key_groups = most.key_quantized / o.group_size;
    c.key_slots = std::min(o.key_flush(), max_tokens);
  } else {
    c.key_slots = max_tokens;
  }
  if (o.quantize_values()) {
    c.value_tokens = most.value_quantized;
    // R + 1: during a decode step the newest token joins the window before the oldest leaves.
    c.value_slots = std::min(o.residual_length + 1, max_tokens);
  } else {
    c.value_slots = max_tokens;
  }
  return c;
}

LayerBytes layer_bytes(const KiviOptions& o, const CacheGeometry& g, const LayerCapacity& c) {
  const int64_t heads = g.num_kv_heads, dim = g.head_dim;
  const int64_t element = c10::elementSize(g.dtype);  // residuals, scales and minima
  LayerBytes b;
  if (o.quantize_keys()) {
    b.codes += c.key_groups * heads * dim * (o.group_size * o.k_bits / 32) * 4;
    b.scales += 2 * c.key_groups * heads * dim * element;
  }
  if (o.quantize_values()) {
    b.codes += c.value_tokens * heads * (dim * o.v_bits / 32) * 4;
    b.scales += 2 * c.value_tokens * heads * (dim / o.group_size) * element;
  }
  b.residual = (c.key_slots + c.value_slots) * heads * dim * element;
  return b;
}

int64_t bytes_per_sequence(const KiviOptions& o, const CacheGeometry& g, int64_t tokens) {
  return g.num_layers * layer_bytes(o, g, preallocated_capacity(o, tokens)).total();
}

LayerCapacity page_capacity(const KiviOptions& o) {
  LayerCapacity c;
  c.key_groups = o.page_tokens / o.group_size;
  c.value_tokens = o.page_tokens;
  return c;
}

LayerCapacity slot_capacity(const KiviOptions& o) {
  LayerCapacity c;
  c.key_slots = o.key_flush();
  c.value_slots = o.residual_length + 1;  // R + 1: see preallocated_capacity
  return c;
}

int64_t table_columns(const KiviOptions& o, int64_t max_tokens) {
  return max_tokens > 0 ? (max_tokens + o.page_tokens - 1) / o.page_tokens : 1;
}

}  // namespace kivi::kivi_cache
