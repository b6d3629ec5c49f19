// GPU golden tests: every fixture with both attention backends and the fp16/bf16 caches, in
// bfloat16 and float16 on CUDA, against the float32 reference. Exits with 77 (CTest: skipped)
// when no CUDA device is present.
//
// Bounds (the reference is float32; the models run in half precision throughout):
//   float16:  max |logit diff| <= 0.05 (prefill, decode, chunk)
//   bfloat16: max |logit diff| <= 0.25
// Greedy continuations are reported (how many tokens agree before the first divergence),
// not required to match: a half-precision model may pick the other of two close logits, and
// every later token then differs.
#define CATCH_CONFIG_RUNNER

#include <iostream>

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include "model_test_support.h"

// Last: c10/util/Logging.h defines a glog-style CHECK macro; Catch's must win.
#undef CHECK
#include <catch2/catch.hpp>

using namespace kivi;
using namespace kivi::test;

TEST_CASE("golden gpu: half-precision logits stay within the stated bounds",
          "[model][golden][gpu]") {
  const std::string fixture = GENERATE(from_range(model_fixture_names()));
  const std::string attention = GENERATE(as<std::string>{}, "eager", "sdpa");
  const auto dtype = GENERATE(at::kHalf, at::kBFloat16);
  const double bound = dtype == at::kHalf ? 0.05 : 0.25;
  const std::string cache = dtype == at::kHalf ? "fp16" : "bf16";
  INFO("fixture " << fixture << ", attention " << attention << ", " << c10::toString(dtype));
  auto loaded = load_fixture_model(fixture, attention, dtype, at::Device(at::kCUDA, 0));
  const GoldenResult r = run_golden(*loaded.model, fixture, cache);
  size_t agree = 0, total = 0;
  for (size_t b = 0; b < r.greedy.size(); ++b) {
    size_t i = 0;
    while (i < r.greedy[b].size() && r.greedy[b][i] == r.greedy_reference[b][i]) ++i;
    agree += i;
    total += r.greedy[b].size();
  }
  std::cout << "golden cuda " << c10::toString(dtype) << " " << fixture << " " << attention
            << ": prefill " << r.prefill_max_diff << ", decode " << r.decode_max_diff << ", chunk "
            << r.chunk_max_diff << ", greedy tokens agreeing before the first divergence " << agree
            << "/" << total << "\n";
  CHECK(r.prefill_max_diff <= bound);
  CHECK(r.decode_max_diff <= bound);
  CHECK(r.chunk_max_diff <= bound);
}

int main(int argc, char* argv[]) {
  if (!at::hasCUDA() || at::detail::getCUDAHooks().deviceCount() == 0) {
    std::cout << "model_gpu_test: no CUDA device, skipping\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
