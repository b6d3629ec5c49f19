// A GGUF file as a checkpoint: its metadata as a ModelConfig and its tensors as a WeightSource
// under their Hugging Face names, dequantized at load into the requested dtype. What depends on
// the architecture (its Hugging Face names, tensor names, the q/k permutation) comes from the
// family that reads it (GgufConvention, ModelFamily::gguf); the loader asks the registry for it
// (model_loader.h).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "kivi/model/gguf_convention.h"
#include "kivi/model/gguf_file.h"
#include "kivi/model/model_config.h"
#include "kivi/model/weight_source.h"

namespace kivi {

// Whether `path` is a regular file beginning with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// The file's general.architecture (throws naming the file when it is missing).
std::string gguf_architecture(const GgufFile& file);

// The "<architecture>.*" hyperparameters of the convention's architecture, the tokenizer's
// bos/eos/pad ids, tied embeddings when there is no output.weight, as the config.json the
// convention names. The result passes the same checks as a config.json (parse_model_config); a
// missing or wrong key is an error naming the file and the key, an unsupported rope scaling
// names the value.
ModelConfig gguf_model_config(const GgufFile& file, const GgufConvention& convention);

class GgufWeights final : public WeightSource {
 public:
  // `config` gives the head counts needed to undo the q/k permutation (convention.unpermute_qk).
  GgufWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& config,
              GgufConvention convention);
  std::string describe() const override { return file_->path().string(); }
  bool contains(const std::string& name) const override;
  at::Tensor load(const std::string& name, at::IntArrayRef shape,
                  const at::TensorOptions& options) override;

 private:
  std::shared_ptr<const GgufFile> file_;
  GgufConvention convention_;
  int64_t heads_ = 0;
  int64_t kv_heads_ = 0;
};

}  // namespace kivi
