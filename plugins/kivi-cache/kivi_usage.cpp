// What the KIVI cache's stored tokens use (KVCache::usage), read from its own parts
// (kivi_parts.h: where each token lives, at how many bits), and what a research write-up's
// accounting of it leaves out (CacheSpec::accounting_notes, printed by `kivi-host memory`).
#include <iomanip>
#include <sstream>

#include "kivi/util/error.h"
#include "kivi_cache.h"

namespace kivi::kivi_cache {
namespace {

int64_t element_bytes(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.element_size()) : 0;
}

std::string dtype_label(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return "float16";
    case at::kBFloat16:
      return "bfloat16";
    case at::kFloat:
      return "float32";
    default:
      return c10::toString(dtype);
  }
}

}  // namespace

CacheUsage KiviCache::usage() const {
  const int64_t heads = geometry_.num_kv_heads, dim = geometry_.head_dim;
  CacheUsage u;
  u.sequences = geometry_.max_batch;
  for (size_t layer = 0; layer < layers_.size(); ++layer) {
    const KiviParts& p = layers_[layer].parts;
    u.key_bits = p.k_bits;
    u.value_bits = p.v_bits;
    u.quantizing = u.quantizing || p.k_bits < 16 || p.v_bits < 16;
    const int64_t residual_element = element_bytes(p.key_residual);
    u.full_element_bits = 8 * residual_element;
    for (size_t b = 0; b < layers_[layer].length.size(); ++b) {
      const int64_t length = layers_[layer].length[b];
      const int64_t kq = p.key_quantized.at(b), vq = p.value_quantized.at(b);
      if (layer == 0) {
        u.tokens += length;
        u.key_quantized += kq;
        u.value_quantized += vq;
      }
      u.elements += 2 * length * heads * dim;
      // Keys [0, kq) in groups of group_size tokens per channel, values [0, vq) in groups of
      // group_size channels per token, each group with one scale and one minimum; the rest of
      // each side in its full-precision residual.
      u.full_bytes += ((length - kq) + (length - vq)) * heads * dim * residual_element;
      if (kq > 0) {
        check(kq % p.group_size == 0, "kivi cache usage: key_quantized = " + std::to_string(kq) +
                                          " is not a whole number of groups of " +
                                          std::to_string(p.group_size));
        u.code_bytes += kq * heads * dim * p.k_bits / 8;
        u.scale_bytes += 2 * (kq / p.group_size) * heads * dim * element_bytes(p.key_scale);
      }
      if (vq > 0) {
        u.code_bytes += vq * heads * dim * p.v_bits / 8;
        u.scale_bytes += 2 * vq * heads * (dim / p.group_size) * element_bytes(p.value_scale);
      }
    }
  }
  return u;
}

std::string accounting_notes(const KiviOptions& o, at::ScalarType dtype) {
  const double code_bits = 0.5 * static_cast<double>(o.k_bits + o.v_bits);
  const int64_t element_bits = 8 * static_cast<int64_t>(c10::elementSize(dtype));
  const std::string name = dtype_label(dtype);
  const int64_t r = o.residual_length;
  std::ostringstream out;
  out << "What the write-up leaves out: it counts " << code_bits
      << "-bit codes for the tokens outside a window of " << r
      << " tokens and the window at 16 bits. A cache also holds\n"
      << "  - a scale and a minimum (" << name << ") for every group of " << o.group_size
      << " codes: " << std::fixed << std::setprecision(2)
      << 2.0 * static_cast<double>(element_bits) / o.group_size
      << " bits more per quantized element (the scales column);\n"
      << std::defaultfloat << "  - the windows as allocated, whatever the length: " << r
      << " key slots (keys are quantized " << r << " at a time, so 0 to " << (r > 0 ? r - 1 : 0)
      << " of them are in use) and " << r + 1
      << " value slots (a decode step adds its token before the oldest value leaves), in " << name
      << ".\n"
      << "So the honest bits per element tend to " << std::fixed << std::setprecision(2)
      << code_bits + 2.0 * static_cast<double>(element_bits) / o.group_size
      << " for long sequences, not " << code_bits << std::defaultfloat << ".\n";
  return out.str();
}

}  // namespace kivi::kivi_cache
