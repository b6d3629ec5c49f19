#include "kivi/model/gguf_weights.h"

#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"

namespace kivi {
namespace fs = std::filesystem;
namespace {

// Undoes llama.cpp's permute(): rows of each head were reordered from [2, head_dim/2] (HF's
// halves) to [head_dim/2, 2] (ggml's adjacent pairs). w: [heads * head_dim, ...] (a weight or
// a bias), returned in HF order.
at::Tensor unpermute_heads(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0);
  std::vector<int64_t> view{heads, rows / heads / 2, 2};
  for (int64_t d = 1; d < w.dim(); ++d) view.push_back(w.size(d));
  return w.reshape(view).transpose(1, 2).reshape(w.sizes()).contiguous();
}

}  // namespace

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string(magic, 4) == "GGUF";
}

std::string gguf_architecture(const GgufFile& file) {
  const auto arch = file.get_string("general.architecture");
  check(arch.has_value(), file.path().string() + ": metadata \"general.architecture\" is missing");
  return *arch;
}

ModelConfig gguf_model_config(const GgufFile& file, const GgufConvention& convention) {
  const std::string where = file.path().string();
  const std::string p = convention.architecture + ".";
  const auto require = [&](const std::string& key) {
    const auto v = file.get_int(p + key);
    check(v.has_value(), where + ": metadata \"" + p + key + "\" is missing");
    return *v;
  };

  nlohmann::json c;
  c["architectures"] = {convention.hf_architecture};
  c["model_type"] = convention.model_type;
  c["hidden_size"] = require("embedding_length");
  c["intermediate_size"] = require("feed_forward_length");
  c["num_hidden_layers"] = require("block_count");
  c["num_attention_heads"] = require("attention.head_count");
  c["num_key_value_heads"] =
      file.get_int(p + "attention.head_count_kv").value_or(c["num_attention_heads"]);
  c["max_position_embeddings"] = require("context_length");
  c["rms_norm_eps"] = file.get_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-6);
  c["rope_theta"] = file.get_float(p + "rope.freq_base").value_or(10000.0);
  c["hidden_act"] = "silu";

  const int64_t heads = c["num_attention_heads"];
  check(heads > 0,
        where + ": metadata \"" + p + "attention.head_count\" is " + std::to_string(heads));
  int64_t head_dim = c["hidden_size"].get<int64_t>() / heads;
  if (const auto k = file.get_int(p + "attention.key_length")) {
    head_dim = *k;
    c["head_dim"] = head_dim;
  }
  if (const auto v = file.get_int(p + "attention.value_length"))
    check(*v == head_dim, where + ": metadata \"" + p + "attention.value_length\" is " +
                              std::to_string(*v) + ", but key_length is " +
                              std::to_string(head_dim) + " (kivi needs them equal)");
  if (const auto rot = file.get_int(p + "rope.dimension_count"); rot && *rot != head_dim) {
    check(*rot > 0 && *rot < head_dim && *rot % 2 == 0,
          where + ": metadata \"" + p + "rope.dimension_count\" is " + std::to_string(*rot) +
              " for head_dim " + std::to_string(head_dim));
    c["partial_rotary_factor"] = static_cast<double>(*rot) / static_cast<double>(head_dim);
  }
  const std::string scaling = file.get_string(p + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    const auto factor = file.get_float(p + "rope.scaling.factor");
    check(factor.has_value(),
          where + ": metadata \"" + p + "rope.scaling.factor\" is missing for linear scaling");
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", *factor}};
  } else {
    check(scaling == "none", where + ": metadata \"" + p + "rope.scaling.type\" is \"" + scaling +
                                 "\", which kivi does not support for GGUF files (none, linear)");
  }
  // Llama 3.1-style frequency factors are stored as a tensor, not as hyperparameters.
  check(!file.contains("rope_freqs.weight"),
        where +
            ": tensor \"rope_freqs.weight\" (per-frequency rope factors, as in Llama 3.1 "
            "conversions) is not supported for GGUF files");

  const auto* tokens = file.get_strings("tokenizer.ggml.tokens");
  if (const auto v = file.get_int(p + "vocab_size")) {
    c["vocab_size"] = *v;
  } else if (tokens) {
    c["vocab_size"] = tokens->size();
  } else {
    check(file.contains("token_embd.weight"), where + ": no tensor \"token_embd.weight\"");
    c["vocab_size"] = file.tensor_info("token_embd.weight").shape.at(0);
  }
  c["tie_word_embeddings"] = !file.contains("output.weight");
  c["attention_bias"] = convention.attention_bias_from_q_bias && file.contains("blk.0.attn_q.bias");
  c["mlp_bias"] = file.contains("blk.0.ffn_up.bias");
  if (const auto bos = file.get_int("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *bos;
  std::vector<int64_t> eos;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
    if (const auto id = file.get_int(key);
        id && std::find(eos.begin(), eos.end(), *id) == eos.end())
      eos.push_back(*id);
  if (!eos.empty()) c["eos_token_id"] = eos;
  if (const auto pad = file.get_int("tokenizer.ggml.padding_token_id")) c["pad_token_id"] = *pad;

  ModelConfig config = parse_model_config(c.dump(), where + " (GGUF metadata)");
  config.folder = file.path();
  config.source = where;
  return config;
}

GgufWeights::GgufWeights(std::shared_ptr<const GgufFile> file, const ModelConfig& config,
                         GgufConvention convention)
    : file_(std::move(file)),
      convention_(std::move(convention)),
      heads_(config.num_attention_heads),
      kv_heads_(config.num_key_value_heads) {}

bool GgufWeights::contains(const std::string& name) const {
  const auto g = convention_.tensor_name(name);
  return g && file_->contains(*g);
}

at::Tensor GgufWeights::load(const std::string& name, at::IntArrayRef shape,
                             const at::TensorOptions& options) {
  const std::string where = file_->path().string();
  const auto g = convention_.tensor_name(name);
  check(g.has_value(), where + ": tensor \"" + name +
                           "\" has no GGUF counterpart (general.architecture \"" +
                           convention_.architecture + "\")");
  check(file_->contains(*g),
        where + ": tensor \"" + *g + "\" (for \"" + name + "\") is missing from the file");
  const GgufTensorInfo& info = file_->tensor_info(*g);
  check(at::IntArrayRef(info.shape) == shape, where + ": tensor \"" + *g + "\" has shape " +
                                                  shape_string(info.shape) + ", expected " +
                                                  shape_string(shape) + " from the GGUF metadata");
  at::Tensor w = file_->dequantize(*g);  // float32 [out, in] or [n]
  if (convention_.unpermute_qk &&
      (g->find(".attn_q.") != std::string::npos || g->find(".attn_k.") != std::string::npos)) {
    const int64_t heads = g->find(".attn_q.") != std::string::npos ? heads_ : kv_heads_;
    w = unpermute_heads(w, heads);
  }
  return w.to(options, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace kivi
