// Continuous batching: one KV cache of `max_batch` rows and one worker thread that owns the
// model and the cache. A request takes a free row; its prompt is fed in chunks, then it decodes
// with the running batch. A step runs the one-token rows (decodes) as one pass of the whole
// batch and, with a cache that serves row ranges, the prefilling rows in passes over ranges of
// slots (CacheRows; nearby rows share one while the padding stays small), within step_tokens;
// with any other cache one pass of the whole batch feeds every row its chunk, its token or
// nothing. A finished row is truncated to 0 and given to the next request. Requests that find no
// free row wait in a bounded queue; submit() refuses beyond the bound (the HTTP layer answers
// 503). The scheduler knows nothing of HTTP: results go to a JobChannel that the request's
// thread reads.
//
// A paged cache ([cache] memory_budget, docs/paged-cache.md) bounds the tokens, not the rows:
// a request is admitted when the pool's free pages cover its prompt and a page of decoding
// (beyond what rows still prefilling will take), in arrival order. When a pass needs more pages
// than are free, the newest rows are preempted: their pages go back to the pool and they wait,
// ahead of the queue, to be recomputed (prompt and generated tokens prefilled again), so an
// admitted request is never failed for memory. One that could not fit even alone is refused
// at submission (refusal(): the HTTP layer answers 400). Rows publish their final pages, and a
// new or recomputed row starts from the pages of its prompt's longest published prefix (prefix
// sharing: that part of its prefill is skipped).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>

#include "kivi/cache/cache_types.h"
#include "kivi/generate/generate.h"
#include "serve/metrics.h"

namespace kivi {
class CausalLM;
class KVCache;
}  // namespace kivi

namespace kivi::serve {

// A token with its log-probability under the model (log_softmax of the raw logits) and the
// `top` most likely alternatives at that position.
struct TokenScore {
  int64_t token = 0;
  double logprob = 0;
  std::vector<std::pair<int64_t, double>> top;
};

struct JobEvent {
  enum class Kind { kPromptScores, kToken, kDone, kError };
  Kind kind = Kind::kToken;
  int64_t index = 0;               // which of the request's sequences (n, several prompts)
  std::vector<TokenScore> scores;  // kPromptScores: prompt tokens 1.. (token 0 has none)
  int64_t token = -1;              // kToken
  std::string text;  // kToken: the text it completes (stop strings held back); kError: message
  std::optional<TokenScore> score;  // kToken, when logprobs were asked for
  std::string finish_reason;        // kDone: "stop" (EOS or stop string) or "length"
  int64_t prompt_tokens = 0, completion_tokens = 0;  // kDone
  int status = 500;                                  // kError
};

// Events of one request (all its sequences) from the worker to the request's thread.
class JobChannel {
 public:
  void push(JobEvent event);
  // Waits up to `timeout_ms` for events; returns those that came (possibly none).
  std::vector<JobEvent> pop(int timeout_ms);
  // The request's thread gives up (client gone): the worker frees the rows at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<JobEvent> events_;
  std::atomic<bool> cancelled_{false};
};

struct JobSpec {
  std::vector<int64_t> prompt;  // non-empty token ids
  generate::SamplingOptions sampling;
  uint64_t seed = 0;
  int64_t max_new_tokens = 16;
  std::vector<int64_t> eos_ids;
  std::vector<std::string> stop_strings;
  int64_t logprobs = -1;         // < 0: none; k >= 0: each token's logprob and the top k
  bool prompt_logprobs = false;  // score the prompt tokens too (echo)
  int64_t index = 0;
  std::shared_ptr<JobChannel> channel;
  std::chrono::steady_clock::time_point submitted{};  // set by submit(): time to first token
};

// Profiling the first `steps` forward passes (kivi-host serve, [serve] profile_steps): the
// worker calls start() before the first pass and finish(steps) after the last, on its own thread,
// where the passes' operators run.
struct StepProfilingHook {
  int64_t steps = 0;
  std::function<void()> start;
  std::function<void(int64_t)> finish;
};

struct SchedulerOptions {
  int64_t max_queue = 64;       // jobs waiting for a row; more are refused
  int64_t prefill_chunk = 512;  // prompt tokens a row feeds per forward pass
  // Tokens a step feeds. With a cache that serves row ranges (the fp and KIVI caches), the
  // prefilling rows share this budget beside the decode tokens, in passes over slot ranges.
  // Otherwise every pass runs all max_batch rows padded to its longest row, and its logits are
  // [max_batch, tokens, vocab]: a pass feeds at most step_tokens / max_batch tokens per row.
  int64_t step_tokens = 8192;
  int64_t context = 0;  // tokens per row (prompt + generated); a row that reaches it stops
  StepProfilingHook profiling;
  // Paged cache: a row starts from the published pages of its prompt's longest known prefix
  // (KVCache::share_prefix) and publishes its own final pages for later requests.
  bool prefix_sharing = true;
  // Row ranges: what a forward pass of its own costs beyond its tokens (a read of every weight),
  // in tokens. Prefilling rows share a pass, padded to its longest chunk, while the padded
  // slots stay within max(2 x their tokens, their tokens + pass_tokens).
  int64_t pass_tokens = 1024;
};

struct SchedulerStats {
  int64_t max_batch = 0, active = 0, queued = 0, completed = 0, steps = 0;
  int64_t passes = 0;  // forward passes (a step runs one or more)
  int64_t cache_tokens = 0, cache_bytes = 0;
  PoolStats pool;           // a paged cache's pages (all 0 otherwise)
  int64_t preemptions = 0;  // rows given back to the pool to be recomputed
  // Since start: prompt tokens of admitted requests (once each, recomputation not counted),
  // generated tokens, and the latencies clients see (seconds).
  int64_t prompt_tokens = 0, generated_tokens = 0;
  Histogram time_to_first_token{ttft_bounds()};
  Histogram time_per_output_token{token_latency_bounds()};
};

class BatchScheduler {
 public:
  // `model` and `text` must outlive the scheduler; the cache is the scheduler's.
  BatchScheduler(CausalLM& model, std::unique_ptr<KVCache> cache, generate::TextStreamFactory text,
                 SchedulerOptions options);
  ~BatchScheduler();  // stop()s

  // Queues the jobs (all or none: a request's sequences are never split). False when the queue
  // lacks room for all of them or the scheduler is stopping.
  bool submit(std::vector<JobSpec> jobs);
  // Why `job` can never run (a paged cache too small for its prompt and max_new_tokens even
  // alone); nullopt when it can. Safe from any thread.
  std::optional<std::string> refusal(const JobSpec& job) const;
  // Ends the worker; jobs still queued or running get a 503 error event.
  void stop();
  SchedulerStats stats() const;
  int64_t max_batch() const { return max_batch_; }

 private:
  struct Row;
  // One forward pass over slots [first, first + counts.size()), `tokens` wide.
  struct Pass {
    int64_t first = 0;
    std::vector<int64_t> counts;  // tokens each of its rows feeds (0: none)
    int64_t tokens = 0;
  };
  void run();
  void step(std::vector<Row>& rows);
  // What each row feeds this step: a chunk of its prompt, its last sampled token, or nothing.
  // With row ranges, prefilling rows share the step's token budget, oldest first.
  std::vector<int64_t> feed_counts(const std::vector<Row>& rows) const;
  // The step's passes: the whole batch in one, or (row ranges) the one-token rows in one pass
  // of the whole batch and the prefilling rows in passes over slot ranges, grouped while the
  // padding stays small.
  std::vector<Pass> plan_passes(const std::vector<int64_t>& counts) const;
  // Runs `pass`, scores prompts, advances the rows' feeds; adds the rows that sample now with
  // their logits [V] (float32, host).
  void feed(std::vector<Row>& rows, const Pass& pass,
            std::vector<std::pair<int64_t, at::Tensor>>& samples);
  void admit(std::vector<Row>& rows);
  // Paged: the pages admitting a sequence takes: its `tokens` to prefill and a page of decoding
  // beyond them (at most the `remaining` tokens it may generate); and the pages free for that.
  int64_t admission_pages(int64_t tokens, int64_t remaining) const;
  int64_t pages_for_admission(const std::vector<Row>& rows) const;
  // Paged with prefix sharing: `job` is one of a request's samples (n > 1) whose prompt a row
  // of the same request is prefilling; it waits to share the pages that row publishes.
  bool waits_for_sibling(const JobSpec& job, const std::vector<Row>& rows) const;
  // Paged: preempts the newest rows until the pass of `counts` fits the free pages.
  void make_room(std::vector<Row>& rows, std::vector<int64_t>& counts);
  // Copies the rows' and the queue's state into stats_ (mutex_ held).
  void publish_locked(const std::vector<Row>& rows);

  CausalLM& model_;
  std::unique_ptr<KVCache> cache_;
  generate::TextStreamFactory text_;
  SchedulerOptions options_;
  int64_t max_batch_;
  bool ranges_ = false;  // the cache serves row ranges (KVCache::serves_row_ranges)
  int64_t chunk_;        // prompt tokens per row and pass
  // Paged cache: the pool's size, fixed at construction (refusal() reads it from other threads).
  int64_t pool_pages_ = 0, page_tokens_ = 0;
  std::list<Row> preempted_;  // the worker's: rows waiting to be recomputed, first out first
  uint64_t admissions_ = 0;   // the worker's: admission order of rows (newest preempted first)
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<JobSpec> queue_;
  bool stopping_ = false;
  SchedulerStats stats_;  // guarded by mutex_; the worker publishes after each step, and when a
                          // row is freed before its last event goes out
  int64_t profiled_ = 0;  // forward passes profiled so far (the worker's)
  std::thread worker_;
};

}  // namespace kivi::serve
