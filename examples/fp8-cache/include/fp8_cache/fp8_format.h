// The fp8 cache's view format, "fp8-e4m3/1": per layer, keys and values stored as float8 e4m3
// (the format vLLM's fp8 KV cache uses) with one float32 scale per token and kv head
// (x = code * scale; scale = max |x| / 448 over the head's D channels). An attention plugin
// that reads this format includes this header and checks CacheView::format == kFormat.
#pragma once

#include <string_view>

#include <ATen/Tensor.h>

namespace fp8_cache {

inline constexpr std::string_view kFormat = "fp8-e4m3/1";

struct Fp8Parts {
  at::Tensor k, v;              // [B, H, capacity, D] float8_e4m3fn
  at::Tensor k_scale, v_scale;  // [B, H, capacity] float32
};

}  // namespace fp8_cache
