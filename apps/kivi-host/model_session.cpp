#include "model_session.h"

#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <algorithm>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "kivi/attention/attention.h"
#include "kivi/cache/cache_usage.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/gguf_weights.h"
#include "kivi/parallel/tensor_parallel.h"
#include "kivi/text/stream_decoder.h"
#include "kivi/util/activity.h"
#include "tokenizer_loading.h"

namespace kivi::host {
namespace fs = std::filesystem;
namespace {

// `rank`: a tensor-parallel rank takes GPU rank % (GPUs of its host).
at::Device pick_device(const std::string& device, int64_t rank) {
  const int64_t gpus = at::hasCUDA() ? at::detail::getCUDAHooks().deviceCount() : 0;
  const auto index = static_cast<c10::DeviceIndex>(gpus > 0 ? rank % gpus : 0);
  if (device == "cuda") {
    check(gpus > 0, "[model] device = \"cuda\", but no CUDA device is available");
    return at::Device(at::kCUDA, index);
  }
  if (device == "auto" && gpus > 0) return at::Device(at::kCUDA, index);
  return at::kCPU;
}

// Joins the [parallel] group (every rank, before it loads its shard).
std::shared_ptr<TensorParallelGroup> join_group(const HostConfig& cfg, const at::Device& device) {
  ParallelConfig p;
  p.size = cfg.parallel.tensor;
  p.rank = cfg.parallel.rank;
  p.address = cfg.parallel.address;
  p.port = static_cast<int>(cfg.parallel.port);
  // A local launch of several ranks started the store before them (rank_launch.h).
  p.rank0_hosts_store = !(cfg.parallel.launch == "local" && cfg.parallel.tensor > 1);
  p.timeout = std::chrono::seconds(cfg.parallel.timeout_seconds);
  const ActivityScope joining("joining the tensor-parallel group (rank " + std::to_string(p.rank) +
                                  " of " + std::to_string(p.size) + ", store " + p.address + ":" +
                                  std::to_string(p.port) + ")",
                              "[parallel] address and port, and that every rank started");
  return TensorParallelGroup::connect(p, device);
}

// auto: float32 on the CPU (bf16/fp16 matmuls there are slow and less exact); the checkpoint's
// torch_dtype (else bfloat16) on a GPU.
at::ScalarType pick_dtype(const std::string& dtype, const ModelConfig& config,
                          const at::Device& device) {
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

void check_cache_serves(const HostContext& context, const CacheGeometry& geometry,
                        const CachePairing& p) {
  const HostConfig& cfg = context.config;
  try {
    p.factory->spec(geometry);
  } catch (const Error& e) {
    throw Error(cfg.file.string() + ": [" + p.table + "] backend \"" + p.cache_name +
                "\" cannot serve " + cfg.model.path.string() + " (" +
                std::to_string(geometry.num_layers) + " layers, " +
                std::to_string(geometry.num_kv_heads) + " kv heads, head_dim " +
                std::to_string(geometry.head_dim) + ", " + c10::toString(geometry.dtype) +
                "): " + e.what());
  }
}

ModelSession open_model(const HostContext& context, const std::vector<CachePairing>& pairings) {
  const HostConfig& cfg = context.config;
  const std::string file = cfg.file.string();
  check(cfg.model.present,
        file + ": mode " + cfg.mode + " needs a [model] table with the checkpoint's path");
  check(fs::exists(cfg.model.path), file + ": [model] path: " + cfg.model.path.string() +
                                        " does not exist" +
                                        missing_input_note(cfg.file, cfg.model.path));
  check(!pairings.empty(), "open_model: no cache to run the model with");
  ModelSession session;
  session.config = load_checkpoint_config(context.registry, cfg.model.path);
  ModelOptions options;
  options.device = pick_device(cfg.model.device, cfg.parallel.rank);
  options.dtype = pick_dtype(cfg.model.dtype, session.config, options.device);
  options.attention = pairings.front().attention;
  // From config.json alone, before the weights load: a family plugin that builds it, then each
  // cache's options against its shapes (e.g. a KIVI group_size that does not divide head_dim).
  resolve_model_family(context.registry, session.config);
  const CacheGeometry geometry{session.config.num_hidden_layers,
                               session.config.num_key_value_heads,
                               session.config.head_dim,
                               1,
                               0,
                               options.dtype,
                               options.device};
  for (const CachePairing& p : pairings) check_cache_serves(context, geometry, p);
  options.cuda_graphs = cfg.model.cuda_graphs;
  if (cfg.parallel.present) {
    session.group = join_group(cfg, options.device);
    options.parallel = session.group;
  }
  {
    const ActivityScope loading("loading the weights of " + cfg.model.path.string() + " (" +
                                    c10::toString(options.dtype) + " on " + options.device.str() +
                                    ")",
                                "[model] dtype, or use a smaller model or another device");
    session.loaded = load_model(context.registry, cfg.model.path, options, cfg.model.weights,
                                static_cast<uint64_t>(cfg.model.seed));
  }
  if (session.group && session.group->rank() == 0) {
    session.driver = make_rank_driver(session.group);
    session.loaded.model = make_driver_model(std::move(session.loaded.model), session.driver);
  }
  if (!session.group || session.group->rank() == 0) use_cache(session, pairings.front());
  // A GGUF file carries its tokenizer in its metadata, when it has one.
  const bool gguf_tokenizer =
      is_gguf_file(cfg.model.path) && GgufFile(cfg.model.path).has("tokenizer.ggml.model");
  if (fs::is_regular_file(cfg.model.path / "tokenizer.json") || gguf_tokenizer)
    session.tokenizer = load_tokenizer(cfg.model.path);
  return session;
}

std::unique_ptr<KVCache> create_cache(const ModelSession& session, const CacheGeometry& geometry,
                                      const std::string& setting) {
  std::ostringstream what;
  what << "allocating the " << session.cache_name << " cache for " << geometry.max_batch
       << " sequences";
  if (geometry.pool_pages > 0) {
    const CacheSpec spec = session.cache_factory->spec(geometry);
    const int64_t bytes =
        geometry.pool_pages * spec.bytes_per_page + geometry.max_batch * spec.bytes_per_slot;
    what << " and a pool of " << geometry.pool_pages << " pages of " << spec.page_tokens
         << " tokens (" << std::fixed << std::setprecision(2) << static_cast<double>(bytes) / 1e9
         << " GB on " << geometry.device.str() << ")";
  } else if (geometry.max_tokens > 0) {
    const CacheSpec spec = session.cache_factory->spec(geometry);
    const int64_t bytes =
        spec.fixed_bytes + geometry.max_batch * spec.bytes_per_sequence(geometry.max_tokens);
    what << " x " << geometry.max_tokens << " tokens (" << std::fixed << std::setprecision(2)
         << static_cast<double>(bytes) / 1e9 << " GB on " << geometry.device.str() << ")";
  } else {
    what << " on " << geometry.device.str() << " (grown as tokens arrive)";
  }
  const ActivityScope allocating(what.str(), setting);
  return session.cache_factory->create(geometry);
}

void use_cache(ModelSession& session, const CachePairing& pairing) {
  // Under tensor parallelism every rank makes the same pairing, and the caches mirror their calls.
  session.cache_factory =
      session.driver ? driver_pairing(session.driver, pairing).factory : pairing.factory;
  session.cache_name = pairing.cache_name;
  session.attention_name = pairing.attention_name;
  session.model().set_attention(pairing.attention);
}

ModelSession open_model_session(const HostContext& context, const PluginChoice& cache,
                                const PluginChoice& attention) {
  return open_model(context, {make_cache_pairing(context, cache, attention)});
}

std::string describe(const ModelSession& s) {
  const ModelOptions& o = s.loaded.model->options();
  std::ostringstream out;
  out << "model: " << s.config.folder.string() << " (family " << s.loaded.family_name << ", "
      << s.config.num_hidden_layers << " layers, vocab " << s.config.vocab_size << "), "
      << c10::toString(o.dtype) << " on " << o.device.str() << ", attention " << s.attention_name
      << ", cache " << s.cache_name;
  return out.str();
}

namespace {

// 1234567 -> "1.23 MB" (decimal units, as the README's figures).
std::string megabytes(int64_t bytes) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(bytes < 10'000'000 ? 2 : 1)
    << static_cast<double>(bytes) / 1e6 << " MB";
  return s.str();
}

std::string fixed2(double v) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << v;
  return s.str();
}

}  // namespace

void print_cache_stats(std::ostream& out, const KVCache& cache) {
  const CacheUsage u = cache_usage(cache);
  const MemoryStats held = cache.memory();
  const bool packed = u.quantizing;
  const std::string full = "float" + std::to_string(u.full_element_bits);
  out << "cache: " << u.tokens << " tokens in " << u.sequences
      << (u.sequences == 1 ? " sequence\n" : " sequences\n");
  if (u.tokens > 0) {
    if (!packed) {
      out << "  keys and values: all in full precision (" << full << ")\n";
    } else {
      auto side = [&](const char* name, int64_t quantized, int64_t bits, const char* residual) {
        out << "  " << name;
        if (bits >= 16)
          out << "all " << u.tokens << " in full precision (not quantized at 16 bits)\n";
        else
          out << quantized << " quantized to " << bits << " bits, " << u.tokens - quantized
              << residual << "\n";
      };
      side("keys:   ", u.key_quantized, u.key_bits,
           (" in the full-precision residual (" + full + ")").c_str());
      side("values: ", u.value_quantized, u.value_bits, " in the residual");
    }
    out << "  these tokens use " << megabytes(u.total()) << " (" << u.total()
        << " bytes) = " << fixed2(u.bits(u.total()))
        << " bits per stored K/V element on average: codes " << fixed2(u.bits(u.code_bytes))
        << " + scales and minima " << fixed2(u.bits(u.scale_bytes)) << " + residual "
        << fixed2(u.bits(u.full_bytes)) << "\n";
    const double ratio = static_cast<double>(u.fp16_bytes()) / static_cast<double>(u.total());
    out << "  an fp16 cache of the same tokens: " << megabytes(u.fp16_bytes())
        << " (16 bits per element); this cache "
        << (ratio >= 1.0 ? "is " + fixed2(ratio) + "x smaller"
                         : "is " + fixed2(1.0 / ratio) + "x larger")
        << "\n";
  }
  out << "  held (capacity preallocated or grown ahead of the tokens): " << megabytes(held.total());
  if (packed)
    out << " (codes " << megabytes(held.payload_bytes) << ", scales and minima "
        << megabytes(held.scale_bytes) << ", residual windows " << megabytes(held.residual_bytes)
        << ", workspace " << megabytes(held.workspace_bytes) << ")\n";
  else
    out << " (K/V " << megabytes(held.payload_bytes + held.residual_bytes) << ", workspace "
        << megabytes(held.workspace_bytes) << ")\n";
}

int64_t effective_context(const HostContext& context, const ModelSession& session,
                          int64_t requested, const std::string& key) {
  const int64_t limit = position_limit(session.config);
  if (requested <= 0) return session.config.max_position_embeddings;
  if (limit <= 0 || requested <= limit) return requested;
  context.err << "warning: " << context.config.file.string() << ": " << key << " = " << requested
              << " is more than " << session.config.source
              << "'s max_position_embeddings = " << limit << "; using " << limit << " (rope \""
              << session.config.rope.type
              << "\" was not trained past it; only dynamic NTK rope goes beyond)\n";
  return limit;
}

generate::GenerateOptions generate_options(const HostConfig& config, const ModelSession& session) {
  const GenerateChoice& g = config.generate;
  generate::GenerateOptions o;
  o.sampling = {g.temperature, g.top_k, g.top_p, g.min_p, g.repetition_penalty};
  o.seed = static_cast<uint64_t>(g.seed);
  o.max_new_tokens = g.max_new_tokens;
  o.eos_ids = session.config.eos_token_ids;
  if (session.tokenizer && session.tokenizer->eos_id() &&
      std::find(o.eos_ids.begin(), o.eos_ids.end(), *session.tokenizer->eos_id()) ==
          o.eos_ids.end())
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
