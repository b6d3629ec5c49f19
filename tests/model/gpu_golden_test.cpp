// GPU golden tests: every fixture with both attention backends and the fp16/bf16 caches, in
// bfloat16 and float16 on CUDA, against the float32 reference. The main (tests/support/
// gpu_main.cpp) exits with 77 (CTest: skipped) when no CUDA device is present.
//
// Bounds (the reference is float32; the models run in half precision throughout):
//   float16:  max |logit diff| <= 0.05 (prefill, decode, chunk; measured on the CPU: up to 0.012)
//   bfloat16: max |logit diff| <= 0.4 (measured on the CPU: up to 0.20)
// Greedy continuations are reported (how many tokens agree before the first divergence),
// not required to match: a half-precision model may pick the other of two close logits, and
// every later token then differs.

#include <iostream>

#include <ATen/ATen.h>

#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using namespace kivi::test;

TEST_CASE("golden gpu: half-precision logits stay within the stated bounds",
          "[model][golden][gpu]") {
  const std::string fixture = GENERATE(from_range(model_fixture_names()));
  const std::string attention = GENERATE(as<std::string>{}, "eager", "sdpa");
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  const double bound = half_precision_bound(dtype);
  const std::string cache = dtype == at::kHalf ? "fp16" : "bf16";
  INFO("fixture " << fixture << ", attention " << attention << ", " << c10::toString(dtype));
  auto loaded = load_fixture_model(fixture, attention, dtype, at::Device(at::kCUDA, 0));
  const GoldenResult r = run_golden(*loaded.model, fixture, cache);
  std::cout << "golden cuda " << c10::toString(dtype) << " " << fixture << " " << attention
            << ": prefill " << r.prefill_max_diff << ", decode " << r.decode_max_diff << ", chunk "
            << r.chunk_max_diff << ", greedy tokens agreeing before the first divergence "
            << greedy_agreement(r) << "\n";
  CHECK(r.prefill_max_diff <= bound);
  CHECK(r.decode_max_diff <= bound);
  CHECK(r.chunk_max_diff <= bound);
}
