// The quantizer against tests/fixtures/kivi (written by tools/fixtures/make_kivi_fixtures.py,
// a straightforward torch transcription of the research code): codes and scale/min identical,
// dequantized values within one rounding of the model dtype, and per-bit-width error bounds.
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include "kivi_catch.h"

#include "quantize.h"
#include "test_paths.h"

namespace {

using json = nlohmann::json;
using namespace kivi::kivi_cache;

const std::filesystem::path kDir = kivi::test::fixtures_dir() / "kivi";
const char* kRegenerate = "regenerate with: .venv/bin/python tools/fixtures/make_kivi_fixtures.py";

at::Tensor load(const json& entry) {
  const std::string type = entry.at("dtype");
  const at::ScalarType dtype = type == "float32"   ? at::kFloat
                               : type == "float16" ? at::kHalf
                                                   : at::kInt;
  std::ifstream in(kDir / entry.at("file").get<std::string>(), std::ios::binary);
  INFO("fixture " << entry.at("file") << " missing; " << kRegenerate);
  REQUIRE(in);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
  at::Tensor t = at::from_blob(bytes.data(), shape, dtype).clone();
  REQUIRE(static_cast<size_t>(t.nbytes()) == bytes.size());
  return t;
}

json manifest() {
  std::ifstream in(kDir / "manifest.json");
  INFO("no " << (kDir / "manifest.json") << "; " << kRegenerate);
  REQUIRE(in);
  return json::parse(in);
}

// One unit in the last place of `dtype` at |x| (normal range), plus the smallest subnormal.
at::Tensor ulp(const at::Tensor& x, at::ScalarType dtype) {
  const double eps = dtype == at::kHalf ? 1.0 / 1024 : 1.0 / (1 << 23);
  const double tiny = dtype == at::kHalf ? 6e-8 : 1.5e-45;
  return x.abs().to(at::kDouble) * eps + tiny;
}

}  // namespace

TEST_CASE("pack order: code j of a word starts at bit j * bits", "[kivi][quantize]") {
  // 2 bits: codes 1, 2, 3, 0, ... 3 -> 0b11 ... 00 11 10 01
  std::vector<int32_t> codes(16, 0);
  codes[0] = 1, codes[1] = 2, codes[2] = 3, codes[15] = 3;
  const at::Tensor words = pack_codes(at::tensor(codes, at::kInt), 2);
  REQUIRE(words.numel() == 1);
  CHECK(static_cast<uint32_t>(words.item<int32_t>()) == ((3u << 30) | (3u << 4) | (2u << 2) | 1u));
  for (int64_t bits : {2, 4, 8}) {
    const at::Tensor random = at::randint(0, 1 << bits, {3, 5, 64}, at::kInt);
    const at::Tensor packed = pack_codes(random, bits);
    CHECK(packed.size(-1) == 64 * bits / 32);
    CHECK(at::equal(unpack_codes(packed, bits), random));
  }
}

TEST_CASE("codes, scales and minima equal the research code's", "[kivi][quantize]") {
  const json m = manifest();
  REQUIRE(m.at("version") == 1);
  for (const json& c : m.at("cases")) {
    const at::Tensor x = load(c.at("input"));  // [B, H, T, D]
    const int64_t group = c.at("group_size");
    const int64_t batch = x.size(0), heads = x.size(1), dim = x.size(3);
    for (const json& r : c.at("results")) {
      const int64_t bits = r.at("bits");
      const std::string kind = r.at("kind");
      INFO(c.at("name").get<std::string>() << " " << kind << " " << bits << " bits");
      const at::Tensor ref_codes = load(r.at("codes")), ref_scale = load(r.at("scale")),
                       ref_min = load(r.at("min"));
      at::Tensor codes, scale, min, deq, ref_deq;
      if (kind == "keys") {
        const PackedKeys q = quantize_keys(x, group, bits);
        // Ours [B, H, groups, D, words] -> theirs [B, H, D, groups * words].
        codes = q.codes.permute({0, 1, 3, 2, 4}).reshape({batch, heads, dim, -1});
        scale = q.scale.transpose(2, 3);
        min = q.min.transpose(2, 3);
        deq = dequantize_keys(q.codes, q.scale, q.min, group, bits, x.scalar_type());
        // Reference: [B, H, D, T] codes * per-group scale + min, back to [B, H, T, D].
        const at::Tensor c64 = unpack_codes(ref_codes, bits).to(at::kDouble);
        ref_deq =
            (c64.reshape({batch, heads, dim, -1, group}) * ref_scale.to(at::kDouble).unsqueeze(-1) +
             ref_min.to(at::kDouble).unsqueeze(-1))
                .reshape({batch, heads, dim, -1})
                .transpose(2, 3);
      } else {
        const PackedValues q = quantize_values(x, group, bits);
        codes = q.codes;
        scale = q.scale;
        min = q.min;
        deq = dequantize_values(q.codes, q.scale, q.min, group, bits, x.scalar_type());
        const at::Tensor c64 = unpack_codes(ref_codes, bits).to(at::kDouble);
        ref_deq = (c64.reshape({batch, heads, -1, dim / group, group}) *
                       ref_scale.to(at::kDouble).unsqueeze(-1) +
                   ref_min.to(at::kDouble).unsqueeze(-1))
                      .reshape(x.sizes());
      }
      REQUIRE(at::equal(codes, ref_codes));
      REQUIRE(at::equal(scale, ref_scale));
      REQUIRE(at::equal(min, ref_min));
      // One rounding of the model dtype (ours computes in float32 and rounds once).
      REQUIRE(deq.isfinite().all().item<bool>());
      const at::Tensor off = (deq.to(at::kDouble) - ref_deq).abs() -
                             ulp(ref_deq, x.scalar_type()) / 2 - ulp(ref_deq, at::kFloat);
      CHECK(off.max().item<double>() <= 0);
    }
  }
}

TEST_CASE("error is at most half a step per bit width", "[kivi][quantize]") {
  const json m = manifest();
  for (const json& c : m.at("cases")) {
    const at::Tensor x = load(c.at("input"));
    const int64_t group = c.at("group_size");
    const at::ScalarType dtype = x.scalar_type();
    double previous = 1e300;
    for (int64_t bits : {2, 4, 8}) {
      INFO(c.at("name").get<std::string>() << " " << bits << " bits");
      const PackedKeys k = quantize_keys(x, group, bits);
      const PackedValues v = quantize_values(x, group, bits);
      const at::Tensor k_err =
          (dequantize_keys(k.codes, k.scale, k.min, group, bits, dtype).to(at::kDouble) -
           x.to(at::kDouble))
              .abs();
      const at::Tensor v_err =
          (dequantize_values(v.codes, v.scale, v.min, group, bits, dtype).to(at::kDouble) -
           x.to(at::kDouble))
              .abs();
      // The step of each element's group, [B, H, T, D].
      const at::Tensor k_step = k.scale.to(at::kDouble).repeat_interleave(group, 2);
      const at::Tensor v_step = v.scale.to(at::kDouble).repeat_interleave(group, 3);
      // Slack: the dtype's rounding of x - min (up to the group's largest magnitude) and of x'.
      const int64_t top = (1 << bits) - 1;
      auto magnitude = [&](const at::Tensor& min, const at::Tensor& scale) {
        const at::Tensor lo = min.to(at::kDouble), step = scale.to(at::kDouble);
        return at::maximum(lo.abs(), (lo + step * top).abs());
      };
      const at::Tensor k_mag = magnitude(k.min, k.scale).repeat_interleave(group, 2);
      const at::Tensor v_mag = magnitude(v.min, v.scale).repeat_interleave(group, 3);
      // A step below the smallest fp16 subnormal rounds to 0 and the group decodes to its min.
      const double underflow = dtype == at::kHalf ? top * 6e-8 : 0.0;
      CHECK(((k_err - 0.5 * k_step - 4 * ulp(k_mag, dtype) - 2 * ulp(x, dtype))
                 .max()
                 .item<double>()) <= underflow);
      CHECK(((v_err - 0.5 * v_step - 4 * ulp(v_mag, dtype) - 2 * ulp(x, dtype))
                 .max()
                 .item<double>()) <= underflow);
      // More bits, less error on ordinary data.
      const std::string name = c.at("name");
      if (name.find("normal") != std::string::npos) {
        const double mean = k_err.mean().item<double>() + v_err.mean().item<double>();
        CHECK(mean < previous);
        previous = mean;
      }
    }
  }
}

TEST_CASE("constant groups and signed zeros decode exactly", "[kivi][quantize]") {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf}) {
    at::Tensor x = at::full({1, 2, 64, 64}, -0.0, dtype);
    x.narrow(2, 0, 32).fill_(3.25);
    x.narrow(2, 40, 8).fill_(0.0);  // +0 among -0: still a zero range
    for (int64_t bits : {2, 4, 8}) {
      const PackedKeys k = quantize_keys(x, 32, bits);
      const at::Tensor deq = dequantize_keys(k.codes, k.scale, k.min, 32, bits, dtype);
      CHECK(at::equal(deq, x));  // -0 == 0
      CHECK(at::equal(unpack_codes(k.codes, bits), at::zeros_like(unpack_codes(k.codes, bits))));
      const PackedValues v = quantize_values(x, 32, bits);
      CHECK(at::equal(dequantize_values(v.codes, v.scale, v.min, 32, bits, dtype), x));
    }
  }
}
