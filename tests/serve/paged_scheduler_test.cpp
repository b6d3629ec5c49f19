// The batch scheduler over a paged KIVI cache (docs/paged-cache.md) on a tiny dummy-weight
// Llama: admission by free pages, preemption of the newest rows with recomputation, refusal of a
// request no pool could hold, and no page lost after hundreds of random admissions, finishes,
// cancellations and preemptions.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi_catch.h"
#include "model_test_support.h"
#include "serve/batch_scheduler.h"

namespace serve = kivi::serve;
using Catch::Matchers::Contains;

namespace {

constexpr int64_t kVocab = 48;

// head_dim 32: one KIVI group of channels; residual 32 and pages of 32 tokens, so a sequence of
// L tokens holds ceil(max(L / 32 * 32, L - 32) / 32) pages.
constexpr const char* kKivi8 =
    "k_bits = 8\nv_bits = 8\ngroup_size = 32\nresidual_length = 32\npage_tokens = 32\n";

// A cache that serves no row ranges: every call goes to `inner`, but the KVCache defaults for
// ranges stay.
class WholeBatchOnly final : public kivi::KVCache {
 public:
  explicit WholeBatchOnly(std::unique_ptr<kivi::KVCache> inner) : inner_(std::move(inner)) {}
  const kivi::CacheGeometry& geometry() const override { return inner_->geometry(); }
  void append(int64_t layer, const at::Tensor& k, const at::Tensor& v,
              std::span<const int64_t> counts) override {
    inner_->append(layer, k, v, counts);
  }
  kivi::CacheView view(int64_t layer) const override { return inner_->view(layer); }
  int64_t length(int64_t seq) const override { return inner_->length(seq); }
  void reorder(std::span<const int64_t> index) override { inner_->reorder(index); }
  void truncate(int64_t length, int64_t seq) override { inner_->truncate(length, seq); }
  void reset() override { inner_->reset(); }
  kivi::MemoryStats memory() const override { return inner_->memory(); }
  std::vector<std::pair<std::string, at::Tensor>> owned_tensors() const override {
    return inner_->owned_tensors();
  }
  kivi::PoolStats pool_stats() const override { return inner_->pool_stats(); }
  int64_t pages_for(int64_t tokens) const override { return inner_->pages_for(tokens); }
  void publish(int64_t seq, std::span<const int64_t> tokens) override {
    inner_->publish(seq, tokens);
  }
  int64_t share_prefix(int64_t seq, std::span<const int64_t> tokens) override {
    return inner_->share_prefix(seq, tokens);
  }
  kivi::CacheUsage usage() const override { return inner_->usage(); }

 private:
  std::unique_ptr<kivi::KVCache> inner_;
};

struct TinyServed {
  kivi::test::TempDir dir{"paged-scheduler"};
  kivi::LoadedModel loaded;
  std::shared_ptr<kivi::KVCacheFactory> cache;

  explicit TinyServed(const char* cache_options = kKivi8)
      : cache(kivi::test::model_registry().create<kivi::KVCacheFactory>("kivi", cache_options)) {
    std::ofstream(dir.path / "config.json")
        << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 48,)"
        << R"( "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,)"
        << R"( "num_key_value_heads": 1, "max_position_embeddings": 1024, "rope_theta": 10000.0,)"
        << R"( "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1})";
    kivi::ModelOptions options;
    options.attention = kivi::test::model_registry().create<kivi::Attention>("kivi");
    loaded = kivi::load_model(kivi::test::model_registry(), dir.path, options, "dummy", 7);
  }

  // whole_batch: the cache is wrapped to serve no row ranges, so that every pass runs the
  // whole batch (what a cache plugin without them gets).
  std::unique_ptr<serve::BatchScheduler> scheduler(int64_t max_batch, int64_t pool_pages,
                                                   int64_t prefill_chunk = 64,
                                                   bool prefix_sharing = true,
                                                   bool whole_batch = false,
                                                   int64_t pass_tokens = 1024) {
    kivi::CacheGeometry g = loaded.model->cache_geometry(max_batch, 1024);
    g.pool_pages = pool_pages;
    serve::SchedulerOptions options;
    options.max_queue = 1 << 20;
    options.prefill_chunk = prefill_chunk;
    options.context = 1024;
    options.prefix_sharing = prefix_sharing;
    options.pass_tokens = pass_tokens;
    std::unique_ptr<kivi::KVCache> made = cache->create(g);
    if (whole_batch) made = std::make_unique<WholeBatchOnly>(std::move(made));
    return std::make_unique<serve::BatchScheduler>(*loaded.model, std::move(made),
                                                   kivi::generate::TextStreamFactory{}, options);
  }
};

serve::JobSpec job_of(std::vector<int64_t> prompt, int64_t max_new_tokens, uint64_t seed = 0,
                      double temperature = 0) {
  serve::JobSpec job;
  job.prompt = std::move(prompt);
  job.max_new_tokens = max_new_tokens;
  job.seed = seed;
  job.sampling.temperature = temperature;
  job.channel = std::make_shared<serve::JobChannel>();
  return job;
}

std::vector<int64_t> random_prompt(std::mt19937& rng, int64_t length) {
  std::vector<int64_t> prompt(static_cast<size_t>(length));
  for (int64_t& t : prompt) t = std::uniform_int_distribution<int64_t>(2, kVocab - 1)(rng);
  return prompt;
}

struct Outcome {
  std::vector<int64_t> tokens;
  bool done = false;
  std::string error;
};

// Reads a job's events until it is done or failed (or `cancel_after` tokens came: then it
// cancels and stops reading).
Outcome follow(serve::JobChannel& channel, int64_t cancel_after = -1) {
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    for (serve::JobEvent& e : channel.pop(50)) {
      if (e.kind == serve::JobEvent::Kind::kToken) out.tokens.push_back(e.token);
      if (e.kind == serve::JobEvent::Kind::kDone) out.done = true;
      if (e.kind == serve::JobEvent::Kind::kError) out.error = e.text;
    }
    if (out.done || !out.error.empty()) return out;
    if (cancel_after >= 0 && static_cast<int64_t>(out.tokens.size()) >= cancel_after) {
      channel.cancel();
      return out;
    }
  }
  FAIL("a job got no answer within 120 s");
  return out;
}

void wait_until_idle(const serve::BatchScheduler& scheduler) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    const serve::SchedulerStats s = scheduler.stats();
    if (s.active == 0 && s.queued == 0) return;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<std::vector<int64_t>> run_greedy(serve::BatchScheduler& scheduler,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             int64_t max_new_tokens) {
  std::vector<std::shared_ptr<serve::JobChannel>> channels;
  std::vector<serve::JobSpec> jobs;
  for (const auto& prompt : prompts) {
    jobs.push_back(job_of(prompt, max_new_tokens));
    channels.push_back(jobs.back().channel);
  }
  REQUIRE(scheduler.submit(std::move(jobs)));
  std::vector<std::vector<int64_t>> out;
  for (const auto& channel : channels) {
    const Outcome o = follow(*channel);
    REQUIRE(o.error.empty());
    REQUIRE(o.done);
    out.push_back(o.tokens);
  }
  wait_until_idle(scheduler);
  return out;
}

}  // namespace

TEST_CASE("paged serving: preempted rows are recomputed and continue as if never stopped",
          "[serve][paged]") {
  TinyServed m;
  std::mt19937 rng(5);
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 6; ++i)
    prompts.push_back(random_prompt(rng, std::uniform_int_distribution<int64_t>(40, 120)(rng)));
  // Room for every row at once: nothing is preempted.
  auto roomy = m.scheduler(6, 200);
  const auto expected = run_greedy(*roomy, prompts, 60);
  CHECK(roomy->stats().preemptions == 0);
  // Room for about two rows: rows wait for pages, and decoding rows run the pool dry.
  auto tight = m.scheduler(6, 11);
  const auto got = run_greedy(*tight, prompts, 60);
  const serve::SchedulerStats s = tight->stats();
  CHECK(s.preemptions > 0);
  CHECK(s.pool.used == 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i << " of " << prompts[i].size() << " tokens");
    CHECK(got[i] == expected[i]);
  }
}

TEST_CASE("paged serving: prefilling rows in passes over row ranges change no token",
          "[serve][paged]") {
  TinyServed m;
  std::mt19937 rng(17);
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 7; ++i)
    prompts.push_back(random_prompt(rng, std::uniform_int_distribution<int64_t>(1, 200)(rng)));
  // Whole-batch passes (every row padded to the longest chunk) against row-range passes (the
  // one-token rows together, the prefilling rows in chunks of up to 96 tokens in passes over
  // slot ranges), 4 rows for 7 requests so that prompts arrive while others decode. pass_tokens
  // 1024 puts every prefilling row of a step in one pass here; 0 splits them wherever padding
  // would pass their tokens.
  auto whole = m.scheduler(4, 200, 96, true, true);
  const auto expected = run_greedy(*whole, prompts, 40);
  CHECK(whole->stats().passes == whole->stats().steps);
  for (int64_t pass_tokens : {1024, 0}) {
    INFO("pass_tokens " << pass_tokens);
    auto ranged = m.scheduler(4, 200, 96, true, false, pass_tokens);
    const auto got = run_greedy(*ranged, prompts, 40);
    for (size_t i = 0; i < prompts.size(); ++i) {
      INFO("prompt " << i << " of " << prompts[i].size() << " tokens");
      CHECK(got[i] == expected[i]);
    }
    const serve::SchedulerStats stats = ranged->stats();
    CHECK(stats.pool.used == 0);
    // Steps with a prompt chunk and decoding rows run two passes or more.
    CHECK(stats.passes > stats.steps);
  }
}

TEST_CASE("paged serving: a request no pool could hold is refused, the rest run",
          "[serve][paged]") {
  TinyServed m;
  auto scheduler = m.scheduler(4, 8);  // 8 pages: 256 quantized positions
  std::mt19937 rng(3);
  // 200 + 100 tokens quantize 288 positions (9 pages) by the end.
  const serve::JobSpec too_large = job_of(random_prompt(rng, 200), 100);
  const std::optional<std::string> why = scheduler->refusal(too_large);
  REQUIRE(why.has_value());
  CHECK_THAT(*why, Contains("needs 9 cache pages of 32 tokens") && Contains("holds 8"));
  const serve::JobSpec fits = job_of(random_prompt(rng, 200), 60);
  CHECK_FALSE(scheduler->refusal(fits).has_value());
  const auto out = run_greedy(*scheduler, {fits.prompt}, 60);
  CHECK(out[0].size() == 60);
}

TEST_CASE(
    "paged serving: no page is lost across random admissions, finishes, cancels and "
    "preemptions",
    "[serve][paged]") {
  TinyServed m;
  auto scheduler = m.scheduler(8, 14, 48);
  std::mt19937 rng(11);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  constexpr int kJobs = 400;
  struct Submitted {
    std::shared_ptr<serve::JobChannel> channel;
    int64_t max_new_tokens = 0, cancel_after = -1;
  };
  std::vector<Submitted> submitted;
  for (int i = 0; i < kJobs; ++i) {
    serve::JobSpec job = job_of(random_prompt(rng, uniform(1, 150)), uniform(1, 60),
                                static_cast<uint64_t>(i), uniform(0, 1) ? 0.8 : 0.0);
    Submitted s{job.channel, job.max_new_tokens, -1};
    const int64_t fate = uniform(0, 9);
    if (fate == 0) job.channel->cancel();                                // gone before admission
    if (fate == 1) s.cancel_after = uniform(0, job.max_new_tokens - 1);  // gone while running
    if (fate == 0) s.cancel_after = 0;
    REQUIRE(scheduler->submit({std::move(job)}));
    submitted.push_back(s);
  }
  int64_t finished = 0;
  for (const Submitted& s : submitted) {
    if (s.cancel_after == 0 && s.channel->cancelled()) continue;
    const Outcome o = follow(*s.channel, s.cancel_after);
    CHECK(o.error.empty());
    if (o.done) {
      ++finished;
      CHECK(static_cast<int64_t>(o.tokens.size()) <= s.max_new_tokens);
    }
  }
  wait_until_idle(*scheduler);
  const serve::SchedulerStats stats = scheduler->stats();
  CHECK(finished > kJobs / 2);
  CHECK(stats.preemptions > 0);
  CHECK(stats.pool.used == 0);
  CHECK(stats.pool.pages == 14);
  CHECK(stats.cache_tokens == 0);
}

TEST_CASE("paged serving: a shared prefix skips its prefill and changes no token",
          "[serve][paged]") {
  // No residual window: a shared prefix then leaves exactly the state its own prefill would (in
  // chunks of a page), so the tokens must be equal, not just close.
  TinyServed m("k_bits = 8\nv_bits = 8\ngroup_size = 32\nresidual_length = 0\npage_tokens = 32\n");
  std::mt19937 rng(9);
  const std::vector<int64_t> prefix = random_prompt(rng, 160);  // 5 pages
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t suffix : {40, 50}) {
    prompts.push_back(prefix);
    const std::vector<int64_t> own = random_prompt(rng, suffix);
    prompts.back().insert(prompts.back().end(), own.begin(), own.end());
  }
  std::vector<std::vector<int64_t>> tokens[2];
  kivi::PoolStats pool[2];
  for (int sharing = 0; sharing < 2; ++sharing) {
    auto scheduler = m.scheduler(2, 40, 32, sharing == 1);
    for (const auto& prompt : prompts)  // one after the other: the first publishes, then finishes
      tokens[sharing].push_back(run_greedy(*scheduler, {prompt}, 24)[0]);
    pool[sharing] = scheduler->stats().pool;
    CHECK(pool[sharing].used == 0);
  }
  CHECK(pool[0].prefix_queries == 0);
  CHECK(pool[1].prefix_hits == 5);  // the second request took the prefix's 5 pages
  CHECK(tokens[1] == tokens[0]);
}

TEST_CASE("paged serving: the samples of one request prefill their prompt once", "[serve][paged]") {
  TinyServed m;
  auto scheduler = m.scheduler(4, 60, 64);
  std::mt19937 rng(21);
  const std::vector<int64_t> prompt = random_prompt(rng, 300);
  auto channel = std::make_shared<serve::JobChannel>();
  std::vector<serve::JobSpec> jobs;
  for (int64_t i = 0; i < 3; ++i) {  // n = 3 samples of one request
    serve::JobSpec job = job_of(prompt, 8, static_cast<uint64_t>(i), 0.8);
    job.channel = channel;
    job.index = i;
    jobs.push_back(std::move(job));
  }
  REQUIRE(scheduler->submit(std::move(jobs)));
  int done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (done < 3 && std::chrono::steady_clock::now() < deadline)
    for (const serve::JobEvent& e : channel->pop(50)) {
      REQUIRE(e.kind != serve::JobEvent::Kind::kError);
      done += e.kind == serve::JobEvent::Kind::kDone;
    }
  REQUIRE(done == 3);
  wait_until_idle(*scheduler);
  // The first sample prefills all 300 tokens and publishes its final pages (positions below
  // 256: keys are quantized to 288, values to 268); each of the others takes those 8 pages and
  // prefills the last 44 tokens.
  const kivi::PoolStats pool = scheduler->stats().pool;
  CHECK(pool.prefix_hits == 16);
  CHECK(pool.used == 0);
}
