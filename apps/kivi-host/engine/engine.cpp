#include "kivi/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <optional>

#include <toml++/toml.h>
#include <nlohmann/json.hpp>

#include "compare_run.h"
#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/config/config_table.h"
#include "model_session.h"
#include "prompt_generation.h"
#include "seconds_since.h"
#include "text_scoring.h"

namespace kivi {
using namespace kivi::host;

struct Engine::State {
  toml::table root;  // run.toml as read, before any call's overrides
  std::string source;
  std::vector<std::filesystem::path> plugin_dirs;  // as loaded at construction
  // What the modes print besides their results goes nowhere (a stream without a buffer drops
  // it); warnings and progress go to stderr, as kivi-host's.
  std::ostream discarded{nullptr};
  HostContext context{{}, {}, discarded, std::cerr};
  std::optional<ModelSession> session;
  ModelChoice loaded;  // the [model] of `session`

  // Loads the plugins and checks the configured cache and attention (and compare's variants)
  // now, so that a bad option fails where the engine is made, not at its first call.
  void start() {
    load_plugins(context);
    make_cache_pairing(context, context.config.cache, context.config.attention);
    if (!context.config.compare.variants.empty()) compare_pairings(context);
  }

  // The config of one call: run.toml with the call's overrides, validated, for `mode`.
  void configure(const std::vector<std::string>& overrides, const std::string& mode) {
    for (const std::string& o : overrides)
      check(o.rfind("plugins.", 0) != 0,
            source + ": " + o + ": [plugins] is read once, when the engine is made");
    toml::table call = root;
    apply_overrides(call, overrides);
    HostConfig config = parse_host_config(call, source);
    config.mode = mode;
    config.plugin_dirs = plugin_dirs;
    config.json_output.clear();  // results are returned, not written
    context.config = std::move(config);
  }

  // The loaded model, put to run `pairings.front()` after every pairing was checked against it;
  // loaded (again) when the call's [model] differs from the loaded one.
  ModelSession& model(const std::vector<CachePairing>& pairings) {
    if (!session || !(context.config.model == loaded)) {
      session.reset();  // free the old weights before loading new ones
      session.emplace(open_model(context, pairings));
      loaded = context.config.model;
      return *session;
    }
    const CacheGeometry geometry = session->model().cache_geometry(1);
    for (const CachePairing& p : pairings) check_cache_serves(context, geometry, p);
    use_cache(*session, pairings.front());
    return *session;
  }

  ModelSession& model() {
    return model({make_cache_pairing(context, context.config.cache, context.config.attention)});
  }
};

Engine::Engine(std::unique_ptr<State> state) : state_(std::move(state)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::start(std::unique_ptr<State> state, const std::string& source,
                                      const std::vector<std::string>& overrides,
                                      const std::vector<std::string>& plugin_dirs) {
  state->source = source;
  apply_overrides(state->root, overrides);
  HostConfig config = parse_host_config(state->root, source);  // every error now, not at a call
  check(!config.parallel.present ||
            (config.parallel.tensor == 1 && config.parallel.launch == "local"),
        source + ": [parallel] tensor = " + std::to_string(config.parallel.tensor) +
            ": the engine runs in this process alone; tensor parallelism starts its ranks from "
            "kivi-host (kivi-host MODE --config run.toml --tp N)");
  for (const std::string& dir : plugin_dirs) config.plugin_dirs.emplace_back(dir);
  state->plugin_dirs = config.plugin_dirs;
  state->context.config = std::move(config);
  state->start();
  return std::unique_ptr<Engine>(new Engine(std::move(state)));
}

std::unique_ptr<Engine> Engine::from_text(const std::string& toml_text, const std::string& source,
                                          const std::vector<std::string>& overrides,
                                          const std::vector<std::string>& plugin_dirs) {
  auto state = std::make_unique<State>();
  state->root = ConfigTable::parse_text(toml_text, source);
  return start(std::move(state), source, overrides, plugin_dirs);
}

std::unique_ptr<Engine> Engine::from_file(const std::string& config_file,
                                          const std::vector<std::string>& overrides,
                                          const std::vector<std::string>& plugin_dirs) {
  auto state = std::make_unique<State>();
  state->root = ConfigTable::parse_file(config_file);
  return start(std::move(state), config_file, overrides, plugin_dirs);
}

std::string Engine::generate(const std::vector<std::string>& overrides,
                             const std::vector<std::string>& prompts,
                             const std::vector<std::vector<int64_t>>& prompt_ids,
                             const TokenFn& on_token) {
  State& s = *state_;
  s.configure(overrides, "generate");
  if (!prompts.empty() || !prompt_ids.empty()) {
    GenerateChoice& g = s.context.config.generate;
    g.prompts = prompts;
    g.prompt_ids = prompt_ids;
    g.prompt_file.clear();
  }
  ModelSession& session = s.model();
  const auto token_prompts = read_prompts(s.context.config, session);
  nlohmann::json doc{{"model", host::describe(session)}};
  doc["generations"] = nlohmann::json::array();
  int64_t new_tokens = 0, cache_bytes = 0;
  GenerationHooks hooks;
  if (on_token) {
    size_t first_row = 0;
    hooks.batch_start = [&](size_t row) { first_row = row; };
    hooks.on_token = [&](int64_t row, int64_t token, const std::string& text) {
      on_token(static_cast<int64_t>(first_row) + row, token, text);
    };
  }
  hooks.batch_done = [&](size_t, const std::vector<std::vector<int64_t>>& batch,
                         const std::vector<generate::Generation>& results, const KVCache& cache) {
    auto entry = [](const generate::Generation& g) {
      return nlohmann::json{{"tokens", g.tokens},
                            {"text", g.text},
                            {"stop", generate::to_string(g.stop)},
                            {"score", g.score}};
    };
    const bool beams = s.context.config.generate.num_beams > 1;
    for (size_t i = 0; i < results.size() && (i == 0 || !beams); ++i) {
      nlohmann::json g = entry(results[i]);
      g["prompt_tokens"] = batch[i % batch.size()].size();
      if (beams) {
        g["hypotheses"] = nlohmann::json::array();
        for (const auto& h : results) g["hypotheses"].push_back(entry(h));
      }
      new_tokens += static_cast<int64_t>(results[i].tokens.size());
      doc["generations"].push_back(std::move(g));
    }
    cache_bytes = std::max(cache_bytes, cache.memory().total());
  };
  const auto start = std::chrono::steady_clock::now();
  run_generation(s.context, session, token_prompts, hooks);
  doc["seconds"] = seconds_since(start);
  doc["new_tokens"] = new_tokens;
  doc["cache_bytes"] = cache_bytes;
  return doc.dump();
}

std::string Engine::perplexity(const std::vector<std::string>& overrides) {
  State& s = *state_;
  s.configure(overrides, "perplexity");
  ModelSession& session = s.model();
  const HostConfig& cfg = s.context.config;
  const TextPlan plan = plan_text_windows(cfg, session);
  const PerplexityResult r = score_perplexity(s.context, session, plan);
  return nlohmann::json{{"model", host::describe(session)},
                        {"text", cfg.perplexity.text.string()},
                        {"text_tokens", plan.text_tokens},
                        {"windows", plan.windows.size()},
                        {"context", plan.context},
                        {"stride", plan.stride},
                        {"perplexity", r.perplexity()},
                        {"nll", r.nll},
                        {"tokens", r.tokens},
                        {"seconds", r.seconds},
                        {"cache_bytes", r.cache_bytes},
                        {"bits_per_element", r.bits_per_element}}
      .dump();
}

std::string Engine::compare(const std::vector<std::string>& overrides) {
  State& s = *state_;
  s.configure(overrides, "compare");
  const std::vector<CachePairing> pairings = compare_pairings(s.context);
  ModelSession& session = s.model(pairings);
  nlohmann::json doc =
      compare_json(s.context.config, compare_variants(s.context, session, pairings));
  doc["model_description"] = host::describe(session);
  return doc.dump();
}

std::string Engine::describe(const std::vector<std::string>& overrides) {
  State& s = *state_;
  s.configure(overrides, "generate");
  return host::describe(s.model());
}

}  // namespace kivi
