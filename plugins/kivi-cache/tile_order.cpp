#include "tile_order.h"

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>

#include "kivi/util/error.h"
#include "quantize.h"

namespace kivi::kivi_cache {
namespace {

enum class Side { kKeys, kValues };

// For a block of `dim` x `tokens` codes (values: tokens = 1), the research code index of each
// tile-order code index: tile[f] = research[index[f]], where a flat code index f is the code at
// bit (f % per_word) * bits of word f / per_word, and research keys are indexed d * tokens + t.
std::vector<int64_t> tile_to_research_index(Side side, int64_t dim, int64_t tokens, int64_t bits) {
  std::vector<int64_t> index(static_cast<size_t>(dim * tokens));
  const int64_t per_word = 32 / bits;
  for (int64_t d = 0; d < dim; ++d)
    for (int64_t t = 0; t < tokens; ++t) {
      const CodeSlot slot =
          side == Side::kKeys ? key_code_slot(d, t, dim, bits) : value_code_slot(d, dim, bits);
      index[static_cast<size_t>(slot.word * per_word + slot.bit / bits)] = d * tokens + t;
    }
  return index;
}

// The permutation (or its inverse) as a long tensor on `device`, built once per shape.
const at::Tensor& permutation(Side side, int64_t dim, int64_t tokens, int64_t bits, bool inverse,
                              const at::Device& device) {
  using Key = std::tuple<int, int64_t, int64_t, int64_t, bool, std::string>;
  static std::mutex mutex;
  static std::map<Key, at::Tensor> cache;
  const Key key{static_cast<int>(side), dim, tokens, bits, inverse, device.str()};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::vector<int64_t> index = tile_to_research_index(side, dim, tokens, bits);
  if (inverse) {
    std::vector<int64_t> back(index.size());
    for (size_t f = 0; f < index.size(); ++f)
      back[static_cast<size_t>(index[f])] = static_cast<int64_t>(f);
    index = std::move(back);
  }
  at::Tensor t = at::tensor(index, at::kLong).to(device);
  return cache.emplace(key, std::move(t)).first->second;
}

void check_words(const at::Tensor& words, int64_t bits, int64_t min_dims, const char* what) {
  check(words.defined() && words.scalar_type() == at::kInt && words.dim() >= min_dims &&
            (bits == 2 || bits == 4 || bits == 8),
        std::string("kivi tile order: ") + what + " expects int32 words of at least " +
            std::to_string(min_dims) + " dimensions and bits 2, 4 or 8");
}

// Keys: words [..., dim, W], one group per [dim, W]. The codes moved into the other order,
// unpacked: [..., dim * group] (flat, in the target order).
at::Tensor moved_key_codes(const at::Tensor& words, int64_t bits, bool to_tile) {
  check_words(words, bits, 2, "keys");
  const int64_t dim = words.size(-2), group = words.size(-1) * 32 / bits;
  check(
      dim % 16 == 0 && group % 32 == 0,
      "kivi tile order: keys need head_dim a multiple of 16 and group_size a multiple of 32, got " +
          std::to_string(dim) + " and " + std::to_string(group));
  const at::Tensor& index = permutation(Side::kKeys, dim, group, bits, !to_tile, words.device());
  return unpack_codes(words, bits).flatten(-2).index_select(-1, index);
}

at::Tensor reorder_keys(const at::Tensor& words, int64_t bits, bool to_tile) {
  return pack_codes(moved_key_codes(words, bits, to_tile), bits).reshape(words.sizes());
}

// Values: words [..., W], one token per row; unpacked codes [..., dim] in the target order.
at::Tensor moved_value_codes(const at::Tensor& words, int64_t bits, bool to_tile) {
  check_words(words, bits, 1, "values");
  const int64_t dim = words.size(-1) * 32 / bits;
  check(dim % 8 == 0,
        "kivi tile order: values need head_dim a multiple of 8, got " + std::to_string(dim));
  const at::Tensor& index = permutation(Side::kValues, dim, 1, bits, !to_tile, words.device());
  return unpack_codes(words, bits).index_select(-1, index);
}

at::Tensor reorder_values(const at::Tensor& words, int64_t bits, bool to_tile) {
  return pack_codes(moved_value_codes(words, bits, to_tile), bits);
}

}  // namespace

at::Tensor keys_to_tile_order(const at::Tensor& research_words, int64_t bits) {
  return reorder_keys(research_words, bits, true);
}
at::Tensor keys_from_tile_order(const at::Tensor& tile_words, int64_t bits) {
  return reorder_keys(tile_words, bits, false);
}
at::Tensor values_to_tile_order(const at::Tensor& research_words, int64_t bits) {
  return reorder_values(research_words, bits, true);
}
at::Tensor values_from_tile_order(const at::Tensor& tile_words, int64_t bits) {
  return reorder_values(tile_words, bits, false);
}

at::Tensor unpack_keys_from_tile_order(const at::Tensor& tile_words, int64_t bits) {
  std::vector<int64_t> shape(tile_words.sizes().begin(), tile_words.sizes().end());
  shape.back() = shape.back() * 32 / bits;  // [..., dim, group]
  return moved_key_codes(tile_words, bits, false).reshape(shape);
}
at::Tensor unpack_values_from_tile_order(const at::Tensor& tile_words, int64_t bits) {
  return moved_value_codes(tile_words, bits, false);
}

}  // namespace kivi::kivi_cache
