// generate's work apart from its printing: [generate]'s prompts (text, prompt_file or prompt_ids)
// through the session's model and cache, as `kivi-host generate` prints them and the Engine
// (kivi/engine.h) returns them. Beam search and streaming run one prompt at a time, otherwise the
// prompts are one batch.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "host_context.h"
#include "kivi/generate/generate.h"
#include "model_session.h"

namespace kivi::host {

// Token-id prompts: text prompts and prompt_file lines encoded with the model's tokenizer, then
// prompt_ids as they are. Throws naming run.toml when there are none.
std::vector<std::vector<int64_t>> read_prompts(const HostConfig& cfg, const ModelSession& session);

struct GenerationHooks {
  // Before each batch; `first_row` is the index of its first prompt.
  std::function<void(size_t first_row)> batch_start;
  // Every new token of a row of the batch with the text it completed (the batch's streams).
  generate::TokenCallback on_token;
  // After each batch: its prompts, the results (num_beams hypotheses, best first, for beam
  // search; else one per prompt) and its cache, before the cache is freed.
  std::function<void(size_t first_row, const std::vector<std::vector<int64_t>>& prompts,
                     const std::vector<generate::Generation>& results, const KVCache& cache)>
      batch_done;
};

// Runs `prompts` with the options of [generate] (generate_options, effective_context).
void run_generation(HostContext& context, ModelSession& session,
                    const std::vector<std::vector<int64_t>>& prompts, const GenerationHooks& hooks);

}  // namespace kivi::host
