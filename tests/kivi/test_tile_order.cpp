// The cache's tile order (tile_order.h) against the research code's packing: conversions both
// ways are exact inverses, each lane finds in its words exactly the codes its MMA fragments
// need (written out here from the m16n8k16 fragment layout, independently of the slot
// functions), and a cache that stores tile order reads back what the research packing holds.
#include <ATen/ATen.h>

#include "kivi_cache.h"
#include "kivi_read.h"
#include "quantize.h"
#include "tile_order.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using namespace kivi::kivi_cache;

namespace {

uint32_t code_at(const at::Tensor& words, int64_t word, int64_t bit, int64_t bits) {
  return (static_cast<uint32_t>(words[word].item<int32_t>()) >> bit) & ((1u << bits) - 1u);
}

}  // namespace

TEST_CASE("tile order: conversions are exact inverses", "[kivi][tile_order]") {
  for (int64_t bits : {2, 4, 8})
    for (int64_t dim : {32, 64, 128})
      for (int64_t group : {32, 64}) {
        INFO("bits " << bits << " dim " << dim << " group " << group);
        const at::Tensor keys =
            pack_codes(at::randint(0, 1 << bits, {2, 3, dim, group}, at::kInt), bits);
        const at::Tensor tiled = keys_to_tile_order(keys, bits);
        CHECK(tiled.sizes() == keys.sizes());
        CHECK_FALSE(at::equal(tiled, keys));
        CHECK(at::equal(keys_from_tile_order(tiled, bits), keys));
        const at::Tensor values =
            pack_codes(at::randint(0, 1 << bits, {2, 5, dim}, at::kInt), bits);
        const at::Tensor tiled_values = values_to_tile_order(values, bits);
        CHECK(at::equal(values_from_tile_order(tiled_values, bits), values));
        // Unpacking straight from the tile order gives the research order's codes.
        CHECK(at::equal(unpack_keys_from_tile_order(tiled, bits),
                        unpack_codes(keys, bits).reshape({2, 3, dim, group})));
        CHECK(at::equal(unpack_values_from_tile_order(tiled_values, bits),
                        unpack_codes(values, bits)));
      }
}

TEST_CASE("tile order: every lane's words hold its MMA fragments", "[kivi][tile_order]") {
  for (int64_t bits : {2, 4, 8})
    for (int64_t dim : {64, 128}) {
      INFO("bits " << bits << " dim " << dim);
      const int64_t group = 64;  // two 32-token tiles
      const at::Tensor codes = at::randint(0, 1 << bits, {dim, group}, at::kInt);  // [d][t]
      const at::Tensor words = keys_to_tile_order(pack_codes(codes, bits), bits).flatten();
      // Key B fragment of lane (g, c) for k-tile kt, n-tile nt: channels 16 kt + 2c + {0, 1}
      // (hi = 0) or + {8, 9} (hi = 1) at token 8 nt + g; the lane's dim * bits / 32 words
      // hold the pairs (2 kt + hi) * 4 + nt in order, 16 / bits per word half.
      const int64_t per_half = 16 / bits, lane_words = dim * bits / 32;
      for (int64_t tile = 0; tile < 2; ++tile)
        for (int64_t lane : {0, 5, 18, 31})
          for (int64_t kt = 0; kt < dim / 16; ++kt)
            for (int64_t hi = 0; hi < 2; ++hi)
              for (int64_t nt = 0; nt < 4; ++nt) {
                const int64_t g = lane / 4, c = lane % 4, pair = (2 * kt + hi) * 4 + nt;
                const int64_t word = tile * dim * bits + lane * lane_words + pair / per_half;
                const int64_t bit = (pair % per_half) * bits;
                const int64_t d = 16 * kt + 8 * hi + 2 * c, t = 32 * tile + 8 * nt + g;
                CHECK(code_at(words, word, bit, bits) == codes[d][t].item<int32_t>());
                CHECK(code_at(words, word, 16 + bit, bits) == codes[d + 1][t].item<int32_t>());
              }
      // Value B fragment of lane g, n-tile nt: channel 8 nt + g of a token, the nt-th code of
      // the lane's run of dim / 8 codes starting at bit g * dim * bits / 8 of the row.
      const at::Tensor row = at::randint(0, 1 << bits, {dim}, at::kInt);
      const at::Tensor row_words = values_to_tile_order(pack_codes(row, bits), bits);
      for (int64_t g = 0; g < 8; ++g)
        for (int64_t nt = 0; nt < dim / 8; ++nt) {
          const int64_t bit = g * dim * bits / 8 + nt * bits;
          CHECK(code_at(row_words, bit / 32, bit % 32, bits) == row[8 * nt + g].item<int32_t>());
        }
    }
}

TEST_CASE("tile order: a cache storing it reads back the research quantizer's values",
          "[kivi][tile_order]") {
  for (int64_t bits : {2, 4}) {
    INFO("bits " << bits);
    CacheGeometry geometry;
    geometry.num_layers = 1;
    geometry.num_kv_heads = 2;
    geometry.head_dim = 64;
    geometry.max_batch = 1;
    geometry.dtype = at::kFloat;
    KiviOptions options;
    options.k_bits = options.v_bits = bits;
    options.group_size = 32;
    options.residual_length = 32;
    REQUIRE(keys_in_tile_order(geometry.head_dim, options.group_size));
    KiviCache cache(geometry, options);
    const at::Tensor k = at::randn({1, 2, 100, 64}), v = at::randn({1, 2, 100, 64});
    cache.append(0, k, v);
    const CacheView view = cache.view(0);
    REQUIRE(kivi_parts(view).key_quantized[0] == 96);
    REQUIRE(kivi_parts(view).value_quantized[0] == 68);
    const PackedKeys pk = quantize_keys(k.narrow(2, 0, 96), 32, bits);
    const at::Tensor keys = dequantize_keys(pk.codes, pk.scale, pk.min, 32, bits, at::kFloat);
    CHECK(at::equal(read_keys(kivi_parts(view), 0, 0, 96, at::kFloat), keys[0]));
    const PackedValues pv = quantize_values(v.narrow(2, 0, 68), 32, bits);
    const at::Tensor values = dequantize_values(pv.codes, pv.scale, pv.min, 32, bits, at::kFloat);
    CHECK(at::equal(read_values(kivi_parts(view), 0, 0, 68, at::kFloat), values[0]));
  }
}
