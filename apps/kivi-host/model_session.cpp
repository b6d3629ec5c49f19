#include "model_session.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/gguf_weights.h"
#include "kivi/text/stream_decoder.h"
#include "tokenizer_loading.h"

namespace kivi::host {
namespace fs = std::filesystem;
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

// auto: float32 on the CPU (bf16/fp16 matmuls there are slow and less exact); the checkpoint's
// torch_dtype (else bfloat16) on a GPU.
at::ScalarType pick_dtype(const std::string& dtype, const ModelConfig& config, const at::Device& device) {
  if (dtype != "auto") return *parse_dtype_name(dtype);
  if (device.is_cpu()) return at::kFloat;
  return config.torch_dtype.value_or(at::kBFloat16);
}

class StreamText final : public generate::TextStream {
 public:
  explicit StreamText(const text::Tokenizer& tokenizer) : decoder_(tokenizer, true) {}
  std::string step(int64_t token) override { return decoder_.step(static_cast<int32_t>(token)); }
  std::string flush() override { return decoder_.flush(); }

 private:
  text::StreamDecoder decoder_;
};

}  // namespace

ModelSession open_model_session(const HostContext& context, const PluginChoice& cache,
                                const PluginChoice& attention, const std::string& table) {
  const HostConfig& cfg = context.config;
  const std::string file = cfg.file.string();
  check(cfg.model.present, file + ": mode " + cfg.mode + " needs a [model] table with the checkpoint's path");
  ModelSession session;
  session.cache_name = cache.name;
  session.attention_name = attention.name;
  try {
    session.cache_factory = context.registry.create<KVCacheFactory>(cache.name, cache.options_toml);
  } catch (const Error& e) {
    throw Error(map_plugin_error(e.what(), file, table, cache.positions));
  }
  ModelOptions options;
  options.attention = context.registry.create<Attention>(attention.name, attention.options_toml);
  check(options.attention->supports(session.cache_factory->view_kind()),
        file + ": attention backend \"" + attention.name + "\" cannot read the \"" +
            to_string(session.cache_factory->view_kind()) + "\" views of cache \"" + cache.name +
            "\" (the kivi attention reads both kinds)");
  session.config = load_checkpoint_config(cfg.model.path);
  options.device = pick_device(cfg.model.device);
  options.dtype = pick_dtype(cfg.model.dtype, session.config, options.device);
  options.cuda_graphs = cfg.model.cuda_graphs;
  session.loaded = load_model(context.registry, cfg.model.path, options, cfg.model.weights,
                              static_cast<uint64_t>(cfg.model.seed));
  // A GGUF file carries its tokenizer in its metadata, when it has one.
  const bool gguf_tokenizer = is_gguf_file(cfg.model.path) && GgufFile(cfg.model.path).has("tokenizer.ggml.model");
  if (fs::is_regular_file(cfg.model.path / "tokenizer.json") || gguf_tokenizer)
    session.tokenizer = load_tokenizer(cfg.model.path);
  return session;
}

std::string describe(const ModelSession& s) {
  const ModelOptions& o = s.loaded.model->options();
  std::ostringstream out;
  out << "model: " << s.config.folder.string() << " (family " << s.loaded.family_name << ", "
      << s.config.num_hidden_layers << " layers, vocab " << s.config.vocab_size << "), " << c10::toString(o.dtype)
      << " on " << o.device.str() << ", attention " << s.attention_name << ", cache " << s.cache_name;
  return out.str();
}

void print_cache_stats(std::ostream& out, const KVCache& cache) {
  const MemoryStats m = cache.memory();
  out << "cache: " << m.tokens << " tokens (" << m.quantized_tokens << " quantized, " << m.residual_tokens
      << " residual); bytes: payload " << m.payload_bytes << ", scales+minima " << m.scale_bytes << ", residual "
      << m.residual_bytes << ", workspace " << m.workspace_bytes << ", total " << m.total() << "; average "
      << std::fixed << std::setprecision(2) << m.bits_per_element(cache.geometry()) << " bits per element\n"
      << std::defaultfloat;
}

generate::GenerateOptions generate_options(const HostConfig& config, const ModelSession& session) {
  const GenerateChoice& g = config.generate;
  generate::GenerateOptions o;
  o.sampling = {g.temperature, g.top_k, g.top_p, g.min_p, g.repetition_penalty};
  o.seed = static_cast<uint64_t>(g.seed);
  o.max_new_tokens = g.max_new_tokens;
  o.eos_ids = session.config.eos_token_ids;
  if (session.tokenizer && session.tokenizer->eos_id() &&
      std::find(o.eos_ids.begin(), o.eos_ids.end(), *session.tokenizer->eos_id()) == o.eos_ids.end())
    o.eos_ids.push_back(*session.tokenizer->eos_id());
  o.stop_strings = g.stop;
  o.context = g.context;
  o.num_beams = g.num_beams;
  o.length_penalty = g.length_penalty;
  generate::validate(o, config.file.string() + " [generate]");
  return o;
}

generate::TextStreamFactory text_streams(const ModelSession& session) {
  if (!session.tokenizer) return {};
  const text::Tokenizer* tokenizer = &*session.tokenizer;
  return [tokenizer] { return std::make_unique<StreamText>(*tokenizer); };
}

}  // namespace kivi::host
