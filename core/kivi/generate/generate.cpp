#include "kivi/generate/generate.h"

#include <algorithm>
#include <tuple>

#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "kivi/generate/beam_search.h"
#include "kivi/generate/forward_steps.h"
#include "kivi/generate/text_stops.h"
#include "kivi/model/causal_lm.h"
#include "kivi/util/error.h"

namespace kivi::generate {

const char* to_string(StopReason reason) {
  switch (reason) {
    case StopReason::kEos:
      return "eos";
    case StopReason::kStopString:
      return "stop string";
    case StopReason::kMaxNewTokens:
      return "max_new_tokens";
    case StopReason::kContext:
      return "context full";
  }
  return "?";
}

void validate(const GenerateOptions& o, const std::string& where) {
  validate(o.sampling, where);
  check(o.max_new_tokens >= 0,
        where + ": max_new_tokens = " + std::to_string(o.max_new_tokens) + ": expected >= 0");
  check(o.context >= 0,
        where + ": context = " + std::to_string(o.context) + ": expected >= 0 (0 = the model's)");
  check(o.num_beams >= 1,
        where + ": num_beams = " + std::to_string(o.num_beams) + ": expected >= 1");
  for (const std::string& s : o.stop_strings)
    check(!s.empty(), where + ": stop_strings: an empty string would stop at once");
  check(o.num_beams == 1 || o.stop_strings.empty(),
        where + ": stop_strings are not supported with beam search (num_beams = " +
            std::to_string(o.num_beams) + ")");
}

int64_t context_length(const CausalLM& model, const GenerateOptions& options) {
  if (options.context <= 0) return model.config().max_position_embeddings;
  const int64_t limit = position_limit(model.config());
  return limit > 0 ? std::min(options.context, limit) : options.context;
}

namespace {

void check_prompt(const std::vector<int64_t>& prompt, size_t row, int64_t context, int64_t vocab) {
  check(!prompt.empty(),
        "generate: prompt " + std::to_string(row) + " is empty (it needs at least one token)");
  check(context <= 0 || static_cast<int64_t>(prompt.size()) <= context,
        "generate: prompt " + std::to_string(row) + " has " + std::to_string(prompt.size()) +
            " tokens, longer than the context of " + std::to_string(context) +
            " (max_position_embeddings or [generate] context)");
  for (int64_t id : prompt)
    check(id >= 0 && id < vocab,
          "generate: prompt " + std::to_string(row) + ": token id " + std::to_string(id) +
              " is outside the vocabulary (vocab_size " + std::to_string(vocab) + ")");
}

}  // namespace

at::Tensor prefill(CausalLM& model, KVCache& cache,
                   const std::vector<std::vector<int64_t>>& prompts) {
  const int64_t batch = static_cast<int64_t>(prompts.size());
  std::vector<int64_t> counts;
  int64_t longest = 0;
  for (const auto& p : prompts)
    longest = std::max(longest, counts.emplace_back(static_cast<int64_t>(p.size())));
  at::Tensor ids = at::zeros({batch, longest}, at::kLong);  // [B, T], right-padded with 0
  auto id_at = ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < counts[b]; ++t) id_at[b][t] = prompts[b][t];
  const at::Tensor positions =
      at::arange(longest, at::kLong).unsqueeze(0).expand({batch, longest}).contiguous();
  const at::Device device = model.options().device;
  // [B, V], each row's last prompt position; an empty row's (beam search's forks) unspecified.
  return model.forward_last(ids.to(device), positions.to(device), counts, cache);
}

at::Tensor decode_step(CausalLM& model, KVCache& cache, const std::vector<int64_t>& tokens,
                       std::span<const int64_t> counts) {
  const int64_t batch = static_cast<int64_t>(tokens.size());
  std::vector<int64_t> positions(batch);
  for (int64_t b = 0; b < batch; ++b) positions[b] = cache.length(b);
  const at::Device device = model.options().device;
  const at::Tensor logits =
      model.forward(at::tensor(tokens, at::kLong).view({batch, 1}).to(device),
                    at::tensor(positions, at::kLong).view({batch, 1}).to(device), counts,
                    cache);    // [B, 1, V]
  return logits.select(1, 0);  // [B, V]
}

std::vector<Generation> generate(CausalLM& model, KVCache& cache,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options, const TextStreamFactory& text,
                                 const TokenCallback& on_token) {
  validate(options, "generate");
  check(!prompts.empty(), "generate: no prompts");
  check(options.stop_strings.empty() || text,
        "generate: stop strings need a text stream (a tokenizer)");
  const int64_t batch = static_cast<int64_t>(prompts.size());
  const int64_t context = context_length(model, options);
  for (size_t b = 0; b < prompts.size(); ++b)
    check_prompt(prompts[b], b, context, model.config().vocab_size);
  if (options.num_beams > 1) {
    check(batch == 1,
          "generate: beam search runs one prompt at a time (got " + std::to_string(batch) + ")");
    std::vector<Generation> beams = beam_search(model, cache, prompts[0], options);
    if (text)
      for (Generation& g : beams) {
        auto stream = text();
        for (int64_t token : g.tokens) g.text += stream->step(token);
        g.text += stream->flush();
      }
    return beams;
  }
  check(cache.geometry().max_batch == batch,
        "generate: the cache holds " + std::to_string(cache.geometry().max_batch) +
            " sequences, the batch has " + std::to_string(batch) + " prompts");

  std::vector<Generation> out(batch);
  std::vector<Sampler> samplers;
  std::vector<std::vector<int64_t>> history(prompts);  // prompt + generated, for the penalty
  std::vector<std::unique_ptr<TextStream>> streams(batch);
  std::vector<TextStops> stops;
  for (int64_t b = 0; b < batch; ++b) {
    samplers.emplace_back(options.sampling, options.seed + static_cast<uint64_t>(b));
    if (text) streams[b] = text();
    stops.emplace_back(options.stop_strings);
  }
  std::vector<bool> done(batch, options.max_new_tokens == 0);
  auto finish = [&](int64_t b, StopReason reason) {
    done[b] = true;
    out[b].stop = reason;
    if (streams[b] && reason != StopReason::kStopString) {
      const std::string rest = stops[b].finish(streams[b]->flush());
      out[b].text += rest;
      if (on_token && !rest.empty()) on_token(b, -1, rest);
    }
  };
  if (options.max_new_tokens == 0) return out;

  at::Tensor logits = prefill(model, cache, prompts);  // [B, V]
  std::vector<int64_t> next(batch, 0);
  std::vector<int64_t> counts(batch, 0);
  for (int64_t step = 0;; ++step) {
    const at::Tensor rows = logits.to(at::kCPU);  // [B, V]
    for (int64_t b = 0; b < batch; ++b) {
      if (done[b]) continue;
      const int64_t token = samplers[b].next(rows[b], history[b]);
      next[b] = token;
      history[b].push_back(token);
      out[b].tokens.push_back(token);
      std::string piece;
      bool stopped = false;
      if (streams[b]) std::tie(piece, stopped) = stops[b].add(streams[b]->step(token));
      out[b].text += piece;
      if (on_token) on_token(b, token, piece);
      if (stopped)
        finish(b, StopReason::kStopString);
      else if (std::find(options.eos_ids.begin(), options.eos_ids.end(), token) !=
               options.eos_ids.end())
        finish(b, StopReason::kEos);
      else if (static_cast<int64_t>(out[b].tokens.size()) >= options.max_new_tokens)
        finish(b, StopReason::kMaxNewTokens);
      else if (context > 0 && cache.length(b) >= context)  // no position left to feed this token at
        finish(b, StopReason::kContext);
    }
    int64_t active = 0;
    for (int64_t b = 0; b < batch; ++b) active += counts[b] = done[b] ? 0 : 1;
    if (active == 0) break;
    logits = decode_step(model, cache, next, counts);
  }
  return out;
}

}  // namespace kivi::generate
