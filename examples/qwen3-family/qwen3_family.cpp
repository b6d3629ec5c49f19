// A third-party "model_family" plugin: Qwen3 (Qwen3ForCausalLM). What differs from Llama, as
// transformers' modeling_qwen3.py has it: q_norm and k_norm, RMSNorms over each head's
// head_dim applied to q and k before rotary (declared to the shared decoder through
// DecoderSpec's per-layer q_norm / k_norm); attention_bias (false in released checkpoints) on
// q/k/v/o; an explicit head_dim.
#include "kivi/model/decoder_lm.h"
#include "kivi/model/model_config.h"
#include "kivi/model/model_family.h"
#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"

namespace {

class Qwen3Family final : public kivi::ModelFamily {
 public:
  std::vector<std::string> architectures() const override { return {"Qwen3ForCausalLM"}; }

  std::unique_ptr<kivi::CausalLM> build(const kivi::ModelConfig& config,
                                        kivi::WeightSource& weights,
                                        const kivi::ModelOptions& options) const override {
    const kivi::ConfigFields fields = config.fields();
    kivi::check(
        !fields.boolean("use_sliding_window", false),
        config.source +
            ": field \"use_sliding_window\" is true; the qwen3 plugin runs full attention only");
    kivi::DecoderSpec spec;
    spec.q_norm = "model.layers.{layer}.self_attn.q_norm.weight";
    spec.k_norm = "model.layers.{layer}.self_attn.k_norm.weight";
    spec.qkv_bias = spec.o_bias = config.attention_bias;
    spec.tie_word_embeddings = config.tie_word_embeddings;
    return kivi::build_decoder_lm(config, spec, weights, options);
  }
};

std::unique_ptr<kivi::ModelFamily> make(kivi::ConfigTable&) {
  return std::make_unique<Qwen3Family>();
}

}  // namespace

KIVI_PLUGIN(qwen3_family, "qwen3-family", "1.0.0",
            kivi::plugin::factory<kivi::ModelFamily, &make>(
                "qwen3", "Qwen3 (Qwen3ForCausalLM), third-party example"))
