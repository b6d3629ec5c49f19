// FlashInfer's batch decode kernel as a peer of the fused KIVI kernel in kivi_attention_bench:
// the same tokens in a paged fp16 cache and in a paged fp8 (e4m3) cache, the cache a user of
// vLLM or TensorRT-LLM would pick instead of KIVI. Built from the headers the flashinfer-python
// wheel ships (-DKIVI_FLASHINFER_INCLUDE, gathered by tools/gpu/gather-flashinfer.sh); without
// them the bench builds all the same and says the peer is absent.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

namespace kivi::bench {

// Empty when the peer is built in; otherwise why it is absent.
std::string flashinfer_absent_reason();

class FlashInferDecode {
 public:
  // k, v: [batch, kv_heads, context, head_dim] fp16 on the GPU (context a multiple of 16,
  // head_dim 64 or 128, q_heads / kv_heads in 1, 2, 3, 4, 6, 8); fp8: the cache holds them
  // converted to e4m3 (scale 1). Plans the launch once (FlashInfer's split-KV scheduler).
  FlashInferDecode(const at::Tensor& k, const at::Tensor& v, int64_t q_heads, double scale,
                   bool fp8);
  ~FlashInferDecode();
  // out = attention of q [batch, q_heads, 1, head_dim] (fp16) over the cache; out like q.
  void run(const at::Tensor& q, at::Tensor& out);
  double cache_mb() const;

  struct State;  // (defined where FlashInfer's types are known)

 private:
  std::unique_ptr<State> state_;
};

}  // namespace kivi::bench
