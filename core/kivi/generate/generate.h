// The generation loop: a batch of prompts of different lengths, right-padded, prefilled in one
// forward pass and then decoded in lock step. A row that has finished gets count 0, so the
// cache stores nothing more for it. Stops per row on any EOS id, on a stop string in the
// decoded text, at max_new_tokens, or when the context is full.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kivi/generate/sampler.h"

namespace kivi {
class CausalLM;
class KVCache;
}  // namespace kivi

namespace kivi::generate {

// Incremental detokenization for one sequence (the host adapts text::StreamDecoder to it, so
// that kivi_core does not depend on the tokenizer library).
class TextStream {
 public:
  virtual ~TextStream() = default;
  virtual std::string step(int64_t token) = 0;  // the text `token` completes (often "")
  virtual std::string flush() = 0;              // what is still held back, at the end
};
using TextStreamFactory = std::function<std::unique_ptr<TextStream>()>;

struct GenerateOptions {
  SamplingOptions sampling;
  uint64_t seed = 0;  // row b samples with seed + b
  int64_t max_new_tokens = 64;
  std::vector<int64_t> eos_ids;           // any of them ends a row (the EOS is kept in tokens)
  std::vector<std::string> stop_strings;  // end a row when its decoded text contains one
  int64_t context = 0;                    // tokens per sequence; 0 = max_position_embeddings
  int64_t num_beams = 1;                  // > 1: beam search (one prompt at a time)
  double length_penalty = 1.0;            // beam score = sum log p / new_tokens^length_penalty
};

enum class StopReason { kEos, kStopString, kMaxNewTokens, kContext };
const char* to_string(StopReason reason);

struct Generation {
  std::vector<int64_t> tokens;  // new tokens only (an EOS that ended the row included)
  std::string text;             // decoded new text, cut before a stop string ("" without a stream)
  StopReason stop = StopReason::kMaxNewTokens;
  double score = 0;  // beam search: the length-penalized log-probability
};

// Called for every new token of row `row` with the text it completed (maybe "").
using TokenCallback = std::function<void(int64_t row, int64_t token, const std::string& text)>;

// Runs prompts (token ids, each non-empty) through `model` with `cache`, which must be empty
// and have max_batch == prompts.size() (== num_beams for beam search, with one prompt).
// Stop strings need `text`. Throws kivi::Error for a prompt longer than the context.
std::vector<Generation> generate(CausalLM& model, KVCache& cache,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options, const TextStreamFactory& text = {},
                                 const TokenCallback& on_token = {});

// Checks options against the model (context, beams) before any work; `where` prefixes messages.
void validate(const GenerateOptions& options, const std::string& where);

// The context a run may fill: options.context, or the model's max_position_embeddings. A larger
// options.context is cut to position_limit() (model_config.h): kept with dynamic NTK rope, cut
// to max_position_embeddings otherwise (kivi-host warns when it cuts).
int64_t context_length(const CausalLM& model, const GenerateOptions& options);

}  // namespace kivi::generate
