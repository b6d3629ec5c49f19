// `kivi-host generate`: prompts ([generate] prompts, prompt_file or prompt_ids) through the
// [model] checkpoint with the configured attention and cache; prints each continuation, or
// streams it token by token (stream = true: one prompt at a time), and the cache statistics
// (cache_stats = true).
#include <ostream>

#include "host_context.h"
#include "model_session.h"
#include "prompt_generation.h"

namespace kivi::host {
namespace {

void print_generation(std::ostream& out, size_t row, size_t prompt_tokens,
                      const generate::Generation& g, bool has_text) {
  out << "prompt " << row << " (" << prompt_tokens << " tokens) -> " << g.tokens.size()
      << " new tokens [" << generate::to_string(g.stop) << "]:";
  for (int64_t id : g.tokens) out << " " << id;
  out << "\n";
  if (has_text) out << "text " << row << ": " << g.text << "\n";
}

}  // namespace

int run_generate_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  const auto prompts = read_prompts(cfg, session);
  const bool has_text = static_cast<bool>(text_streams(session));
  auto& out = context.out;
  out << describe(session) << "\n";
  GenerationHooks hooks;
  if (cfg.generate.stream) {
    hooks.batch_start = [&](size_t row) { out << "prompt " << row << ": " << std::flush; };
    hooks.on_token = [&](int64_t, int64_t, const std::string& piece) {
      out << piece << std::flush;
    };
  }
  hooks.batch_done = [&](size_t row0, const std::vector<std::vector<int64_t>>& batch,
                         const std::vector<generate::Generation>& results, const KVCache& cache) {
    if (cfg.generate.stream) out << "\n";
    const bool beams = cfg.generate.num_beams > 1;
    for (size_t i = 0; i < results.size() && (i == 0 || !beams); ++i)
      print_generation(out, row0 + i, batch[i % batch.size()].size(), results[i],
                       has_text && !cfg.generate.stream);
    if (beams && !results.empty())
      out << "beam score " << results[0].score << " (best of " << results.size()
          << " hypotheses)\n";
    if (cfg.generate.cache_stats) print_cache_stats(out, cache);
  };
  run_generation(context, session, prompts, hooks);
  return 0;
}

}  // namespace kivi::host
