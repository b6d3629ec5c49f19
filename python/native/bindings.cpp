// kivi._C: the Python binding of kivi's plugin registry and of one KV cache made by a cache
// plugin, with the attention backend that reads it. transformers' attention calls attend() once
// per layer and forward pass; the cache keeps its own storage (packed codes for KIVI), and the
// backend reads that storage directly: no dequantized copy of the cache is made.
#include <torch/extension.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kivi/attention/attention.h"
#include "kivi/cache/cache_usage.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/engine.h"
#include "kivi/registry.h"
#include "kivi/util/error.h"

namespace py = pybind11;

namespace {

// The registry of one plugin folder (the package's own, or one the caller names).
std::shared_ptr<kivi::Registry> load_registry(const std::vector<std::string>& dirs) {
  auto registry = std::make_shared<kivi::Registry>();
  for (const auto& dir : dirs) registry->load_dir(dir);
  return registry;
}

py::list plugin_list(const kivi::Registry& registry) {
  py::list out;
  for (const auto& info : registry.list()) {
    py::dict d;
    d["kind"] = info.kind;
    d["name"] = info.name;
    d["summary"] = info.summary;
    d["library"] = info.library;
    d["version"] = info.version;
    d["file"] = info.file;
    out.append(d);
  }
  return out;
}

py::list refused_list(const kivi::Registry& registry) {
  py::list out;
  for (const auto& r : registry.refused()) out.append(py::make_tuple(r.file, r.reason));
  return out;
}

// An "attention" plugin alone: causal attention among the given tokens, no cache (a forward
// pass with use_cache=False, e.g. a perplexity or log-likelihood run).
class NativeAttention {
 public:
  NativeAttention(const std::shared_ptr<kivi::Registry>& registry, const std::string& name,
                  const std::string& options)
      : registry_(registry), attention_(registry->create<kivi::Attention>(name, options)) {}
  //   q: [B, q_heads, T, D]; k, v: [B, kv_heads, T, D]; counts: [B] valid tokens or empty.
  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<int64_t>& counts, double scale,
                     int64_t sliding_window) const {
    c10::InferenceMode guard;
    kivi::AttentionParams params;
    params.scale = scale;
    params.sliding_window = sliding_window;
    return attention_->prefill(q.contiguous(), k.contiguous(), v.contiguous(), counts, params);
  }

 private:
  std::shared_ptr<kivi::Registry> registry_;
  std::shared_ptr<kivi::Attention> attention_;
};

// One KV cache of a "kv_cache" plugin and the "attention" plugin that reads its views.
class NativeCache {
 public:
  NativeCache(std::shared_ptr<kivi::Registry> registry, const std::string& cache_plugin,
              const std::string& cache_options, const std::string& attention_plugin,
              const std::string& attention_options, int64_t num_layers, int64_t num_kv_heads,
              int64_t head_dim, int64_t max_batch, at::ScalarType dtype, at::Device device)
      : registry_(std::move(registry)) {
    factory_ = registry_->create<kivi::KVCacheFactory>(cache_plugin, cache_options);
    const std::string backend = attention_plugin.empty() ? factory_->attention() : attention_plugin;
    attention_ = registry_->create<kivi::Attention>(backend, attention_options);
    kivi::check(attention_->supports(factory_->view_format()),
                "attention plugin '" + backend + "' cannot read the views of cache plugin '" +
                    cache_plugin + "' (format " + factory_->view_format() + ")");
    geometry_.num_layers = num_layers;
    geometry_.num_kv_heads = num_kv_heads;
    geometry_.head_dim = head_dim;
    geometry_.max_batch = max_batch;
    geometry_.dtype = dtype;
    geometry_.device = device;
    description_ = factory_->spec(geometry_).description;
    cache_ = factory_->create(geometry_);
  }

  // One layer of one forward pass, as kivi's own model runs it (DecoderLM::run): a prompt into
  // an empty cache attends over its own full-precision K/V (KIVI's prefill); a chunk over a
  // filled cache is read before it is stored when the backend asks; otherwise store, then read.
  //   q: [B, q_heads, T, D]; k, v: [B, kv_heads, T, D], right-padded by counts ([B] or empty).
  //   prefill: whether every row was empty when this forward pass began (layer 0 decides).
  // Returns [B, q_heads, T, D]; rows past their count are not meaningful.
  at::Tensor attend(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::vector<int64_t>& counts, bool prefill, double scale,
                    int64_t sliding_window) {
    check_layer(layer);
    c10::InferenceMode guard;
    kivi::AttentionParams params;
    params.scale = scale;
    params.sliding_window = sliding_window;
    const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    if (!prefill && q.size(2) > 1 && attention_->attends_chunks_before_append()) {
      at::Tensor out = attention_->chunk(qc, kc, vc, cache_->view(layer), counts, params);
      cache_->append(layer, kc, vc, counts);
      return out;
    }
    cache_->append(layer, kc, vc, counts);
    if (prefill) return attention_->prefill(qc, kc, vc, counts, params);
    return attention_->decode(qc, cache_->view(layer), counts, params);
  }

  // Stores k, v ([B, kv_heads, T, D], every row all T tokens) without attending.
  void store(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
    check_layer(layer);
    c10::InferenceMode guard;
    cache_->append(layer, k.contiguous(), v.contiguous());
  }

  std::vector<int64_t> lengths() const {
    std::vector<int64_t> out;
    for (int64_t b = 0; b < geometry_.max_batch; ++b) out.push_back(cache_->length(b));
    return out;
  }
  void reorder(const std::vector<int64_t>& index) {
    kivi::check(static_cast<int64_t>(index.size()) == geometry_.max_batch,
                "reorder: got " + std::to_string(index.size()) + " indices, expected " +
                    std::to_string(geometry_.max_batch) + " (the cache's batch)");
    cache_->reorder(index);
  }
  void truncate(int64_t length, int64_t seq) { cache_->truncate(length, seq); }
  void reset() { cache_->reset(); }

  py::dict memory() const {
    const kivi::MemoryStats m = cache_->memory();
    py::dict d;
    d["payload_bytes"] = m.payload_bytes;
    d["scale_bytes"] = m.scale_bytes;
    d["residual_bytes"] = m.residual_bytes;
    d["workspace_bytes"] = m.workspace_bytes;
    d["total_bytes"] = m.total();
    d["tokens"] = m.tokens;
    d["quantized_tokens"] = m.quantized_tokens;
    d["residual_tokens"] = m.residual_tokens;
    return d;
  }
  py::dict usage() const {
    const kivi::CacheUsage u = cache_->usage();
    py::dict d;
    d["sequences"] = u.sequences;
    d["tokens"] = u.tokens;
    d["key_quantized"] = u.key_quantized;
    d["value_quantized"] = u.value_quantized;
    d["elements"] = u.elements;
    d["code_bytes"] = u.code_bytes;
    d["scale_bytes"] = u.scale_bytes;
    d["full_bytes"] = u.full_bytes;
    d["total_bytes"] = u.total();
    d["fp16_bytes"] = u.fp16_bytes();
    d["key_bits"] = u.key_bits;
    d["value_bits"] = u.value_bits;
    return d;
  }
  // Every tensor the cache owns, by name: [(name, tensor)].
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const {
    return cache_->owned_tensors();
  }
  const std::string& description() const { return description_; }
  int64_t max_batch() const { return geometry_.max_batch; }
  int64_t num_layers() const { return geometry_.num_layers; }

 private:
  void check_layer(int64_t layer) const {
    kivi::check(layer >= 0 && layer < geometry_.num_layers,
                "layer " + std::to_string(layer) + " is outside the cache's " +
                    std::to_string(geometry_.num_layers) + " layers");
  }

  std::shared_ptr<kivi::Registry> registry_;  // outlives the objects its plugins made
  std::shared_ptr<kivi::KVCacheFactory> factory_;
  std::shared_ptr<kivi::Attention> attention_;
  kivi::CacheGeometry geometry_;
  std::string description_;
  std::unique_ptr<kivi::KVCache> cache_;
};

// kivi::Engine with the GIL released while it runs (a streamer may read from another thread);
// on_token takes the GIL back for each call into Python. Results come back as JSON text.
class NativeEngine {
 public:
  NativeEngine(std::unique_ptr<kivi::Engine> engine) : engine_(std::move(engine)) {}

  std::string generate(const std::vector<std::string>& overrides,
                       const std::vector<std::string>& prompts,
                       const std::vector<std::vector<int64_t>>& prompt_ids, py::object on_token) {
    kivi::Engine::TokenFn fn;
    if (!on_token.is_none())
      fn = [&on_token](int64_t row, int64_t token, const std::string& text) {
        py::gil_scoped_acquire gil;
        on_token(row, token, py::bytes(text));  // bytes: a piece may end inside a UTF-8 character
      };
    py::gil_scoped_release released;
    return engine_->generate(overrides, prompts, prompt_ids, fn);
  }
  std::string perplexity(const std::vector<std::string>& overrides) {
    py::gil_scoped_release released;
    return engine_->perplexity(overrides);
  }
  std::string compare(const std::vector<std::string>& overrides) {
    py::gil_scoped_release released;
    return engine_->compare(overrides);
  }
  std::string describe(const std::vector<std::string>& overrides) {
    py::gil_scoped_release released;
    return engine_->describe(overrides);
  }

 private:
  std::unique_ptr<kivi::Engine> engine_;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kivi's plugin registry and KV caches (the C++ engine behind the kivi package)";
  // kivi::Error: bad options, shapes or lengths, named by the plugin that refused them.
  py::register_exception<kivi::Error>(m, "KiviError", PyExc_RuntimeError);

  py::class_<kivi::Registry, std::shared_ptr<kivi::Registry>>(m, "Registry")
      .def(py::init(&load_registry), py::arg("plugin_dirs"),
           "Loads every plugin library of the given folders.")
      .def("plugins", &plugin_list, "The registered factories: kind, name, summary, file.")
      .def("refused", &refused_list, "Libraries or factories refused: (file, reason).")
      .def("names", &kivi::Registry::names, py::arg("kind"))
      .def(
          "check_cache_options",
          [](const kivi::Registry& registry, const std::string& name, const std::string& options) {
            // Makes the factory, which parses and checks the options; returns its attention
            // plugin's name. Throws KiviError naming the option and what was expected.
            return registry.create<kivi::KVCacheFactory>(name, options)->attention();
          },
          py::arg("name"), py::arg("options"));

  py::class_<NativeAttention>(m, "NativeAttention")
      .def(py::init<const std::shared_ptr<kivi::Registry>&, const std::string&,
                    const std::string&>(),
           py::arg("registry"), py::arg("name"), py::arg("options") = "")
      .def("prefill", &NativeAttention::prefill, py::arg("q"), py::arg("k"), py::arg("v"),
           py::arg("counts"), py::arg("scale"), py::arg("sliding_window") = 0);

  py::class_<NativeCache>(m, "NativeCache")
      .def(py::init<std::shared_ptr<kivi::Registry>, const std::string&, const std::string&,
                    const std::string&, const std::string&, int64_t, int64_t, int64_t, int64_t,
                    at::ScalarType, at::Device>(),
           py::arg("registry"), py::arg("cache_plugin"), py::arg("cache_options"),
           py::arg("attention_plugin"), py::arg("attention_options"), py::arg("num_layers"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("max_batch"), py::arg("dtype"),
           py::arg("device"))
      .def("attend", &NativeCache::attend, py::arg("layer"), py::arg("q"), py::arg("k"),
           py::arg("v"), py::arg("counts"), py::arg("prefill"), py::arg("scale"),
           py::arg("sliding_window") = 0)
      .def("store", &NativeCache::store, py::arg("layer"), py::arg("k"), py::arg("v"))
      .def("lengths", &NativeCache::lengths)
      .def("reorder", &NativeCache::reorder, py::arg("index"))
      .def("truncate", &NativeCache::truncate, py::arg("length"), py::arg("seq") = -1)
      .def("reset", &NativeCache::reset)
      .def("memory", &NativeCache::memory)
      .def("usage", &NativeCache::usage)
      .def("owned_tensors", &NativeCache::owned_tensors)
      .def_property_readonly("description", &NativeCache::description)
      .def_property_readonly("max_batch", &NativeCache::max_batch)
      .def_property_readonly("num_layers", &NativeCache::num_layers);

  py::class_<NativeEngine>(m, "NativeEngine")
      .def_static(
          "from_file",
          [](const std::string& file, const std::vector<std::string>& overrides,
             const std::vector<std::string>& plugin_dirs) {
            py::gil_scoped_release released;
            return NativeEngine(kivi::Engine::from_file(file, overrides, plugin_dirs));
          },
          py::arg("file"), py::arg("overrides"), py::arg("plugin_dirs"))
      .def_static(
          "from_text",
          [](const std::string& text, const std::string& source,
             const std::vector<std::string>& overrides,
             const std::vector<std::string>& plugin_dirs) {
            py::gil_scoped_release released;
            return NativeEngine(kivi::Engine::from_text(text, source, overrides, plugin_dirs));
          },
          py::arg("text"), py::arg("source"), py::arg("overrides"), py::arg("plugin_dirs"))
      .def("generate", &NativeEngine::generate, py::arg("overrides"), py::arg("prompts"),
           py::arg("prompt_ids"), py::arg("on_token") = py::none())
      .def("perplexity", &NativeEngine::perplexity, py::arg("overrides"))
      .def("compare", &NativeEngine::compare, py::arg("overrides"))
      .def("describe", &NativeEngine::describe, py::arg("overrides"));
}
