// `kivi-host chat`: an interactive chat on the terminal. Each turn renders the whole
// conversation with the tokenizer's chat template; the tokens the cache already holds (the
// longest common prefix) are kept and only the rest is fed, so a turn costs its own tokens.
// The reply streams as it is sampled ([generate] sampling options, max_new_tokens).
// Commands: /stats (cache statistics), /reset (forget the conversation), /quit.
#include <algorithm>
#include <iostream>

#include <ATen/ATen.h>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/forward_steps.h"
#include "kivi/generate/text_stops.h"
#include "kivi/text/chat_template.h"
#include "kivi/text/stream_decoder.h"
#include "model_session.h"

namespace kivi::host {

int run_chat_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  check(session.tokenizer && !session.tokenizer->chat_template().empty(),
        cfg.model.path.string() +
            ": mode chat needs a tokenizer with a chat template (tokenizer_config.json "
            "chat_template or chat_template.jinja)");
  const text::Tokenizer& tokenizer = *session.tokenizer;
  const text::ChatTemplate chat(tokenizer.chat_template());
  const nlohmann::json variables = {{"bos_token", tokenizer.bos_token()},
                                    {"eos_token", tokenizer.eos_token()}};
  generate::GenerateOptions options = generate_options(cfg, session);
  options.context = effective_context(context, session, cfg.generate.context, "[generate] context");
  CausalLM& model = session.model();
  const int64_t context_limit = generate::context_length(model, options);
  auto cache = create_cache(session, model.cache_geometry(1), "[cache] settings");
  generate::Sampler sampler(options.sampling, options.seed);
  auto& out = context.out;
  out << describe(session) << "\nchat: /stats shows the cache, /reset forgets, /quit ends\n";

  std::vector<text::ChatMessage> messages;
  std::vector<int64_t> cached;  // the tokens the cache holds, in order
  for (std::string line;;) {
    out << "> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/quit") break;
    if (line.empty()) continue;
    if (line == "/stats") {
      print_cache_stats(out, *cache);
      continue;
    }
    if (line == "/reset") {
      messages.clear();
      cached.clear();
      cache->reset();
      out << "(conversation reset)\n";
      continue;
    }
    messages.push_back({"user", line});
    const std::vector<int32_t> ids32 =
        tokenizer.encode(chat.render(messages, true, variables), false);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (context_limit > 0 &&
        static_cast<int64_t>(ids.size()) + options.max_new_tokens > context_limit) {
      out << "(the conversation (" << ids.size() << " tokens) and max_new_tokens ("
          << options.max_new_tokens << ") exceed the context of " << context_limit
          << "; /reset to start again)\n";
      messages.pop_back();
      continue;
    }
    // Keep the common prefix (at least one token must be fed to get logits).
    size_t keep = 0;
    while (keep < cached.size() && keep < ids.size() && cached[keep] == ids[keep]) ++keep;
    keep = std::min(keep, ids.size() - 1);
    cache->truncate(static_cast<int64_t>(keep));
    const int64_t fresh = static_cast<int64_t>(ids.size() - keep);
    const at::Device device = model.options().device;
    const at::Tensor input =
        at::tensor(std::vector<int64_t>(ids.begin() + keep, ids.end()), at::kLong).view({1, fresh});
    const at::Tensor positions =
        at::arange(static_cast<int64_t>(keep), static_cast<int64_t>(ids.size()), at::kLong)
            .view({1, fresh});
    at::Tensor logits =
        model.forward_last(input.to(device), positions.to(device), {}, *cache);  // [1, V]
    cached = ids;

    text::StreamDecoder decoder(tokenizer, true);
    generate::TextStops stops(options.stop_strings);
    std::string reply;
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
      const int64_t token = sampler.next(logits[0], cached);
      if (std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end())
        break;
      auto [piece, stop] = stops.add(decoder.step(static_cast<int32_t>(token)));
      reply += piece;
      out << piece << std::flush;
      if (stop) break;
      cached.push_back(token);
      logits = generate::decode_step(model, *cache, {token}, {});
    }
    const std::string rest = stops.finish(decoder.flush());
    reply += rest;
    out << rest << "\n";
    messages.push_back({"assistant", reply});
  }
  return 0;
}

}  // namespace kivi::host
