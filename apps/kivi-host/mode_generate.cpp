// `kivi-host generate`: prompts ([generate] prompts, prompt_file or prompt_ids) through the
// [model] checkpoint with the configured attention and cache; prints each continuation, or
// streams it token by token (stream = true: one prompt at a time), and the cache statistics
// (cache_stats = true).
#include <algorithm>
#include <fstream>
#include <ostream>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/util/activity.h"
#include "kivi/util/input_file.h"
#include "model_session.h"

namespace kivi::host {
namespace {

// Token-id prompts from [generate]: text prompts and prompt_file lines are encoded with the
// model folder's tokenizer; prompt_ids are taken as they are.
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
  generate::GenerateOptions options = generate_options(cfg, session);
  options.context = effective_context(context, session, cfg.generate.context, "[generate] context");
  const auto prompts = read_prompts(cfg, session);
  const auto text = text_streams(session);
  auto& out = context.out;
  out << describe(session) << "\n";

  // Beam search and streaming run one prompt at a time; otherwise the prompts are one batch.
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
    generate::TokenCallback on_token;
    if (cfg.generate.stream) {
      out << "prompt " << row0 << ": " << std::flush;
      on_token = [&](int64_t, int64_t, const std::string& piece) { out << piece << std::flush; };
    }
    size_t longest = 0;
    for (const auto& prompt : batch) longest = std::max(longest, prompt.size());
    const ActivityScope generating(
        "generating for " + std::to_string(slots) + " sequences (prompts of up to " +
            std::to_string(longest) + " tokens, " + std::to_string(options.max_new_tokens) +
            " new)",
        "[generate] prompts or num_beams (fewer at once), or the prompts' length");
    const auto results =
        generate::generate(session.model(), *cache, batch, options, text, on_token);
    if (cfg.generate.stream) out << "\n";
    for (size_t i = 0; i < results.size() && (i == 0 || options.num_beams == 1); ++i)
      print_generation(out, row0 + i, batch[i % batch.size()].size(), results[i],
                       text && !cfg.generate.stream);
    if (options.num_beams > 1 && !results.empty())
      out << "beam score " << results[0].score << " (best of " << results.size()
          << " hypotheses)\n";
    if (cfg.generate.cache_stats) print_cache_stats(out, *cache);
    row0 += batch.size();
  }
  return 0;
}

}  // namespace kivi::host
