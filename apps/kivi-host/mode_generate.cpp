// `kivi-host generate`: runs prompts (token ids from [generate]) through the [model]
// checkpoint with the configured attention backend and cache, prints each prompt's most likely
// next tokens, then decodes greedily for max_new_tokens (a sequence stops at an eos token).
#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <iomanip>
#include <ostream>

#include "host_context.h"
#include "kivi/attention/attention.h"
#include "kivi/model/model_config.h"
#include "kivi/model_loader.h"

namespace kivi::host {
namespace {

at::Device pick_device(const std::string& device) {
  const bool cuda = at::hasCUDA() && at::detail::getCUDAHooks().deviceCount() > 0;
  if (device == "cuda") {
    check(cuda, "[model] device = \"cuda\", but no CUDA device is available");
    return at::Device(at::kCUDA, 0);
  }
  if (device == "auto" && cuda) return at::Device(at::kCUDA, 0);
  return at::kCPU;
}

// auto: float32 on the CPU; the checkpoint's torch_dtype (else bfloat16) on a GPU.
at::ScalarType pick_dtype(const std::string& dtype, const ModelConfig& config,
                          const at::Device& device) {
  if (dtype != "auto") return *parse_dtype_name(dtype);
  if (device.is_cpu()) return at::kFloat;
  return config.torch_dtype.value_or(at::kBFloat16);
}

}  // namespace

int run_generate_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const std::string file = cfg.file.string();
  check(cfg.model.present,
        file + ": mode generate needs a [model] table with the checkpoint's path");
  check(
      !cfg.generate.prompt_ids.empty(),
      file +
          ": mode generate needs [generate] prompt_ids (a list of token ids, or a list of lists)");
  auto cache_factory = make_cache_factory(context);
  ModelOptions options;
  options.attention =
      context.registry.create<Attention>(cfg.attention.name, cfg.attention.options_toml);
  check(options.attention->supports(cache_factory->view_kind()),
        file + ": attention backend \"" + cfg.attention.name + "\" cannot read the \"" +
            to_string(cache_factory->view_kind()) + "\" views of cache \"" + cfg.cache.name + "\"");
  const ModelConfig model_config = load_model_config(cfg.model.path);
  options.device = pick_device(cfg.model.device);
  options.dtype = pick_dtype(cfg.model.dtype, model_config, options.device);
  LoadedModel loaded = load_model(context.registry, cfg.model.path, options, cfg.model.weights,
                                  static_cast<uint64_t>(cfg.model.seed));
  CausalLM& model = *loaded.model;
  auto& out = context.out;
  out << "model: " << cfg.model.path.string() << " (family " << loaded.family_name << ", "
      << model_config.num_hidden_layers << " layers, vocab " << model_config.vocab_size << "), "
      << c10::toString(options.dtype) << " on " << options.device.str() << ", attention "
      << cfg.attention.name << ", cache " << cfg.cache.name << "\n";

  // One right-padded batch of prompts.
  const auto& prompts = cfg.generate.prompt_ids;
  const int64_t batch = static_cast<int64_t>(prompts.size());
  std::vector<int64_t> counts;
  int64_t longest = 0;
  for (const auto& p : prompts) {
    counts.push_back(static_cast<int64_t>(p.size()));
    longest = std::max(longest, counts.back());
    for (int64_t id : p)
      check(id < model_config.vocab_size, file + ": generate.prompt_ids: token id " +
                                              std::to_string(id) +
                                              " is outside the vocabulary (vocab_size " +
                                              std::to_string(model_config.vocab_size) + ")");
  }
  at::Tensor ids = at::zeros({batch, longest}, at::kLong);  // [B, T], right-padded with 0
  auto id_at = ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < counts[b]; ++t) id_at[b][t] = prompts[b][t];
  const at::Tensor positions =
      at::arange(longest, at::kLong).unsqueeze(0).expand({batch, longest}).contiguous();

  auto cache = cache_factory->create(model.cache_geometry(batch));
  const at::Tensor logits =
      model.forward(ids, positions, counts, *cache).to(at::kCPU);  // [B, T, V]
  std::vector<int64_t> next(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor last = logits[b][counts[b] - 1];  // [V]
    next[b] = last.argmax().item<int64_t>();
    out << "prompt " << b << " (" << counts[b] << " tokens): next-token top " << cfg.generate.top
        << ":";
    if (cfg.generate.top > 0) {
      const auto [values, indices] = last.topk(std::min(cfg.generate.top, model_config.vocab_size));
      for (int64_t i = 0; i < values.size(0); ++i)
        out << " " << indices[i].item<int64_t>() << " (" << std::fixed << std::setprecision(4)
            << values[i].item<float>() << ")";
    }
    out << "\n";
  }

  // Greedy decoding in lock step; a finished sequence keeps being fed (its output is cut).
  std::vector<std::vector<int64_t>> generated(batch);
  std::vector<bool> finished(batch, false);
  auto is_eos = [&](int64_t id) {
    for (int64_t e : model_config.eos_token_ids)
      if (e == id) return true;
    return false;
  };
  for (int64_t step = 0; step < cfg.generate.max_new_tokens; ++step) {
    for (int64_t b = 0; b < batch; ++b) {
      if (finished[b]) continue;
      generated[b].push_back(next[b]);
      finished[b] = is_eos(next[b]);
    }
    if (step + 1 == cfg.generate.max_new_tokens) break;
    at::Tensor step_ids = at::tensor(next, at::kLong).view({batch, 1});
    std::vector<int64_t> pos(batch);
    for (int64_t b = 0; b < batch; ++b) pos[b] = cache->length(b);
    const at::Tensor step_logits =
        model.forward(step_ids, at::tensor(pos, at::kLong).view({batch, 1}), {}, *cache);
    const at::Tensor chosen = step_logits.select(1, 0).argmax(-1).to(at::kCPU);
    for (int64_t b = 0; b < batch; ++b) next[b] = chosen[b].item<int64_t>();
  }
  for (int64_t b = 0; b < batch; ++b) {
    out << "prompt " << b << " greedy:";
    for (int64_t id : generated[b]) out << " " << id;
    out << (finished[b] ? " [eos]" : "") << "\n";
  }
  return 0;
}

}  // namespace kivi::host
