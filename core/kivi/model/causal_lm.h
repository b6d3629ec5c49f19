// CausalLM: a decoder-only language model that runs through a KVCache. Built by a
// ModelFamily plugin from a ModelConfig, a WeightSource and ModelOptions.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <ATen/Tensor.h>

#include "kivi/cache/cache_types.h"
#include "kivi/model/model_config.h"

namespace kivi {

class Attention;
class KVCache;
class TensorParallelGroup;

// Run-time choices for building a model.
struct ModelOptions {
  at::ScalarType dtype = at::kFloat;  // weights and activations
  at::Device device = at::kCPU;
  // The backend every layer uses. Not fixed by the build: CausalLM::set_attention swaps it
  // (with the cache whose views it reads); may be null at build time, then set before forward().
  std::shared_ptr<const Attention> attention;
  // On CUDA, one-token decode steps replay captured graphs between the attentions
  // (model/decode_graphs.h); off: every op is launched from the host.
  bool cuda_graphs = true;
  // Tensor parallelism (parallel/tensor_parallel.h): this rank's group; the model loads only
  // its shard of each weight (parallel/shard_plan.h) and its caches hold only its KV heads.
  // Null: the whole model in this process.
  std::shared_ptr<TensorParallelGroup> parallel;
};

// Named debug taps: called with each intermediate as the forward pass makes it, e.g.
// "embed", "layer3.attn_out", "final_norm", "logits" (CausalLM::tap_names lists them).
using TapFn = std::function<void(const std::string& name, const at::Tensor& value)>;

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const ModelOptions& options() const = 0;

  // The geometry a cache for this model must have (dtype and device of the model).
  virtual CacheGeometry cache_geometry(int64_t max_batch, int64_t max_tokens = 0) const = 0;

  // Runs new tokens through the model, appending their K/V to `cache`.
  //   input_ids, positions: [B, T] int64 (positions are absolute, for the rotary embedding;
  //   normally cache.length(b) + t). counts: [B] valid tokens per right-padded row (empty =
  //   all T). B must equal the cache's max_batch. When the cache is empty for every sequence,
  //   attention runs as prefill over the new tokens' own K/V; otherwise as decode over the cache.
  // Returns logits [B, T, vocab] float32 (rows past counts[b] are unspecified).
  virtual at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& positions,
                             std::span<const int64_t> counts, KVCache& cache) = 0;

  // forward(), keeping only each row's last valid position: logits [B, vocab] float32 (row b's
  // position counts[b] - 1, or T - 1 when counts is empty; an empty row's are unspecified). What
  // a prompt's prefill needs, without the [B, T, vocab] float32 of every position (2.1 GB for a
  // 4K-token prompt of Llama 3, and the lm_head's work on all of them). The same values as
  // forward()'s rows up to the rounding of a matrix product of another shape.
  virtual at::Tensor forward_last(const at::Tensor& input_ids, const at::Tensor& positions,
                                  std::span<const int64_t> counts, KVCache& cache) = 0;

  // The attention backend every layer uses from the next forward() on; the caller pairs it with
  // the caches it passes (Attention::supports their view format).
  virtual void set_attention(std::shared_ptr<const Attention> attention) = 0;

  // Installs (or, with an empty function, removes) the debug tap.
  virtual void set_tap(TapFn tap) = 0;
};

}  // namespace kivi
