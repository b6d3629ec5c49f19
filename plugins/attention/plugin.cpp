// The "attention" plugins eager and sdpa: one library, two dense backends. sdpa's option:
// fused_decode (default true): one-token decode steps on a GPU through the split-K kernel of
// cuda/dense_decode.h rather than at::scaled_dot_product_attention, whose cuDNN path builds a
// plan for every new key length (a generation's every step: ~80 ms each on the H200,
// docs/gpu.md); false keeps ATen's SDPA for equal-length steps.
#include "kivi/plugin/plugin.h"
#include "backends.h"

namespace {

using kivi::Attention;
using kivi::ConfigTable;

std::unique_ptr<Attention> make_eager(ConfigTable&) {
  return std::make_unique<kivi::attention::EagerAttention>();
}
std::unique_ptr<Attention> make_sdpa(ConfigTable& o) {
  return std::make_unique<kivi::attention::SdpaAttention>(o.get_bool("fused_decode", true));
}

}  // namespace

KIVI_PLUGIN(kivi_attention, "kivi-attention", "0.1.0",
            kivi::plugin::factory<Attention, &make_eager>(
                "eager", "reference attention: matmul, float32 softmax, matmul (dense caches)"),
            kivi::plugin::factory<Attention, &make_sdpa>(
                "sdpa", "at::scaled_dot_product_attention; flash kernels on a GPU (dense caches)"))
