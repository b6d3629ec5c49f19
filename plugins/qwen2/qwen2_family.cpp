// The "model_family" plugin qwen2: Qwen2 and Qwen2.5 checkpoints (Qwen2ForCausalLM).
// Differences from Llama, as transformers' modeling_qwen2.py has them: q/k/v always carry a
// bias and o_proj never does; with use_sliding_window, layers marked "sliding_attention" in
// layer_types (by default those at index >= max_window_layers) attend over a sliding window;
// those fields are Qwen2's, read here (ModelConfig::fields). GGUF files: general.architecture
// "qwen2", llama.cpp's tensor names, q/k not permuted (ggml rotates Qwen2 the NeoX way, as
// Hugging Face does).
#include "kivi/model/decoder_lm.h"
#include "kivi/model/model_config.h"
#include "kivi/model/model_family.h"
#include "kivi/plugin/plugin.h"

namespace {

// Per layer: the window (0 = full attention), as Qwen2Config derives layer_types. Checks the
// fields whether or not use_sliding_window is on, naming config.json and the field.
std::vector<int64_t> sliding_windows(const kivi::ModelConfig& c) {
  const kivi::ConfigFields f = c.fields();
  const int64_t layers = c.num_hidden_layers;
  const bool use = f.boolean("use_sliding_window", false);
  const int64_t window = f.integer("sliding_window", 0);
  if (use && window <= 0)
    f.fail("sliding_window", "a positive integer (use_sliding_window is true)");
  const int64_t max_window_layers = f.integer("max_window_layers", layers);
  const std::vector<std::string> types = f.strings("layer_types");
  if (!types.empty() && static_cast<int64_t>(types.size()) != layers)
    f.fail("layer_types",
           "one entry per layer (num_hidden_layers = " + std::to_string(layers) + ")");
  for (const auto& t : types)
    if (t != "full_attention" && t != "sliding_attention")
      f.fail("layer_types", "entries \"full_attention\" or \"sliding_attention\"");
  std::vector<int64_t> windows(layers, 0);
  if (!use) return windows;
  for (int64_t l = 0; l < layers; ++l)
    if (types.empty() ? l >= max_window_layers : types[l] == "sliding_attention")
      windows[l] = window;
  return windows;
}

class Qwen2Family final : public kivi::ModelFamily {
 public:
  std::vector<std::string> architectures() const override { return {"Qwen2ForCausalLM"}; }

  std::optional<kivi::GgufConvention> gguf(const std::string& architecture) const override {
    if (architecture != "qwen2") return std::nullopt;
    kivi::GgufConvention c;
    c.architecture = "qwen2";
    c.hf_architecture = "Qwen2ForCausalLM";
    c.model_type = "qwen2";
    return c;
  }

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
