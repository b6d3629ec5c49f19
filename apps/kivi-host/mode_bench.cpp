// `kivi-host bench`: prefill and decode throughput of the [model] with the configured cache and
// attention, on random tokens: [bench] batch x prompt_tokens prefilled into an empty cache, then
// decode_tokens greedy steps; tokens/s as the median of `repeats` runs after `warmup` runs.
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <ostream>
#include <random>

#include <ATen/ATen.h>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/forward_steps.h"
#include "model_session.h"

namespace kivi::host {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int run_bench_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const BenchChoice& b = cfg.bench;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  CausalLM& model = session.model();
  const int64_t context_limit = session.config.max_position_embeddings;
  check(context_limit <= 0 || b.prompt_tokens + b.decode_tokens <= context_limit,
        cfg.file.string() + ": [bench] prompt_tokens + decode_tokens = " + std::to_string(b.prompt_tokens + b.decode_tokens) +
            " exceeds the model's max_position_embeddings (" + std::to_string(context_limit) + ")");
  context.out << describe(session) << "\n";
  context.out << "bench: batch " << b.batch << ", prompt " << b.prompt_tokens << " tokens, decode " << b.decode_tokens
              << " tokens, " << b.warmup << " warm-up + " << b.repeats << " timed runs\n";
  std::mt19937_64 rng(static_cast<uint64_t>(b.seed));
  std::uniform_int_distribution<int64_t> token(0, session.config.vocab_size - 1);
  std::vector<std::vector<int64_t>> prompts(b.batch);
  for (auto& p : prompts)
    for (int64_t t = 0; t < b.prompt_tokens; ++t) p.push_back(token(rng));
  auto cache = session.cache_factory->create(model.cache_geometry(b.batch, b.prompt_tokens + b.decode_tokens));
  std::vector<double> prefill_rates, decode_rates;
  for (int64_t run = 0; run < b.warmup + b.repeats; ++run) {
    cache->reset();
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor logits = generate::prefill(model, *cache, prompts);  // [B, V]
    std::vector<int64_t> next(b.batch);
    auto take = [&] {  // argmax to the host: also waits for the device
      const at::Tensor chosen = logits.argmax(-1).to(at::kCPU);
      for (int64_t r = 0; r < b.batch; ++r) next[r] = chosen[r].item<int64_t>();
    };
    take();
    const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t0 = std::chrono::steady_clock::now();
    for (int64_t step = 0; step < b.decode_tokens; ++step) {
      logits = generate::decode_step(model, *cache, next, {});
      take();
    }
    const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (run < b.warmup) continue;
    prefill_rates.push_back(static_cast<double>(b.batch * b.prompt_tokens) / prefill_s);
    decode_rates.push_back(static_cast<double>(b.batch * b.decode_tokens) / decode_s);
  }
  context.out << std::fixed << std::setprecision(1) << "prefill: " << median(prefill_rates) << " tokens/s (median of "
              << b.repeats << ")\n"
              << "decode: " << median(decode_rates) << " tokens/s (median of " << b.repeats << "; "
              << b.batch << " sequences per step)\n"
              << std::defaultfloat;
  print_cache_stats(context.out, *cache);
  return 0;
}

}  // namespace kivi::host
