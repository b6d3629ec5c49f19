#include "kivi/model/decoder_lm.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/decode_graphs.h"
#include "kivi/model/layers.h"
#include "kivi/model/rotary.h"
#include "kivi/model/safetensors.h"
#include "kivi/model/weight_source.h"
#include "kivi/parallel/shard_plan.h"
#include "kivi/parallel/tensor_parallel.h"
#include "kivi/util/error.h"

namespace kivi {
namespace {

struct LayerWeights {
  at::Tensor input_norm, post_attention_norm;  // [hidden]
  // Under tensor parallelism, this rank's shard (ShardPlan): its heads and MLP columns; the
  // row-parallel biases (o, down) only on rank 0, so that the all-reduce adds them once.
  at::Tensor qkv, qkv_bias;  // [(q_heads + 2 kv_heads) * head_dim, hidden], [...] or undefined
  at::Tensor o, o_bias;      // [hidden, q_heads * head_dim]
  at::Tensor gate_up, gate_up_bias;  // [2 * intermediate, hidden]
  at::Tensor down, down_bias;        // [hidden, intermediate]
  int64_t sliding_window = 0;
  at::Tensor q_norm, k_norm;  // [head_dim], when the family declares them (DecoderSpec)
};

class DecoderLM final : public CausalLM {
 public:
  DecoderLM(const ModelConfig& config, const DecoderSpec& spec, WeightSource& weights,
            const ModelOptions& options);

  const ModelConfig& config() const override { return config_; }
  const ModelOptions& options() const override { return options_; }
  CacheGeometry cache_geometry(int64_t max_batch, int64_t max_tokens) const override {
    return CacheGeometry{config_.num_hidden_layers,
                         plan_.kv_heads,  // this rank's (all of them without parallelism)
                         config_.head_dim,
                         max_batch,
                         max_tokens,
                         options_.dtype,
                         options_.device};
  }
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& positions,
                     std::span<const int64_t> counts, KVCache& cache) override {
    return run(input_ids, positions, counts, cache, /*last_only=*/false);
  }
  at::Tensor forward_last(const at::Tensor& input_ids, const at::Tensor& positions,
                          std::span<const int64_t> counts, KVCache& cache) override {
    return run(input_ids, positions, counts, cache, /*last_only=*/true).select(1, 0);
  }
  void set_tap(TapFn tap) override { tap_ = std::move(tap); }
  void set_attention(std::shared_ptr<const Attention> attention) override {
    check(attention != nullptr, "model: set_attention needs an attention backend, got none");
    options_.attention = std::move(attention);
  }

 private:
  void tap(const std::string& name, const at::Tensor& value) const {
    if (tap_) tap_(name, value);
  }
  void check_inputs(const at::Tensor& input_ids, const at::Tensor& positions,
                    std::span<const int64_t> counts, const KVCache& cache) const;
  // forward(); last_only: logits of each row's last valid position only, [B, 1, vocab].
  at::Tensor run(const at::Tensor& input_ids, const at::Tensor& positions,
                 std::span<const int64_t> counts, KVCache& cache, bool last_only);
  // The pieces of a forward pass between attentions (shared by the eager path and the
  // decode graphs). h: [B, T, hidden].
  at::Tensor embed(const at::Tensor& ids) const;
  AttentionInputs attention_inputs(int64_t layer, const Residual& h, const at::Tensor& cos,
                                   const at::Tensor& sin) const;
  Residual after_attention(int64_t layer, const at::Tensor& h, const at::Tensor& attn) const;
  at::Tensor logits(const Residual& h) const;
  // Under tensor parallelism: the sum of every rank's partial `x` (a row-parallel layer's
  // output), in place; without, x as it is.
  const at::Tensor& reduce(const at::Tensor& x) const;
  // {h with its sum taken, rms_norm(h) with `weight`}: one fused kernel on CUDA.
  std::pair<at::Tensor, at::Tensor> norm(const Residual& h, const at::Tensor& weight) const;
  std::unique_ptr<DecodeGraphs> make_graphs(int64_t batch);

  ModelConfig config_;
  ModelOptions options_;
  ShardPlan plan_;  // the whole model when options_.parallel is null
  RotaryEmbedding rotary_;
  // [vocab, hidden], or under tensor parallelism this rank's rows [vocab_rows, hidden] (zero past
  // the vocabulary's end)
  at::Tensor embed_tokens_;
  at::Tensor final_norm_;  // [hidden]
  at::Tensor lm_head_;     // like embed_tokens_; the embedding itself when tied
  std::vector<LayerWeights> layers_;
  TapFn tap_;
  std::unique_ptr<DecodeGraphs> graphs_;  // for the last decode batch size, made on first use
};

DecoderLM::DecoderLM(const ModelConfig& config, const DecoderSpec& spec, WeightSource& weights,
                     const ModelOptions& options)
    : config_(config),
      options_(options),
      plan_(plan_shards(config, options.parallel ? options.parallel->rank() : 0,
                        options.parallel ? options.parallel->size() : 1)),
      rotary_(config.rope, config.head_dim, config.max_position_embeddings, options.device) {
  c10::InferenceMode guard;
  const auto opts = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  const int64_t hidden = config.hidden_size, inter = config.intermediate_size;
  const int64_t q_dim = config.num_attention_heads * config.head_dim;
  const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    return weights.load(name, shape, opts);
  };
  // Entries [start, start + n) along `dim` of `name`: a rank's shard (the whole tensor when
  // that is all of it).
  auto part = [&](const std::string& name, std::vector<int64_t> shape, int64_t dim, int64_t start,
                  int64_t n) {
    if (start == 0 && n == shape[dim]) return load(name, shape);
    return weights.load_slice(name, shape, dim, start, n, opts);
  };
  // `base`.weight [out, in] and, when `with_bias`, `base`.bias [out]; column-parallel: rows
  // [start, start + n) of both.
  auto column_parallel = [&](const std::string& base, int64_t out, int64_t in, int64_t start,
                             int64_t n, bool with_bias) {
    return std::pair{part(base + ".weight", {out, in}, 0, start, n),
                     with_bias ? part(base + ".bias", {out}, 0, start, n) : at::Tensor()};
  };
  // Row-parallel: columns [start, start + n) of the weight; the bias on rank 0 only (the
  // all-reduce of the ranks' partial sums adds it once).
  auto row_parallel = [&](const std::string& base, int64_t out, int64_t in, int64_t start,
                          int64_t n, bool with_bias) {
    return std::pair{part(base + ".weight", {out, in}, 1, start, n),
                     with_bias && plan_.rank == 0 ? load(base + ".bias", {out}) : at::Tensor()};
  };
  // The vocabulary's rows [vocab_start, vocab_start + vocab_rows), zero past its end.
  auto vocab_rows = [&](const std::string& name) {
    if (!plan_.sharded()) return load(name, {config.vocab_size, hidden});
    const int64_t n =
        std::clamp<int64_t>(config.vocab_size - plan_.vocab_start, 0, plan_.vocab_rows);
    at::Tensor rows = at::zeros({plan_.vocab_rows, hidden}, opts);
    if (n > 0)
      rows.narrow(0, 0, n).copy_(part(name, {config.vocab_size, hidden}, 0, plan_.vocab_start, n));
    return rows;
  };

  embed_tokens_ = vocab_rows(spec.embed_tokens);
  final_norm_ = load(spec.final_norm, {hidden});
  lm_head_ = spec.tie_word_embeddings ? embed_tokens_ : vocab_rows(spec.lm_head);
  const int64_t hd = config.head_dim;
  const int64_t q_start = plan_.q_head_start * hd, q_rows = plan_.q_heads * hd;
  const int64_t kv_start = plan_.kv_head_start * hd, kv_rows = plan_.kv_heads * hd;
  const int64_t mlp_start = plan_.intermediate_start, mlp_cols = plan_.intermediate;

  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    auto name = [&](const std::string& pattern) { return layer_name(pattern, l); };
    LayerWeights w;
    w.input_norm = load(name(spec.input_norm), {hidden});
    w.post_attention_norm = load(name(spec.post_attention_norm), {hidden});
    // Load-time fusion: one matmul for q/k/v and one for gate/up.
    auto [q, qb] =
        column_parallel(name(spec.q_proj), q_dim, hidden, q_start, q_rows, spec.qkv_bias);
    auto [k, kb] =
        column_parallel(name(spec.k_proj), kv_dim, hidden, kv_start, kv_rows, spec.qkv_bias);
    auto [v, vb] =
        column_parallel(name(spec.v_proj), kv_dim, hidden, kv_start, kv_rows, spec.qkv_bias);
    w.qkv = at::cat({q, k, v}, 0);
    if (spec.qkv_bias) w.qkv_bias = at::cat({qb, kb, vb}, 0);
    std::tie(w.o, w.o_bias) =
        row_parallel(name(spec.o_proj), hidden, q_dim, q_start, q_rows, spec.o_bias);
    auto [gate, gate_b] =
        column_parallel(name(spec.gate_proj), inter, hidden, mlp_start, mlp_cols, spec.mlp_bias);
    auto [up, up_b] =
        column_parallel(name(spec.up_proj), inter, hidden, mlp_start, mlp_cols, spec.mlp_bias);
    w.gate_up = at::cat({gate, up}, 0);
    if (spec.mlp_bias) w.gate_up_bias = at::cat({gate_b, up_b}, 0);
    std::tie(w.down, w.down_bias) =
        row_parallel(name(spec.down_proj), hidden, inter, mlp_start, mlp_cols, spec.mlp_bias);
    if (!spec.sliding_window.empty()) w.sliding_window = spec.sliding_window.at(l);
    if (!spec.q_norm.empty()) w.q_norm = load(name(spec.q_norm), {config.head_dim});
    if (!spec.k_norm.empty()) w.k_norm = load(name(spec.k_norm), {config.head_dim});
    layers_.push_back(std::move(w));
  }
}

void DecoderLM::check_inputs(const at::Tensor& input_ids, const at::Tensor& positions,
                             std::span<const int64_t> counts, const KVCache& cache) const {
  check(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
        "model forward: input_ids must be [batch, tokens] int64, got " +
            shape_string(input_ids.sizes()) + " " + c10::toString(input_ids.scalar_type()));
  check(positions.sizes() == input_ids.sizes() && positions.scalar_type() == at::kLong,
        "model forward: positions must be int64 of the shape of input_ids " +
            shape_string(input_ids.sizes()) + ", got " + shape_string(positions.sizes()));
  const int64_t batch = input_ids.size(0), tokens = input_ids.size(1);
  check(counts.empty() || static_cast<int64_t>(counts.size()) == batch,
        "model forward: counts has " + std::to_string(counts.size()) + " entries, expected " +
            std::to_string(batch) + " (one per row) or none");
  for (int64_t c : counts)
    check(c >= 0 && c <= tokens, "model forward: a count of " + std::to_string(c) +
                                     " valid tokens is outside [0, " + std::to_string(tokens) +
                                     "]");
  const CacheGeometry& g = cache.geometry();
  const CacheGeometry want = cache_geometry(batch, g.max_tokens);
  check(g.max_batch == batch && g.num_layers == want.num_layers &&
            g.num_kv_heads == want.num_kv_heads && g.head_dim == want.head_dim &&
            g.dtype == want.dtype && g.device == want.device,
        "model forward: the cache's geometry (batch " + std::to_string(g.max_batch) + ", layers " +
            std::to_string(g.num_layers) + ", kv heads " + std::to_string(g.num_kv_heads) +
            ", head_dim " + std::to_string(g.head_dim) + ", " + c10::toString(g.dtype) + " on " +
            g.device.str() + ") does not fit this model and batch (batch " + std::to_string(batch) +
            ", layers " + std::to_string(want.num_layers) + ", kv heads " +
            std::to_string(want.num_kv_heads) + ", head_dim " + std::to_string(want.head_dim) +
            ", " + c10::toString(want.dtype) + " on " + want.device.str() +
            "); make it with CausalLM::cache_geometry");
}

at::Tensor DecoderLM::run(const at::Tensor& input_ids, const at::Tensor& positions,
                          std::span<const int64_t> counts, KVCache& cache, bool last_only) {
  check_inputs(input_ids, positions, counts, cache);
  check(options_.attention != nullptr,
        "model: no attention backend; set ModelOptions.attention or call CausalLM::set_attention");
  c10::InferenceMode guard;
  const int64_t batch = input_ids.size(0), tokens = input_ids.size(1);
  // KIVI's prefill: a prompt into an empty cache attends over its own full-precision K/V.
  bool prefill = true;
  for (int64_t b = 0; b < batch; ++b) prefill = prefill && cache.length(b) == 0;

  const at::Tensor ids = input_ids.to(options_.device);
  const at::Tensor pos = positions.to(options_.device);
  // A chunk over a filled cache, for a backend that asks: attend to the cache as stored and to
  // the chunk's own K/V in full precision, then store the chunk (attention.h).
  const bool chunk_first =
      !prefill && tokens > 1 && options_.attention->attends_chunks_before_append();
  // -> [B, heads, T, head_dim]; out: where decode may write it (undefined: anywhere).
  auto attend = [&](int64_t l, const AttentionInputs& in, const at::Tensor& out) {
    AttentionParams params;
    params.scale = std::pow(static_cast<double>(config_.head_dim), -0.5);
    params.sliding_window = layers_[l].sliding_window;
    if (chunk_first) {
      at::Tensor result =
          options_.attention->chunk(in.q, in.k, in.v, cache.view(l), counts, params);
      cache.append(l, in.k, in.v, counts);
      return result;
    }
    {
      RECORD_FUNCTION("kivi::cache_append", std::vector<c10::IValue>());
      cache.append(l, in.k, in.v, counts);
    }
    RECORD_FUNCTION("kivi::attention", std::vector<c10::IValue>());
    if (prefill) return options_.attention->prefill(in.q, in.k, in.v, counts, params);
    params.out = out;
    return options_.attention->decode(in.q, cache.view(l), counts, params);
  };

  if (tokens == 1 && !prefill && !tap_ && options_.cuda_graphs && options_.device.is_cuda() &&
      DecodeGraphs::available()) {
    if (!graphs_ || graphs_->shapes().batch != batch) graphs_ = make_graphs(batch);
    if (graphs_->takes_positions()) return graphs_->run(ids, pos, {}, {}, attend);
    const auto [cos, sin] = rotary_.cos_sin(pos, counts, options_.dtype);  // [B, 1, head_dim]
    return graphs_->run(ids, {}, cos, sin, attend);
  }

  const auto [cos, sin] = rotary_.cos_sin(pos, counts, options_.dtype);  // [B, T, head_dim]

  Residual h{embed(ids), {}};  // [B, T, hidden]
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const AttentionInputs in = attention_inputs(l, h, cos, sin);
    h = after_attention(l, in.residual, attend(l, in, at::Tensor()));
  }
  if (last_only && tokens > 1) {
    // Row b's last valid position (an empty row reads position 0); the final norm is per
    // position, so norming only these is the same.
    std::vector<int64_t> last(batch, tokens - 1);
    for (int64_t b = 0; b < batch && !counts.empty(); ++b)
      last[b] = std::max<int64_t>(counts[b] - 1, 0);
    const at::Tensor rows =
        at::arange(batch, at::TensorOptions().dtype(at::kLong).device(ids.device()));
    const at::Tensor at_last = at::tensor(last, at::kLong).to(ids.device());
    auto pick = [&](const at::Tensor& x) {  // [B, T, hidden] -> [B, 1, hidden]
      return x.defined() ? x.index({rows, at_last}).unsqueeze(1) : x;
    };
    h = Residual{pick(h.base), pick(h.delta)};
  }
  return logits(h);  // [B, T, vocab], or [B, 1, vocab] when last_only
}

at::Tensor DecoderLM::embed(const at::Tensor& ids) const {
  if (!options_.parallel) {
    at::Tensor h = at::embedding(embed_tokens_, ids);  // [B, T, hidden]
    tap("embed", h);
    return h;
  }
  // Vocabulary-parallel lookup: this rank's rows, zero for ids outside them, summed over ranks
  // (exactly one rank holds each id, so the sum adds zeros to it and changes no bit).
  const at::Tensor local = ids - plan_.vocab_start;  // [B, T]
  const at::Tensor outside = at::logical_or(local < 0, local >= plan_.vocab_rows);
  at::Tensor h = at::embedding(embed_tokens_, local.masked_fill(outside, 0));  // [B, T, hidden]
  h.masked_fill_(outside.unsqueeze(-1), 0);
  reduce(h);
  tap("embed", h);
  return h;
}

const at::Tensor& DecoderLM::reduce(const at::Tensor& x) const {
  if (options_.parallel) {
    RECORD_FUNCTION("kivi::all_reduce", std::vector<c10::IValue>());
    at::Tensor target = x;  // shares x's storage: the sum lands in x
    options_.parallel->all_reduce(target);
  }
  return x;
}

std::pair<at::Tensor, at::Tensor> DecoderLM::norm(const Residual& h,
                                                  const at::Tensor& weight) const {
  if (!h.delta.defined()) return {h.base, rms_norm(h.base, weight, config_.rms_norm_eps)};
  return add_rms_norm(h.base, h.delta, weight, config_.rms_norm_eps);
}

AttentionInputs DecoderLM::attention_inputs(int64_t l, const Residual& h, const at::Tensor& cos,
                                            const at::Tensor& sin) const {
  const LayerWeights& w = layers_[l];
  const std::string prefix = tap_ ? "layer" + std::to_string(l) + "." : std::string();
  const int64_t batch = h.base.size(0), tokens = h.base.size(1), head_dim = config_.head_dim;
  const int64_t heads = plan_.q_heads, kv_heads = plan_.kv_heads;  // this rank's
  AttentionInputs in;
  at::Tensor x;
  std::tie(in.residual, x) = norm(h, w.input_norm);
  tap(prefix + "attn_norm", x);
  const at::Tensor qkv =
      kivi::linear(x, w.qkv, w.qkv_bias);       // [B, T, (heads + 2 kv_heads) * head_dim]
  auto split = [&](int64_t start, int64_t n) {  // -> [B, n, T, head_dim]
    return qkv.narrow(-1, start * head_dim, n * head_dim)
        .view({batch, tokens, n, head_dim})
        .transpose(1, 2);
  };
  // A family's per-head norm of q or k (DecoderSpec::q_norm / k_norm), before rotary.
  auto head_norm = [&](const at::Tensor& x, const at::Tensor& weight) {
    return weight.defined() ? rms_norm(x.contiguous(), weight, config_.rms_norm_eps) : x;
  };
  // q: [B, heads, T, head_dim], k: [B, kv_heads, T, head_dim]
  std::tie(in.q, in.k) = apply_rotary_pair(head_norm(split(0, heads), w.q_norm),
                                           head_norm(split(heads, kv_heads), w.k_norm), cos, sin);
  in.v = split(heads + kv_heads, kv_heads).contiguous();  // [B, kv_heads, T, head_dim]
  tap(prefix + "q", in.q);
  tap(prefix + "k", in.k);
  tap(prefix + "v", in.v);
  return in;
}

Residual DecoderLM::after_attention(int64_t l, const at::Tensor& h, const at::Tensor& attn) const {
  const LayerWeights& w = layers_[l];
  const std::string prefix = tap_ ? "layer" + std::to_string(l) + "." : std::string();
  const int64_t batch = h.size(0), tokens = h.size(1);
  tap(prefix + "attn", attn);  // [B, heads, T, head_dim]
  const at::Tensor attn_out =
      reduce(kivi::linear(attn.transpose(1, 2).reshape({batch, tokens, -1}), w.o, w.o_bias));
  tap(prefix + "attn_out", attn_out);  // [B, T, hidden]
  const auto [mid, y] = add_rms_norm(h, attn_out, w.post_attention_norm, config_.rms_norm_eps);
  tap(prefix + "mlp_norm", y);
  const at::Tensor mlp_out =
      reduce(gated_silu_mlp(y, w.gate_up, w.gate_up_bias, w.down, w.down_bias));
  tap(prefix + "mlp_out", mlp_out);
  if (tap_) tap(prefix + "out", mid + mlp_out);  // the sum the next norm takes, bit for bit
  return {mid, mlp_out};
}

at::Tensor DecoderLM::logits(const Residual& h) const {
  const at::Tensor normed = norm(h, final_norm_).second;
  tap("final_norm", normed);
  at::Tensor out = kivi::linear(normed, lm_head_);  // [B, T, vocab or this rank's vocab_rows]
  if (options_.parallel)  // the ranks' rows in order, without the padding past the vocabulary
    out = options_.parallel->all_gather(out, -1).narrow(-1, 0, config_.vocab_size);
  out = out.to(at::kFloat);
  tap("logits", out);
  return out;
}

std::unique_ptr<DecodeGraphs> DecoderLM::make_graphs(int64_t batch) {
  graphs_.reset();  // the old capture's memory goes back first
  DecodeShapes shapes;
  shapes.layers = config_.num_hidden_layers;
  shapes.batch = batch;
  shapes.q_heads = plan_.q_heads;
  shapes.head_dim = config_.head_dim;
  shapes.dtype = options_.dtype;
  shapes.device_index = options_.device.index() < 0 ? 0 : options_.device.index();
  DecodeStages stages;
  stages.embed = [this](const at::Tensor& ids) { return embed(ids); };
  stages.attention_inputs = [this](int64_t l, const Residual& h, const at::Tensor& cos,
                                   const at::Tensor& sin) {
    return attention_inputs(l, h, cos, sin);
  };
  stages.after_attention = [this](int64_t l, const at::Tensor& h, const at::Tensor& attn) {
    return after_attention(l, h, attn);
  };
  stages.logits = [this](const Residual& h) { return logits(h); };
  if (!rotary_.reads_positions_on_host())
    stages.rotary = [this](const at::Tensor& positions) {
      return rotary_.cos_sin(positions, {}, options_.dtype);
    };
  try {
    return std::make_unique<DecodeGraphs>(shapes, std::move(stages));
  } catch (const std::exception& e) {
    throw Error(
        std::string(
            "model: capturing the decode step's CUDA graphs failed (ModelOptions::cuda_graphs, "
            "[model] cuda_graphs = false in run.toml, launches every op instead): ") +
        e.what());
  }
}

}  // namespace

std::unique_ptr<CausalLM> build_decoder_lm(const ModelConfig& config, const DecoderSpec& spec,
                                           WeightSource& weights, const ModelOptions& options) {
  check(spec.sliding_window.empty() ||
            static_cast<int64_t>(spec.sliding_window.size()) == config.num_hidden_layers,
        "model: the family's sliding_window list has " +
            std::to_string(spec.sliding_window.size()) + " entries for " +
            std::to_string(config.num_hidden_layers) + " layers");
  return std::make_unique<DecoderLM>(config, spec, weights, options);
}

}  // namespace kivi
