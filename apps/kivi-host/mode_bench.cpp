// `kivi-host bench`: decode (and prefill) throughput of the [model] with the configured cache
// and attention, on random tokens. Each run empties the cache, fills it with prompt_tokens per
// sequence for [bench] batch sequences, then takes decode_tokens greedy steps; tokens/s are
// medians over `repeats` runs after `warmup` runs. The fill is either a real prefill of random
// prompts, or (fill = "random") random keys/values appended straight into the cache, which
// makes long contexts affordable: a decode step's cost does not depend on the values.
// find_max_batch = true instead searches the largest batch that fills and decodes without
// running out of device memory. Peak device memory is reported; [output] json writes it all.
// profile = true adds one more run whose decode steps libtorch's profiler records
// (step_profiler.h): the top kernels per step, how busy the device was, and a Chrome trace.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <optional>
#include <ostream>
#include <random>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/forward_steps.h"
#include "kivi/util/activity.h"
#include "kivi/util/device_memory.h"
#include "kivi/util/failure.h"
#include "model_session.h"
#include "seconds_since.h"
#include "step_profiler.h"

namespace kivi::host {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Waits for the device's queued work (a copy to the host waits for the stream).
void wait_for(const at::Device& device) {
  (void)at::empty({1}, at::TensorOptions().device(device)).to(at::kCPU);
}

class Bench {
 public:
  Bench(const BenchChoice& b, ModelSession& session)
      : b_(b), session_(session), rng_(static_cast<uint64_t>(b.seed)) {}

  // One run: fill, then decode_tokens steps. Returns {prefill tokens/s (NaN for a random
  // fill), decode tokens/s}.
  std::pair<double, double> run(KVCache& cache, int64_t batch) {
    std::vector<int64_t> next(batch);
    const double prefill_rate = fill(cache, batch, next);
    const auto t0 = std::chrono::steady_clock::now();
    decode(cache, next);
    return {prefill_rate, static_cast<double>(batch * b_.decode_tokens) / seconds_since(t0)};
  }

  // One more run whose decode steps the profiler records (the fill is not recorded).
  StepProfile profiled_run(KVCache& cache, int64_t batch, StepProfiler& profiler,
                           const std::string& trace) {
    std::vector<int64_t> next(batch);
    fill(cache, batch, next);
    profiler.start();
    decode(cache, next);
    return profiler.stop(b_.decode_tokens, trace);
  }

  std::unique_ptr<KVCache> make_cache(int64_t batch) const {
    return create_cache(session_,
                        session_.model().cache_geometry(batch, b_.prompt_tokens + b_.decode_tokens),
                        "[bench] batch or prompt_tokens + decode_tokens");
  }

 private:
  // Empties the cache and fills prompt_tokens per sequence; `next` gets the first decode
  // inputs. Returns prefill tokens/s (NaN for a random fill).
  double fill(KVCache& cache, int64_t batch, std::vector<int64_t>& next) {
    cache.reset();
    const auto t0 = std::chrono::steady_clock::now();
    if (b_.fill == "prefill") {
      const at::Tensor logits =
          generate::prefill(session_.model(), cache, random_prompts(batch));  // [B, V]
      take(logits, next);
      return static_cast<double>(batch * b_.prompt_tokens) / seconds_since(t0);
    }
    fill_random(cache, batch);
    for (auto& t : next) t = random_token();
    return std::nan("");
  }
  // decode_tokens greedy steps from `next`.
  void decode(KVCache& cache, std::vector<int64_t>& next) {
    for (int64_t step = 0; step < b_.decode_tokens; ++step)
      take(generate::decode_step(session_.model(), cache, next, {}), next);
  }

  int64_t random_token() {
    return std::uniform_int_distribution<int64_t>(0, session_.config.vocab_size - 1)(rng_);
  }
  std::vector<std::vector<int64_t>> random_prompts(int64_t batch) {
    std::vector<std::vector<int64_t>> prompts(batch);
    for (auto& p : prompts)
      for (int64_t t = 0; t < b_.prompt_tokens; ++t) p.push_back(random_token());
    return prompts;
  }
  // Greedy pick, copied to the host: each step waits for the device, as generation does.
  static void take(const at::Tensor& logits, std::vector<int64_t>& next) {
    const at::Tensor chosen = logits.argmax(-1).to(at::kCPU);
    for (size_t r = 0; r < next.size(); ++r)
      next[r] = chosen[static_cast<int64_t>(r)].item<int64_t>();
  }
  // prompt_tokens random keys/values per sequence into every layer, 1024 tokens at a time (the
  // same chunk for every layer: only the cost of reading them later matters).
  void fill_random(KVCache& cache, int64_t batch) {
    const CacheGeometry& g = cache.geometry();
    const auto opts = at::TensorOptions().dtype(g.dtype).device(g.device);
    for (int64_t start = 0; start < b_.prompt_tokens; start += 1024) {
      const int64_t n = std::min<int64_t>(1024, b_.prompt_tokens - start);
      const at::Tensor k =
          at::randn({batch, g.num_kv_heads, n, g.head_dim}, opts);  // [B, kv, n, hd]
      const at::Tensor v = at::randn({batch, g.num_kv_heads, n, g.head_dim}, opts);
      for (int64_t l = 0; l < g.num_layers; ++l) cache.append(l, k, v);
    }
    wait_for(g.device);
  }

  const BenchChoice& b_;
  ModelSession& session_;
  std::mt19937_64 rng_;
};

// The largest batch in [1, limit] whose cache fills and decodes: doubling, then bisection.
int64_t search_max_batch(Bench& bench, const at::Device& device, int64_t limit, std::ostream& out) {
  auto fits = [&](int64_t batch) {
    bool ok = true;
    try {
      auto cache = bench.make_cache(batch);
      bench.run(*cache, batch);
    } catch (const std::exception& e) {
      if (!is_out_of_memory(e)) throw;
      clear_failed_activity();  // an expected failure: it must not name a later one
      ok = false;
    }
    release_cached_device_memory(device);
    const DeviceMemory m = device_memory(device);
    out << "  batch " << batch << ": " << (ok ? "fits" : "out of memory") << " (peak " << std::fixed
        << std::setprecision(2) << m.peak_allocated / 1e9 << " GB allocated)\n"
        << std::defaultfloat << std::flush;
    reset_peak_device_memory(device);
    return ok;
  };
  int64_t good = 0, bad = limit + 1;
  for (int64_t batch = 1; batch <= limit; batch *= 2) {
    if (!fits(batch)) {
      bad = batch;
      break;
    }
    good = batch;
  }
  if (bad > limit && good < limit && fits(limit)) return limit;
  if (bad > limit) bad = limit;
  while (bad - good > 1) {
    const int64_t mid = good + (bad - good) / 2;
    (fits(mid) ? good : bad) = mid;
  }
  return good;
}

}  // namespace

int run_bench_mode(HostContext& context) {
  // An out-of-memory error inside a graph capture cannot be recovered from, so the search for
  // the largest batch launches every op.
  if (context.config.bench.find_max_batch) context.config.model.cuda_graphs = false;
  const HostConfig& cfg = context.config;
  const BenchChoice& b = cfg.bench;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  const at::Device device = session.model().options().device;
  const int64_t context_limit = position_limit(session.config);  // 0: dynamic NTK rope, no limit
  check(context_limit <= 0 || b.prompt_tokens + b.decode_tokens <= context_limit,
        cfg.file.string() + ": [bench] prompt_tokens + decode_tokens = " +
            std::to_string(b.prompt_tokens + b.decode_tokens) +
            " exceeds the model's max_position_embeddings (" + std::to_string(context_limit) +
            "; only a dynamic NTK rope may go past it)");
  context.out << describe(session)
              << (cfg.model.cuda_graphs && device.is_cuda() ? ", CUDA graphs" : "") << "\n";
  Bench bench(b, session);
  nlohmann::json doc = {{"mode", "bench"},
                        {"model", cfg.model.path.string()},
                        {"dtype", c10::toString(session.model().options().dtype)},
                        {"device", device.str()},
                        {"cache", session.cache_name},
                        {"cache_options", cfg.cache.options_toml},
                        {"attention", session.attention_name},
                        {"cuda_graphs", cfg.model.cuda_graphs},  // the setting; only CUDA uses it
                        {"context", b.prompt_tokens},
                        {"decode_tokens", b.decode_tokens},
                        {"fill", b.fill},
                        {"device_total_bytes", device_memory(device).total}};

  if (b.find_max_batch) {
    context.out << "bench: the largest batch that fills " << b.prompt_tokens << " tokens ("
                << b.fill << ") and decodes " << b.decode_tokens << " more, up to " << b.batch
                << "\n";
    const int64_t best = search_max_batch(bench, device, b.batch, context.out);
    context.out << "largest batch that fits: " << best << "\n";
    doc["max_batch"] = best;
    doc["max_batch_limit"] = b.batch;
  } else {
    context.out << "bench: batch " << b.batch << ", context " << b.prompt_tokens << " tokens ("
                << b.fill << "), decode " << b.decode_tokens << " tokens, " << b.warmup
                << " warm-up + " << b.repeats << " timed runs\n";
    auto cache = bench.make_cache(b.batch);
    std::vector<double> prefill_rates, decode_rates;
    // The first run's decode: graphs captured, and key lengths that no library has planned for
    // yet (what a first request meets; later runs repeat the same lengths).
    double first_decode_rate = std::nan("");
    reset_peak_device_memory(device);
    for (int64_t r = 0; r < b.warmup + b.repeats; ++r) {
      const auto [prefill_rate, decode_rate] = bench.run(*cache, b.batch);
      context.err << "bench: run " << (r + 1) << "/" << (b.warmup + b.repeats)
                  << (r < b.warmup ? " (warm-up)" : "") << ": decode " << std::fixed
                  << std::setprecision(1) << decode_rate << " tokens/s\n"
                  << std::defaultfloat << std::flush;
      if (r == 0) first_decode_rate = decode_rate;
      if (r < b.warmup) continue;
      prefill_rates.push_back(prefill_rate);
      decode_rates.push_back(decode_rate);
    }
    const DeviceMemory m = device_memory(device);
    const double decode_rate = median(decode_rates);
    context.out << std::fixed << std::setprecision(1);
    if (b.fill == "prefill")
      context.out << "prefill: " << median(prefill_rates) << " tokens/s (median of " << b.repeats
                  << ")\n";
    context.out << "decode: " << decode_rate << " tokens/s (median of " << b.repeats << "; "
                << b.batch << " sequences per step, " << std::setprecision(3)
                << 1e3 * b.batch / decode_rate << " ms per step)\n";
    if (b.warmup > 0)
      context.out << std::setprecision(1) << "first run (warm-up): decode " << first_decode_rate
                  << " tokens/s, " << std::setprecision(2) << first_decode_rate / decode_rate
                  << "x of the median\n";
    if (device.is_cuda())
      context.out << std::setprecision(2) << "device memory: peak " << m.peak_allocated / 1e9
                  << " GB allocated, " << m.peak_reserved / 1e9 << " GB reserved (of "
                  << m.total / 1e9 << " GB)\n";
    context.out << std::defaultfloat;
    print_cache_stats(context.out, *cache);
    if (b.profile) {
      StepProfiler profiler(device);
      const StepProfile profile = bench.profiled_run(*cache, b.batch, profiler, b.trace);
      print_profile(context.out, profile);
      if (!b.trace.empty())
        context.out << "trace: " << b.trace << " (chrome://tracing or ui.perfetto.dev)\n";
      doc["profile"] = profile_json(profile);
    }
    doc["batch"] = b.batch;
    doc["prefill_tokens_per_s"] =
        b.fill == "prefill" ? nlohmann::json(median(prefill_rates)) : nlohmann::json();
    doc["decode_tokens_per_s"] = decode_rate;
    doc["decode_step_ms"] = 1e3 * b.batch / decode_rate;
    doc["decode_tokens_per_s_runs"] = decode_rates;
    if (b.warmup > 0) doc["first_run_decode_tokens_per_s"] = first_decode_rate;
    doc["cache_bytes"] = cache->memory().total();
    doc["peak_allocated_bytes"] = m.peak_allocated;
    doc["peak_reserved_bytes"] = m.peak_reserved;
  }
  if (!cfg.json_output.empty()) {
    std::ofstream file(cfg.json_output);
    check(file.good(), cfg.file.string() + ": [output] json: cannot write " + cfg.json_output);
    file << doc.dump(2) << "\n";
    context.out << "json: " << cfg.json_output << "\n";
  }
  return 0;
}

}  // namespace kivi::host
