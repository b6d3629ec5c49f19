// A GGUF file as a checkpoint: its metadata as a ModelConfig and its tensors as a WeightSource
// under their Hugging Face names, dequantized at load into the requested dtype.
//
// llama.cpp's converter permutes the rows of Llama's q/k projections (it undoes Hugging Face's
// rotary permutation, because ggml rotates adjacent pairs where Hugging Face rotates halves);
// GgufWeights permutes them back, so the one forward pass (decoder_lm.h) gets HF-layout weights.
// Qwen2 files are not permuted (ggml rotates Qwen2 the NeoX way, as Hugging Face does).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "kivi/model/gguf_file.h"
#include "kivi/model/model_config.h"
#include "kivi/model/weight_source.h"

namespace kivi {

// Whether `path` is a regular file beginning with the GGUF magic.
bool is_gguf_file(const std::filesystem::path& path);

// general.architecture "llama" or "qwen2" and its "<arch>.*" hyperparameters, the tokenizer's
// bos/eos/pad ids, tied embeddings when there is no output.weight. The result passes the same
// checks as a config.json (parse_model_config); a missing or wrong key is an error naming the
// file and the key, an unsupported architecture or rope scaling names the value.
ModelConfig gguf_model_config(const GgufFile& file);

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt for a name with
// no GGUF counterpart.
std::optional<std::string> gguf_tensor_name(const std::string& hf_name);

class GgufWeights final : public WeightSource {
 public:
  // `config` gives the head counts needed to undo the q/k permutation.
  GgufWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& config);
  std::string describe() const override { return file_->path().string(); }
  bool contains(const std::string& name) const override;
  at::Tensor load(const std::string& name, at::IntArrayRef shape,
                  const at::TensorOptions& options) override;

 private:
  std::shared_ptr<const GgufFile> file_;
  bool permuted_qk_ = false;  // llama files
  int64_t heads_ = 0;
  int64_t kv_heads_ = 0;
};

}  // namespace kivi
