// Shared by the model tests: a registry with the model, attention and cache plugins linked
// statically, fixture paths, the reference tensors, and the golden comparison itself.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "kivi/model/causal_lm.h"
#include "kivi/model_loader.h"
#include "kivi/registry.h"

namespace kivi::test {

// The five checkpoints of tests/fixtures/models.
const std::vector<std::string>& model_fixture_names();
std::filesystem::path model_fixture(const std::string& name);

// A registry holding kivi_llama, kivi_qwen2, kivi_attention, kivi_fp_cache and kivi_kivi_cache.
const Registry& model_registry();

// reference.safetensors of a fixture, by tensor name (CPU copies).
std::map<std::string, at::Tensor> load_reference(const std::string& fixture);

LoadedModel load_fixture_model(const std::string& fixture, const std::string& attention,
                               at::ScalarType dtype, at::Device device);

struct GoldenResult {
  double prefill_max_diff = 0;  // max |logit - reference| over valid prompt positions
  double decode_max_diff = 0;   // over the token-by-token decode steps
  double chunk_max_diff = 0;    // the same decode tokens given as one chunk after the prompt
  std::vector<std::vector<int64_t>> greedy;  // [B][32] greedy continuation
  std::vector<std::vector<int64_t>> greedy_reference;
};

// Max |logit diff| allowed for a model run in `dtype` (float16 or bfloat16) against the
// float32 reference.
double half_precision_bound(at::ScalarType dtype);

// "agreeing/total": greedy tokens equal to the reference before each sequence's first
// divergence, summed over the batch.
std::string greedy_agreement(const GoldenResult& r);

// Runs a fixture's prompts (one right-padded batch) and decode steps through `model` with a
// fresh cache of plugin `cache_name` (with `cache_options`, TOML) per phase, and compares with
// the reference.
GoldenResult run_golden(CausalLM& model, const std::string& fixture, const std::string& cache_name,
                        const std::string& cache_options = "");

}  // namespace kivi::test

namespace kivi::test {

// Writes a safetensors file from named tensors (any dtype the format has), in the order given.
void write_safetensors(const std::filesystem::path& file,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors);
// Writes `header` (JSON text) with its length prefix, then `data_bytes` zero bytes.
void write_raw_safetensors(const std::filesystem::path& file, const std::string& header,
                           size_t data_bytes);
// Removes a folder and everything in it (missing is fine).
void remove_tree(const std::filesystem::path& dir);
// A fresh empty folder under the temp directory, removed by the destructor.
struct TempDir {
  explicit TempDir(const std::string& tag);
  ~TempDir();
  std::filesystem::path path;
};

}  // namespace kivi::test
