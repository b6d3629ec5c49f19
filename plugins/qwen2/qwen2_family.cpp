// The "model_family" plugin qwen2: Qwen2 and Qwen2.5 checkpoints (Qwen2ForCausalLM).
// Differences from Llama, as transformers' modeling_qwen2.py has them: q/k/v always carry a
// bias and o_proj never does; with use_sliding_window, layers marked "sliding_attention" in
// layer_types (by default those at index >= max_window_layers) attend over a sliding window.
#include "kivi/model/decoder_lm.h"
#include "kivi/model/model_family.h"
#include "kivi/plugin/plugin.h"

namespace {

// Per layer: the window (0 = full attention), as Qwen2Config derives layer_types.
std::vector<int64_t> sliding_windows(const kivi::ModelConfig& c) {
  std::vector<int64_t> windows(c.num_hidden_layers, 0);
  if (!c.use_sliding_window) return windows;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const bool sliding =
        c.layer_types.empty() ? l >= c.max_window_layers : c.layer_types[l] == "sliding_attention";
    if (sliding) windows[l] = c.sliding_window;
  }
  return windows;
}

class Qwen2Family final : public kivi::ModelFamily {
 public:
  std::vector<std::string> architectures() const override { return {"Qwen2ForCausalLM"}; }

  std::unique_ptr<kivi::CausalLM> build(const kivi::ModelConfig& config,
                                        kivi::WeightSource& weights,
                                        const kivi::ModelOptions& options) const override {
    kivi::DecoderSpec spec;
    spec.qkv_bias = true;
    spec.o_bias = false;
    spec.mlp_bias = false;
    spec.tie_word_embeddings = config.tie_word_embeddings;
    spec.sliding_window = sliding_windows(config);
    return kivi::build_decoder_lm(config, spec, weights, options);
  }
};

std::unique_ptr<kivi::ModelFamily> make_qwen2(kivi::ConfigTable&) {
  return std::make_unique<Qwen2Family>();
}

}  // namespace

KIVI_PLUGIN(kivi_qwen2, "kivi-qwen2", "0.1.0",
            kivi::plugin::factory<kivi::ModelFamily, &make_qwen2>(
                "qwen2", "Qwen2 / Qwen2.5 (Qwen2ForCausalLM) from Hugging Face checkpoints"))
