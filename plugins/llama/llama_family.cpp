// The "model_family" plugin llama: Llama 2, 3, 3.1 and 3.2 checkpoints (LlamaForCausalLM).
// Everything is the shared decoder; Llama's own choices are the bias switches (attention_bias
// covers q, k, v and o; mlp_bias the MLP) and the Hugging Face weight names (the defaults).
// GGUF files: general.architecture "llama", llama.cpp's tensor names, and q/k rows permuted by
// its converter (ggml rotates adjacent pairs where Hugging Face rotates halves), undone at load.
#include "kivi/model/decoder_lm.h"
#include "kivi/model/model_config.h"
#include "kivi/model/model_family.h"
#include "kivi/plugin/plugin.h"

namespace {

class LlamaFamily final : public kivi::ModelFamily {
 public:
  std::vector<std::string> architectures() const override { return {"LlamaForCausalLM"}; }

  std::optional<kivi::GgufConvention> gguf(const std::string& architecture) const override {
    if (architecture != "llama") return std::nullopt;
    kivi::GgufConvention c;
    c.architecture = "llama";
    c.hf_architecture = "LlamaForCausalLM";
    c.model_type = "llama";
    c.attention_bias_from_q_bias = true;
    c.unpermute_qk = true;
    return c;
  }

  std::unique_ptr<kivi::CausalLM> build(const kivi::ModelConfig& config,
                                        kivi::WeightSource& weights,
                                        const kivi::ModelOptions& options) const override {
    kivi::DecoderSpec spec;
    spec.qkv_bias = config.attention_bias;
    spec.o_bias = config.attention_bias;
    spec.mlp_bias = config.mlp_bias;
    spec.tie_word_embeddings = config.tie_word_embeddings;
    return kivi::build_decoder_lm(config, spec, weights, options);
  }
};

std::unique_ptr<kivi::ModelFamily> make_llama(kivi::ConfigTable&) {
  return std::make_unique<LlamaFamily>();
}

}  // namespace

KIVI_PLUGIN(kivi_llama, "kivi-llama", "0.1.0",
            kivi::plugin::factory<kivi::ModelFamily, &make_llama>(
                "llama", "Llama 2/3/3.1/3.2 (LlamaForCausalLM) from Hugging Face checkpoints"))
