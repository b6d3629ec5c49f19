#include "prompt_generation.h"

#include <algorithm>
#include <fstream>
#include <string>

#include "kivi/cache/kv_cache.h"
#include "kivi/util/activity.h"
#include "kivi/util/input_file.h"

namespace kivi::host {

std::vector<std::vector<int64_t>> read_prompts(const HostConfig& cfg, const ModelSession& session) {
  const GenerateChoice& g = cfg.generate;
  std::vector<std::string> texts = g.prompts;
  if (!g.prompt_file.empty()) {
    std::ifstream in(g.prompt_file);
    check(in.good(), cfg.file.string() + ": [generate] prompt_file: cannot open " +
                         g.prompt_file.string() + missing_input_note(cfg.file, g.prompt_file));
    check_input_file(g.prompt_file, "[generate] prompt_file");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) texts.push_back(line);
  }
  std::vector<std::vector<int64_t>> prompts = g.prompt_ids;
  if (!texts.empty())
    check(session.tokenizer.has_value(), cfg.file.string() + ": [generate] prompts are text, but " +
                                             cfg.model.path.string() +
                                             " has no tokenizer.json (give prompt_ids)");
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = session.tokenizer->encode(text, g.add_special_tokens);
    prompts.emplace_back(ids.begin(), ids.end());
  }
  check(!prompts.empty(), cfg.file.string() +
                              ": mode generate needs [generate] prompts (text), prompt_file or "
                              "prompt_ids");
  return prompts;
}

void run_generation(HostContext& context, ModelSession& session,
                    const std::vector<std::vector<int64_t>>& prompts,
                    const GenerationHooks& hooks) {
  const HostConfig& cfg = context.config;
  generate::GenerateOptions options = generate_options(cfg, session);
  options.context = effective_context(context, session, cfg.generate.context, "[generate] context");
  const auto text = text_streams(session);
  const bool one_by_one = options.num_beams > 1 || cfg.generate.stream;
  std::vector<std::vector<std::vector<int64_t>>> batches;
  if (one_by_one)
    for (const auto& p : prompts) batches.push_back({p});
  else
    batches.push_back(prompts);
  size_t row0 = 0;
  for (const auto& batch : batches) {
    const int64_t slots =
        options.num_beams > 1 ? options.num_beams : static_cast<int64_t>(batch.size());
    auto cache = create_cache(session, session.model().cache_geometry(slots),
                              "[generate] prompts or num_beams (fewer sequences at once)");
    if (hooks.batch_start) hooks.batch_start(row0);
    size_t longest = 0;
    for (const auto& prompt : batch) longest = std::max(longest, prompt.size());
    const ActivityScope generating(
        "generating for " + std::to_string(slots) + " sequences (prompts of up to " +
            std::to_string(longest) + " tokens, " + std::to_string(options.max_new_tokens) +
            " new)",
        "[generate] prompts or num_beams (fewer at once), or the prompts' length");
    const auto results =
        generate::generate(session.model(), *cache, batch, options, text, hooks.on_token);
    if (hooks.batch_done) hooks.batch_done(row0, batch, results, *cache);
    row0 += batch.size();
  }
}

}  // namespace kivi::host
