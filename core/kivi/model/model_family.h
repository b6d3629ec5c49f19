// The model-family interface. Plugins of kind "model_family" (e.g. "llama", "qwen2") say which
// Hugging Face `architectures` strings they accept and build a CausalLM from a config and a
// source of weights. The types they build from live in kivi/model/ (added with the model
// families): ModelConfig (config.json: the common fields, and the file itself for the family's
// own through ModelConfig::fields()), WeightSource (safetensors, GGUF or dummy weights),
// ModelOptions (device, dtype, attention backend) and CausalLM.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kivi/model/gguf_convention.h"

namespace kivi {

struct ModelConfig;
struct ModelOptions;
class WeightSource;
class CausalLM;

class ModelFamily {
 public:
  static constexpr const char* kPluginKind = "model_family";
  virtual ~ModelFamily() = default;

  // config.json `architectures` entries this family builds, e.g. {"LlamaForCausalLM"}.
  virtual std::vector<std::string> architectures() const = 0;

  // The convention of GGUF files whose general.architecture is `architecture`, when this family
  // reads them (their metadata's Hugging Face names, tensor names, permutations); nullopt else.
  virtual std::optional<GgufConvention> gguf(const std::string& architecture) const {
    (void)architecture;
    return std::nullopt;
  }

  // Builds the model; weights are read (and converted to options' dtype/device) through
  // `weights`. Throws kivi::Error naming the file and tensor on a missing or misshapen weight.
  virtual std::unique_ptr<CausalLM> build(const ModelConfig& config, WeightSource& weights,
                                          const ModelOptions& options) const = 0;
};

}  // namespace kivi
