// Every KVCache through one suite: the fp caches exactly, kivi exactly at 16 bits and within
// its quantization bound. A code is at most half a step off (step = group range / (2^bits - 1),
// at most 8 / (2^bits - 1) here); keys that a truncate inside a group dequantized back into the
// residual are quantized again at the next flush, possibly on another grid: two half steps.
#include "cache_conformance.h"
#include "fp_cache_factory.h"
#include "kivi_cache.h"

namespace {

using kivi::test::fp_cache_factory;

kivi::kivi_cache::KiviCacheFactory kivi_factory(int64_t bits) {
  kivi::kivi_cache::KiviOptions options;
  options.k_bits = options.v_bits = bits;
  options.group_size = 32;
  options.residual_length = 64;
  options.chunk_tokens = 48;
  return kivi::kivi_cache::KiviCacheFactory(options);
}

}  // namespace

TEST_CASE("fp32 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("fp32"), *fp_cache_factory("fp32"),
                                    at::kFloat, 0);
}
TEST_CASE("fp16 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("fp16"), *fp_cache_factory("fp32"), at::kHalf,
                                    0);
}
TEST_CASE("bf16 cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(*fp_cache_factory("bf16"), *fp_cache_factory("fp32"),
                                    at::kBFloat16, 0);
}
TEST_CASE("kivi 16-bit cache conforms exactly", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(16), *fp_cache_factory("fp32"), at::kFloat, 0);
}
TEST_CASE("kivi 8-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(8), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 255 + 1e-6);
}
TEST_CASE("kivi 4-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 15 + 1e-6);
}
TEST_CASE("kivi 2-bit cache conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(2), *fp_cache_factory("fp32"), at::kFloat,
                                    1.0 / 3 + 1e-6);
}
TEST_CASE("kivi 4-bit cache in fp16 conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kHalf,
                                    1.0 / 15 + 2e-3);
}
TEST_CASE("kivi 4-bit cache in bf16 conforms", "[conformance]") {
  kivi::test::run_cache_conformance(kivi_factory(4), *fp_cache_factory("fp32"), at::kBFloat16,
                                    1.0 / 15 + 1e-2);
}
