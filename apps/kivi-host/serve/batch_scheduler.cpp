#include "serve/batch_scheduler.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "kivi/cache/cache_rows.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/text_stops.h"
#include "kivi/model/causal_lm.h"
#include "kivi/util/activity.h"
#include "kivi/util/error.h"
#include "kivi/util/failure.h"

namespace kivi::serve {

void JobChannel::push(JobEvent event) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

std::vector<JobEvent> JobChannel::pop(int timeout_ms) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty(); });
  std::vector<JobEvent> out(std::make_move_iterator(events_.begin()),
                            std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

// One cache row and the request sequence it serves.
struct BatchScheduler::Row {
  std::optional<JobSpec> job;
  // Tokens to prefill: the prompt, or after a preemption the prompt and every generated token
  // (the last one sampled included: the pass that feeds it samples the next).
  std::vector<int64_t> feed;
  bool resumed = false;   // refeeding after a preemption: the prompt is not scored again
  uint64_t admitted = 0;  // admission order
  size_t fed = 0;         // tokens of `feed` already in the cache
  std::optional<generate::Sampler> sampler;
  std::unique_ptr<generate::TextStream> stream;
  std::optional<generate::TextStops> stops;
  std::vector<int64_t> history;  // prompt + generated, for the repetition penalty
  std::vector<TokenScore> prompt_scores;
  int64_t generated = 0;
  int64_t next = 0;  // the token this row feeds at the next decode step
  std::chrono::steady_clock::time_point last_token{};  // when its last token was sampled

  bool busy() const { return job.has_value(); }
  bool prefilling() const { return fed < feed.size(); }
  void push(JobEvent e) const {
    e.index = job->index;
    job->channel->push(std::move(e));
  }
};

namespace {

template <typename Fill>
JobEvent event_of(JobEvent::Kind kind, Fill fill) {
  JobEvent e;
  e.kind = kind;
  fill(e);
  return e;
}

JobEvent error_event(const std::string& message, int status) {
  return event_of(JobEvent::Kind::kError, [&](JobEvent& e) {
    e.text = message;
    e.status = status;
  });
}

// The log-probability of `token` and the `k` most likely tokens, from one row of log-probs.
TokenScore score_of(const at::Tensor& logprobs, int64_t token, int64_t k) {
  TokenScore s;
  s.token = token;
  s.logprob = logprobs[token].item<double>();
  if (k > 0) {
    const auto [values, ids] = at::topk(logprobs, std::min<int64_t>(k, logprobs.size(0)));
    const at::Tensor v = values.to(at::kDouble).contiguous(), i = ids.contiguous();
    for (int64_t j = 0; j < v.size(0); ++j)
      s.top.emplace_back(i.data_ptr<int64_t>()[j], v.data_ptr<double>()[j]);
  }
  return s;
}

}  // namespace

BatchScheduler::BatchScheduler(CausalLM& model, std::unique_ptr<KVCache> cache,
                               generate::TextStreamFactory text, SchedulerOptions options)
    : model_(model),
      cache_(std::move(cache)),
      text_(std::move(text)),
      options_(options),
      max_batch_(cache_->geometry().max_batch) {
  check(max_batch_ >= 1, "serve: the cache needs at least one row");
  check(options_.prefill_chunk >= 1, "serve: prefill_chunk must be >= 1");
  const PoolStats pool = cache_->pool_stats();
  pool_pages_ = pool.pages;
  page_tokens_ = pool.page_tokens;
  stats_.pool = pool;
  check(options_.step_tokens >= 1, "serve: step_tokens must be >= 1");
  // A cache that serves row ranges runs prefilling rows in passes over their slots
  // (plan_passes), so a chunk is bounded by the step's tokens; otherwise every pass is the whole
  // batch wide.
  ranges_ = cache_->serves_row_ranges();
  chunk_ = std::max<int64_t>(
      1, std::min(options_.prefill_chunk,
                  ranges_ ? options_.step_tokens : options_.step_tokens / max_batch_));
  stats_.max_batch = max_batch_;
  worker_ = std::thread([this] { run(); });
}

BatchScheduler::~BatchScheduler() {
  stop();
}

bool BatchScheduler::submit(std::vector<JobSpec> jobs) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || static_cast<int64_t>(queue_.size() + jobs.size()) > options_.max_queue)
      return false;
    const auto now = std::chrono::steady_clock::now();
    for (JobSpec& j : jobs) {
      j.submitted = now;
      queue_.push_back(std::move(j));
    }
    stats_.queued = static_cast<int64_t>(queue_.size());
  }
  wake_.notify_all();
  return true;
}

std::optional<std::string> BatchScheduler::refusal(const JobSpec& job) const {
  if (pool_pages_ == 0) return std::nullopt;
  const auto prompt = static_cast<int64_t>(job.prompt.size());
  int64_t tokens = prompt + job.max_new_tokens;
  if (options_.context > 0) tokens = std::min(tokens, options_.context);
  const int64_t pages = cache_->pages_for(tokens);
  if (pages <= pool_pages_) return std::nullopt;
  return "the request needs " + std::to_string(pages) + " cache pages of " +
         std::to_string(page_tokens_) + " tokens for " + std::to_string(tokens) + " tokens (" +
         std::to_string(prompt) + " of prompt and up to " + std::to_string(tokens - prompt) +
         " generated) but the whole cache holds " + std::to_string(pool_pages_) +
         " ([cache] memory_budget); shorten the prompt or max_tokens";
}

int64_t BatchScheduler::admission_pages(int64_t tokens, int64_t remaining) const {
  return cache_->pages_for(tokens + std::clamp<int64_t>(remaining, 0, page_tokens_));
}

int64_t BatchScheduler::pages_for_admission(const std::vector<Row>& rows) const {
  // Free pages less what rows still prefilling will take to finish their prompts.
  int64_t free = cache_->pool_stats().free();
  for (size_t b = 0; b < rows.size(); ++b)
    if (rows[b].busy() && rows[b].prefilling())
      free -= cache_->pages_for(static_cast<int64_t>(rows[b].feed.size())) -
              cache_->pages_for(cache_->length(static_cast<int64_t>(b)));
  return free;
}

void BatchScheduler::make_room(std::vector<Row>& rows, std::vector<int64_t>& counts) {
  for (;;) {
    int64_t needed = 0, running = 0;
    for (size_t b = 0; b < rows.size(); ++b) {
      if (counts[b] == 0) continue;
      const int64_t length = cache_->length(static_cast<int64_t>(b));
      needed += cache_->pages_for(length + counts[b]) - cache_->pages_for(length);
      ++running;
    }
    // One row alone always fits (refusal() turned away what would not), so a pass with one row
    // left goes ahead.
    if (needed <= cache_->pool_stats().free() || running <= 1) return;
    size_t newest = rows.size();
    for (size_t b = 0; b < rows.size(); ++b)
      if (counts[b] > 0 && (newest == rows.size() || rows[b].admitted > rows[newest].admitted))
        newest = b;
    Row& row = rows[newest];
    cache_->truncate(0, static_cast<int64_t>(newest));
    if (row.prefilling() && !row.resumed) {
      row.prompt_scores.clear();  // its prompt starts over
    } else {
      row.feed = row.history;  // prompt + generated, the pending token last
      row.resumed = true;
    }
    row.fed = 0;
    counts[newest] = 0;
    preempted_.push_front(std::exchange(row, Row{}));
    std::lock_guard lock(mutex_);
    ++stats_.preemptions;
  }
}

void BatchScheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

SchedulerStats BatchScheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

bool BatchScheduler::waits_for_sibling(const JobSpec& job, const std::vector<Row>& rows) const {
  if (pool_pages_ == 0 || !options_.prefix_sharing || job.prompt_logprobs) return false;
  // Worth waiting for only if the sibling's prompt leaves whole pages to share.
  if (cache_->pages_for(static_cast<int64_t>(job.prompt.size())) == 0) return false;
  return std::any_of(rows.begin(), rows.end(), [&](const Row& r) {
    return r.busy() && r.prefilling() && !r.resumed && r.job->channel == job.channel &&
           r.feed == job.prompt;
  });
}

void BatchScheduler::admit(std::vector<Row>& rows) {
  std::lock_guard lock(mutex_);
  std::erase_if(preempted_, [](const Row& r) { return r.job->channel->cancelled(); });
  // Paged: admission in order (preempted rows first, then the queue) while pages suffice; the
  // first that does not fit waits, and nothing overtakes it, so no request starves.
  const bool paged = pool_pages_ > 0;
  int64_t free = paged ? pages_for_admission(rows) : 0;
  // A row taken from the prefix's published pages skips that part of its feed (not a prompt
  // that is scored: the shared tokens would have no scores).
  auto share = [&](Row& row, size_t b) {
    if (!paged || !options_.prefix_sharing || (row.job->prompt_logprobs && !row.resumed)) return;
    row.fed = static_cast<size_t>(cache_->share_prefix(static_cast<int64_t>(b), row.feed));
  };
  for (size_t b = 0; b < rows.size(); ++b) {
    Row& row = rows[b];
    if (row.busy()) continue;
    if (!preempted_.empty()) {
      const Row& waiting = preempted_.front();
      const int64_t pages = paged ? admission_pages(static_cast<int64_t>(waiting.feed.size()),
                                                    waiting.job->max_new_tokens - waiting.generated)
                                  : 0;
      if (pages > free) break;
      row = std::move(preempted_.front());  // keeps its admission order: older than the rest
      preempted_.pop_front();
      free -= pages;
      share(row, b);
      continue;
    }
    while (!queue_.empty() && queue_.front().channel->cancelled()) queue_.pop_front();
    // The first job that is not waiting for a sibling (the same prompt, prefilling in a row: it
    // will publish the pages this one then shares, so that `n` samples prefill the prompt once).
    auto next = queue_.begin();
    while (next != queue_.end() && waits_for_sibling(*next, rows)) ++next;
    if (next == queue_.end()) break;
    const int64_t pages =
        paged ? admission_pages(static_cast<int64_t>(next->prompt.size()), next->max_new_tokens)
              : 0;
    if (pages > free) break;
    free -= pages;
    row = Row{};
    row.job = std::move(*next);
    queue_.erase(next);
    row.feed = row.job->prompt;
    row.admitted = ++admissions_;
    stats_.prompt_tokens += static_cast<int64_t>(row.feed.size());
    row.sampler.emplace(row.job->sampling, row.job->seed);
    if (text_) row.stream = text_();
    row.stops.emplace(row.job->stop_strings);
    row.history = row.job->prompt;
    share(row, b);
  }
  publish_locked(rows);
}

void BatchScheduler::publish_locked(const std::vector<Row>& rows) {
  stats_.active = std::count_if(rows.begin(), rows.end(), [](const Row& r) { return r.busy(); });
  stats_.queued = static_cast<int64_t>(queue_.size() + preempted_.size());
  stats_.pool = cache_->pool_stats();
  const MemoryStats m = cache_->memory();
  stats_.cache_tokens = m.tokens;
  stats_.cache_bytes = m.total();
}

void BatchScheduler::run() {
  std::vector<Row> rows(static_cast<size_t>(max_batch_));
  auto release = [&](Row& row, size_t b) {
    row = Row{};
    cache_->truncate(0, static_cast<int64_t>(b));
  };
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      const bool busy =
          std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.busy(); });
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !preempted_.empty() || busy; });
      if (stopping_) break;
    }
    for (size_t b = 0; b < rows.size(); ++b)
      if (rows[b].busy() && rows[b].job->channel->cancelled()) release(rows[b], b);
    admit(rows);
    StepProfilingHook& profiling = options_.profiling;
    if (profiling.steps > 0 && profiled_ == 0 && profiling.start) profiling.start();
    try {
      step(rows);
    } catch (const std::exception& e) {
      // A failed forward pass (out of memory, a bug) fails the batch it ran, not the server.
      // The rows are freed and published before the errors go out (see finish() in step()).
      const std::string failure = describe_failure(e);
      std::vector<Row> failed;
      for (Row& row : rows)
        if (row.busy()) failed.push_back(std::exchange(row, Row{}));
      cache_->reset();
      {
        std::lock_guard lock(mutex_);
        publish_locked(rows);
      }
      for (const Row& row : failed) row.push(error_event("generation failed: " + failure, 500));
    }
    if (profiling.steps > 0 && ++profiled_ == profiling.steps) {
      if (profiling.finish) profiling.finish(profiling.steps);
      profiling.steps = 0;  // once
    }
    std::lock_guard lock(mutex_);
    publish_locked(rows);
  }
  // Shutting down: whatever is still running or queued gets an answer.
  std::lock_guard lock(mutex_);
  const JobEvent bye = error_event("the server is shutting down", 503);
  for (Row& row : rows)
    if (row.busy()) row.push(bye);
  for (Row& row : preempted_) row.push(bye);
  preempted_.clear();
  for (JobSpec& job : queue_) {
    JobEvent e = bye;
    e.index = job.index;
    job.channel->push(std::move(e));
  }
  queue_.clear();
}

std::vector<int64_t> BatchScheduler::feed_counts(const std::vector<Row>& rows) const {
  std::vector<int64_t> counts(rows.size(), 0);
  std::vector<size_t> prefilling;
  int64_t decoding = 0;
  for (size_t b = 0; b < rows.size(); ++b) {
    if (!rows[b].busy()) continue;
    if (rows[b].prefilling()) {
      prefilling.push_back(b);
    } else {
      counts[b] = 1;
      ++decoding;
    }
  }
  auto remaining = [&](size_t b) {
    return static_cast<int64_t>(rows[b].feed.size() - rows[b].fed);
  };
  if (!ranges_) {  // every row a chunk of the one pass
    for (size_t b : prefilling) counts[b] = std::min(chunk_, remaining(b));
    return counts;
  }
  // Oldest first, within the step's token budget (the decode tokens come first); the oldest
  // prefilling row always advances.
  std::sort(prefilling.begin(), prefilling.end(),
            [&](size_t x, size_t y) { return rows[x].admitted < rows[y].admitted; });
  int64_t budget = std::max<int64_t>(options_.step_tokens - decoding, 1);
  for (size_t b : prefilling) {
    if (budget <= 0) break;
    counts[b] = std::min({chunk_, remaining(b), budget});
    budget -= counts[b];
  }
  return counts;
}

std::vector<BatchScheduler::Pass> BatchScheduler::plan_passes(
    const std::vector<int64_t>& counts) const {
  const auto batch = static_cast<int64_t>(counts.size());
  std::vector<Pass> passes;
  const int64_t most = *std::max_element(counts.begin(), counts.end());
  if (most == 0) return passes;
  if (!ranges_) return {Pass{0, counts, most}};
  // The one-token rows (decode steps, a prompt's last token) together, as one pass of the whole
  // batch: what CUDA graphs capture.
  std::vector<int64_t> ones(counts.size(), 0);
  for (int64_t b = 0; b < batch; ++b) ones[b] = counts[b] == 1 ? 1 : 0;
  if (std::find(ones.begin(), ones.end(), 1) != ones.end()) passes.push_back(Pass{0, ones, 1});
  // The prefilling rows in slot order, grouped into one pass over the slots from a group's first
  // row to its last while the padding stays small: each row of a pass is padded to its longest
  // chunk (rows between that feed nothing in it are padding too), and a pass of its own costs a
  // read of every weight, about pass_tokens tokens of work on a GPU. Many short prompts then
  // share a pass; a long prompt's chunk runs alone.
  int64_t first = -1, last = -1, tokens = 0, useful = 0;
  auto close_group = [&] {
    if (first < 0) return;
    std::vector<int64_t> group(counts.begin() + first, counts.begin() + last + 1);
    for (int64_t& c : group) c = c > 1 ? c : 0;  // the one-token rows are in their own pass
    passes.push_back(Pass{first, std::move(group), tokens});
  };
  for (int64_t b = 0; b < batch; ++b) {
    if (counts[b] <= 1) continue;
    if (first >= 0) {
      const int64_t wider = std::max(tokens, counts[b]), more = useful + counts[b];
      if ((b - first + 1) * wider <= std::max(2 * more, more + options_.pass_tokens)) {
        last = b;
        tokens = wider;
        useful = more;
        continue;
      }
      close_group();
    }
    first = last = b;
    tokens = useful = counts[b];
  }
  close_group();
  return passes;
}

void BatchScheduler::feed(std::vector<Row>& rows, const Pass& pass,
                          std::vector<std::pair<int64_t, at::Tensor>>& samples) {
  const auto n = static_cast<int64_t>(pass.counts.size());
  const int64_t tokens = pass.tokens;
  at::Tensor ids = at::zeros({n, tokens}, at::kLong);
  at::Tensor positions = at::zeros({n, tokens}, at::kLong);
  auto id_at = ids.accessor<int64_t, 2>();
  auto pos_at = positions.accessor<int64_t, 2>();
  for (int64_t r = 0; r < n; ++r) {
    const Row& row = rows[pass.first + r];
    const int64_t start = cache_->length(pass.first + r);
    for (int64_t t = 0; t < tokens; ++t) pos_at[r][t] = start + t;
    for (int64_t t = 0; t < pass.counts[r]; ++t)
      id_at[r][t] = row.prefilling() ? row.feed[row.fed + t] : row.next;
  }
  const at::Device device = model_.options().device;
  // Every position's logits only when a prefilling row scores its prompt (echo, prompt
  // logprobs); otherwise each row's last, the one it samples from: [B, T, V] float32 of a
  // 24 x 341-token prefill pass of Llama 3 is 4.2 GB, and the lm_head's work on all of them.
  bool every_position = false;
  for (int64_t r = 0; r < n; ++r) {
    const Row& row = rows[pass.first + r];
    every_position = every_position || (pass.counts[r] > 0 && row.prefilling() &&
                                        row.job->prompt_logprobs && !row.resumed);
  }
  const ActivityScope forward(
      [n, tokens] {
        return "a forward pass of " + std::to_string(n) + " rows x " + std::to_string(tokens) +
               " tokens";
      },
      "[serve] max_batch, prefill_chunk or step_tokens");
  // The pass's rows alone when they are not the whole batch.
  std::optional<CacheRows> range;
  if (n != max_batch_) range.emplace(*cache_, pass.first, n);
  KVCache& cache = range ? static_cast<KVCache&>(*range) : *cache_;
  // [n, T, V] when every_position, else [n, V] (row r's position counts[r] - 1)
  const at::Tensor logits =
      every_position
          ? model_.forward(ids.to(device), positions.to(device), pass.counts, cache)
          : model_.forward_last(ids.to(device), positions.to(device), pass.counts, cache);

  // Prompt scores (echo), and which rows sample a token now (from their last fed position).
  std::vector<int64_t> sample_rows, sample_at;
  for (int64_t r = 0; r < n; ++r) {
    Row& row = rows[pass.first + r];
    const int64_t count = pass.counts[r];
    if (count == 0) continue;
    if (row.prefilling()) {
      const auto& prompt = row.job->prompt;
      if (row.job->prompt_logprobs && !row.resumed) {
        // Position t predicts prompt token fed + t + 1 (the last prompt position predicts the
        // first new token, which is scored when it is sampled).
        const int64_t scored =
            std::min<int64_t>(count, static_cast<int64_t>(prompt.size() - row.fed) - 1);
        if (scored > 0) {
          const at::Tensor lp =
              at::log_softmax(logits[r].narrow(0, 0, scored).to(at::kFloat), -1).to(at::kCPU);
          for (int64_t t = 0; t < scored; ++t)
            row.prompt_scores.push_back(
                score_of(lp[t], prompt[row.fed + t + 1], std::max<int64_t>(row.job->logprobs, 0)));
        }
      }
      row.fed += count;
      if (row.prefilling()) continue;
      if (row.job->prompt_logprobs && !row.resumed)
        row.push(event_of(JobEvent::Kind::kPromptScores,
                          [&](JobEvent& e) { e.scores = std::move(row.prompt_scores); }));
    }
    sample_rows.push_back(r);
    sample_at.push_back(count - 1);
  }
  if (sample_rows.empty()) return;
  const at::Tensor picked_rows = at::tensor(sample_rows, at::kLong).to(logits.device());
  const at::Tensor chosen =
      (every_position
           ? logits.index({picked_rows, at::tensor(sample_at, at::kLong).to(logits.device())})
           : logits.index({picked_rows}))
          .to(at::kCPU, at::kFloat);  // [R, V]
  for (size_t i = 0; i < sample_rows.size(); ++i)
    samples.emplace_back(pass.first + sample_rows[i], chosen[static_cast<int64_t>(i)]);
}

void BatchScheduler::step(std::vector<Row>& rows) {
  c10::InferenceMode guard;
  // What each row feeds: a chunk of its prompt, its last sampled token, or nothing.
  std::vector<int64_t> counts = feed_counts(rows);
  if (pool_pages_ > 0) make_room(rows, counts);
  const std::vector<Pass> passes = plan_passes(counts);
  if (passes.empty()) return;
  std::vector<std::pair<int64_t, at::Tensor>> samples;  // row, its logits [V] float32 on the host
  for (const Pass& pass : passes) feed(rows, pass, samples);
  // What the rows hold is a prefix of their history (prompt, then generated tokens).
  if (pool_pages_ > 0 && options_.prefix_sharing)
    for (int64_t b = 0; b < max_batch_; ++b)
      if (rows[b].busy()) cache_->publish(b, rows[b].history);

  for (const auto& [b, row_logits] : samples) {
    Row& row = rows[b];
    const JobSpec& job = *row.job;
    // The row is freed and /health's counts updated before kDone goes out: a client that has
    // its whole response must find the server idle (active 0) when it asks next.
    auto finish = [&](const std::string& reason, bool flush) {
      if (flush && row.stream) {
        const std::string rest = row.stops->finish(row.stream->flush());
        if (!rest.empty())
          row.push(event_of(JobEvent::Kind::kToken, [&](JobEvent& e) { e.text = rest; }));
      }
      JobEvent done = event_of(JobEvent::Kind::kDone, [&](JobEvent& e) {
        e.finish_reason = reason;
        e.prompt_tokens = static_cast<int64_t>(job.prompt.size());
        e.completion_tokens = row.generated;
      });
      const Row finished = std::exchange(row, Row{});
      cache_->truncate(0, b);
      {
        std::lock_guard lock(mutex_);
        ++stats_.completed;
        publish_locked(rows);
      }
      finished.push(std::move(done));
    };
    if (row.generated >= job.max_new_tokens) {  // max_tokens 0: the prompt was only scored
      finish("length", true);
      continue;
    }
    const int64_t token = row.sampler->next(row_logits, row.history);
    {
      const auto now = std::chrono::steady_clock::now();
      const auto since = row.generated == 0 ? job.submitted : row.last_token;
      row.last_token = now;
      std::lock_guard lock(mutex_);
      (row.generated == 0 ? stats_.time_to_first_token : stats_.time_per_output_token)
          .observe(std::chrono::duration<double>(now - since).count());
      ++stats_.generated_tokens;
    }
    JobEvent event = event_of(JobEvent::Kind::kToken, [&](JobEvent& e) { e.token = token; });
    if (job.logprobs >= 0)
      event.score = score_of(at::log_softmax(row_logits, -1), token, job.logprobs);
    row.history.push_back(token);
    ++row.generated;
    bool stopped = false;
    if (row.stream) std::tie(event.text, stopped) = row.stops->add(row.stream->step(token));
    row.push(std::move(event));
    const bool eos = std::find(job.eos_ids.begin(), job.eos_ids.end(), token) != job.eos_ids.end();
    if (stopped)
      finish("stop", false);
    else if (eos)
      finish("stop", true);
    else if (row.generated >= job.max_new_tokens)
      finish("length", true);
    else if (options_.context > 0 && cache_->length(b) >= options_.context)
      finish("length", true);
    else
      row.next = token;
  }
  std::lock_guard lock(mutex_);
  ++stats_.steps;
  stats_.passes += static_cast<int64_t>(passes.size());
}

}  // namespace kivi::serve
