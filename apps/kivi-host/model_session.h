// What the model-running modes share: the [model] checkpoint (loaded once), the cache factory
// and attention backend it runs with (swappable: compare puts each variant's in turn), the
// tokenizer from the same folder, and the cache statistics printout.
#pragma once

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "host_context.h"
#include "kivi/generate/generate.h"
#include "kivi/model_loader.h"
#include "kivi/text/tokenizer.h"
#include "rank_driver.h"

namespace kivi::host {

struct ModelSession {
  ModelConfig config;
  LoadedModel loaded;
  std::shared_ptr<KVCacheFactory> cache_factory;
  std::string cache_name;
  std::string attention_name;
  std::optional<text::Tokenizer> tokenizer;  // when the folder has tokenizer.json
  // Tensor parallelism ([parallel]): this rank's group; on rank 0 the driver that the model and
  // the cache factories send every call through to the other ranks (rank_driver.h).
  std::shared_ptr<TensorParallelGroup> group;
  std::shared_ptr<RankDriver> driver;
  CausalLM& model() { return *loaded.model; }
};

// Loads the [model] for the caches in `pairings` (each checked against the model's shapes from
// config.json, before the weights load) and puts the first in use.
ModelSession open_model(const HostContext& context, const std::vector<CachePairing>& pairings);

// Throws, naming run.toml's table, when the pairing's cache cannot serve a model of `geometry`
// (e.g. a KIVI group_size that does not divide head_dim).
void check_cache_serves(const HostContext& context, const CacheGeometry& geometry,
                        const CachePairing& pairing);

// Makes `pairing` the session's cache factory and attention (CausalLM::set_attention).
void use_cache(ModelSession& session, const CachePairing& pairing);

// The session's cache for `geometry`, allocated inside an ActivityScope that names its size and
// `setting` (what in run.toml sizes it), so that an allocation failure says what and where.
std::unique_ptr<KVCache> create_cache(const ModelSession& session, const CacheGeometry& geometry,
                                      const std::string& setting);

// open_model with one pairing: the config's `cache` and `attention`.
ModelSession open_model_session(const HostContext& context, const PluginChoice& cache,
                                const PluginChoice& attention);

// "model: <path> (family llama, 6 layers, vocab 4096), float32 on cpu, attention kivi, cache kivi"
std::string describe(const ModelSession& session);

// The cache's statistics for a reader new to KIVI: keys and values quantized vs in the
// full-precision residual; what the stored tokens use (cache_usage.h) in bytes and in bits per
// K/V element by component (codes, scales and minima, residual); that against an fp16 cache of
// the same tokens; and, apart, what the cache holds (capacity preallocated or grown ahead).
void print_cache_stats(std::ostream& out, const KVCache& cache);

// A mode's context (`key`, e.g. "[generate] context"; 0 = the model's max_position_embeddings) as
// the run gets it: past max_position_embeddings it is cut there, with a warning on err, unless
// the model's rope is dynamic NTK (kivi::position_limit).
int64_t effective_context(const HostContext& context, const ModelSession& session,
                          int64_t requested, const std::string& key);

// [generate] as generation options (eos ids from the model config and the tokenizer).
generate::GenerateOptions generate_options(const HostConfig& config, const ModelSession& session);

// A TextStream over the session's tokenizer (empty factory without one).
generate::TextStreamFactory text_streams(const ModelSession& session);

}  // namespace kivi::host
