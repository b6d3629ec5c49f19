// The one forward pass of Llama-like decoders (transformers' LlamaForCausalLM and its
// relatives): embedding, then per layer RMSNorm -> q/k/v projections (+bias) -> rotary ->
// KV cache -> attention (GQA) -> o projection -> residual -> RMSNorm -> gated SiLU MLP ->
// residual, then the final RMSNorm and the LM head (optionally tied to the embedding).
// Families differ only by the DecoderSpec they pass.
#pragma once

#include <memory>

#include "kivi/model/causal_lm.h"
#include "kivi/model/decoder_spec.h"

namespace kivi {

class WeightSource;

// Loads every weight named by `spec` (checking shapes against `config`), fusing q/k/v and
// gate/up into single matrices, and returns the model. Throws kivi::Error naming the file and
// tensor on a missing or misshapen weight.
std::unique_ptr<CausalLM> build_decoder_lm(const ModelConfig& config, const DecoderSpec& spec,
                                           WeightSource& weights, const ModelOptions& options);

}  // namespace kivi
