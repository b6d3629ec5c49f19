#include "serve/api_server.h"

#include <chrono>
#include <memory>

#include "serve/api_response.h"

namespace kivi::serve {
namespace {
using nlohmann::json;

void send_json(HttpConnection& conn, int status, const json& body) {
  conn.send(status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace));
}

void send_error(HttpConnection& conn, const ApiError& e) {
  conn.send(e.status, "application/json", json_error_body(e.status, e.message, e.type));
}

}  // namespace

void ApiServer::handle(const HttpRequest& request, HttpConnection& conn) {
  const std::string& path = request.path;
  const bool get = request.method == "GET", post = request.method == "POST";
  try {
    if (path == "/metrics") {
      if (!get) throw ApiError{405, path + " takes GET, not " + request.method};
      conn.send(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text());
    } else if (path == "/health" || path == "/v1/models") {
      if (!get) throw ApiError{405, path + " takes GET, not " + request.method};
      if (path == "/health") {
        const SchedulerStats s = scheduler_.stats();
        send_json(conn, 200,
                  {{"status", "ok"},
                   {"model", model_.name},
                   {"max_batch", s.max_batch},
                   {"active", s.active},
                   {"queued", s.queued},
                   {"completed", s.completed},
                   {"steps", s.steps},
                   {"cache_tokens", s.cache_tokens},
                   {"cache_bytes", s.cache_bytes},
                   {"cache_pages", s.pool.pages},
                   {"cache_pages_used", s.pool.used},
                   {"cache_pages_peak", s.pool.peak_used},
                   {"cache_pages_shared", s.pool.shared},
                   {"prefix_hit_rate", s.pool.prefix_queries > 0
                                           ? static_cast<double>(s.pool.prefix_hits) /
                                                 static_cast<double>(s.pool.prefix_queries)
                                           : 0.0},
                   {"preemptions", s.preemptions}});
      } else {
        const json entry = {{"id", model_.name},
                            {"object", "model"},
                            {"created", 0},
                            {"owned_by", "kivi"},
                            {"max_model_len", model_.context}};
        send_json(conn, 200, {{"object", "list"}, {"data", json::array({entry})}});
      }
    } else if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!post) throw ApiError{405, path + " takes POST, not " + request.method};
      completions(request, conn, path == "/v1/chat/completions");
    } else {
      throw ApiError{404,
                     "no endpoint " + path +
                         " (there are /v1/completions, /v1/chat/completions, "
                         "/v1/models, /health and /metrics)",
                     "not_found"};
    }
  } catch (const ApiError& e) {
    if (!conn.responded()) send_error(conn, e);
  }
}

std::string ApiServer::metrics_text() const {
  const SchedulerStats s = scheduler_.stats();
  const PoolStats& pool = s.pool;
  // Bytes a stored token costs: a page's bytes over its tokens when paged, else what the rows
  // hold over what they store.
  const double per_token =
      pool.pages > 0 ? static_cast<double>(pool.page_bytes) / static_cast<double>(pool.page_tokens)
      : s.cache_tokens > 0
          ? static_cast<double>(s.cache_bytes) / static_cast<double>(s.cache_tokens)
          : 0.0;
  std::string out;
  auto gauge = [&](const std::string& name, const std::string& help, double value) {
    out += render_metric("kivi:" + name, "gauge", help, value);
  };
  auto counter = [&](const std::string& name, const std::string& help, double value) {
    out += render_metric("kivi:" + name, "counter", help, value);
  };
  gauge("num_requests_running", "Sequences holding a cache row.", static_cast<double>(s.active));
  gauge("num_requests_waiting", "Sequences waiting for a row or for pages (preempted included).",
        static_cast<double>(s.queued));
  gauge("max_batch", "Cache rows.", static_cast<double>(s.max_batch));
  gauge("cache_tokens", "Tokens stored in the cache.", static_cast<double>(s.cache_tokens));
  gauge("cache_bytes", "Bytes the cache holds.", static_cast<double>(s.cache_bytes));
  gauge("cache_bytes_per_token",
        "Bytes one stored token costs (a page's bytes per token when paged).", per_token);
  gauge("cache_pages", "Pages of the paged cache's pool (0: not paged).",
        static_cast<double>(pool.pages));
  gauge("cache_pages_used", "Pages with an owner.", static_cast<double>(pool.used));
  gauge("cache_pages_peak", "The most pages with an owner at once since the server started.",
        static_cast<double>(pool.peak_used));
  gauge("cache_pages_free", "Pages free for admission.", static_cast<double>(pool.free()));
  gauge("cache_pages_shared", "Pages held by more than one sequence.",
        static_cast<double>(pool.shared));
  counter("num_preemptions_total", "Sequences preempted to free pages (then recomputed).",
          static_cast<double>(s.preemptions));
  counter("request_success_total", "Requests completed.", static_cast<double>(s.completed));
  counter("prompt_tokens_total", "Prompt tokens of admitted sequences.",
          static_cast<double>(s.prompt_tokens));
  counter("generation_tokens_total", "Tokens generated.", static_cast<double>(s.generated_tokens));
  counter("forward_passes_total", "Forward passes run.", static_cast<double>(s.passes));
  counter("prefix_cache_queries_total", "Prompt tokens looked up in the published pages.",
          static_cast<double>(pool.prefix_queries * pool.page_tokens));
  counter("prefix_cache_hits_total", "Prompt tokens found there (their prefill skipped).",
          static_cast<double>(pool.prefix_hits * pool.page_tokens));
  out += s.time_to_first_token.render("kivi:time_to_first_token_seconds",
                                      "From submission to the first generated token.");
  out += s.time_per_output_token.render("kivi:time_per_output_token_seconds",
                                        "Between consecutive tokens of a sequence.");
  return out;
}

void ApiServer::completions(const HttpRequest& http, HttpConnection& conn, bool chat) {
  const CompletionRequest request = parse_completion_body(http.body, model_, limits_, chat);

  // One job per prompt and sample; sequence i of a prompt samples with seed + i.
  auto channel = std::make_shared<JobChannel>();
  std::vector<JobSpec> jobs;
  for (size_t p = 0; p < request.prompts.size(); ++p)
    for (int64_t i = 0; i < request.n; ++i) {
      JobSpec job;
      job.prompt = request.prompts[p];
      job.sampling = request.sampling;
      job.seed = request.seed + static_cast<uint64_t>(i);
      job.max_new_tokens = request.max_tokens;
      if (!request.ignore_eos) job.eos_ids = model_.eos_ids;
      job.stop_strings = request.stop;
      job.logprobs = request.logprobs;
      job.prompt_logprobs = request.echo && request.logprobs >= 0;
      job.index = static_cast<int64_t>(p) * request.n + i;
      job.channel = channel;
      jobs.push_back(std::move(job));
    }
  const size_t total = jobs.size();
  for (const JobSpec& job : jobs)
    if (std::optional<std::string> why = scheduler_.refusal(job)) throw ApiError{400, *why};
  if (!scheduler_.submit(std::move(jobs)))
    throw ApiError{503, "the server is busy: its queue is full; retry later", "server_overloaded"};

  const ResponseFormat format(model_, request);
  std::vector<ChoiceResult> results(total);
  if (request.stream) {
    bool ok = conn.begin_stream(200, "text/event-stream");
    if (request.chat || request.echo)
      for (size_t i = 0; i < total && ok; ++i)
        ok = conn.write(ResponseFormat::sse(format.opening(static_cast<int64_t>(i))));
    if (!ok) return channel->cancel();
  }
  // Worker events until every choice is done; a client that left cancels its rows.
  // The client is looked at every 100 ms whether or not events come: a non-streamed answer
  // writes nothing until the end, and while tokens flow pop() never comes back empty.
  auto next_look = std::chrono::steady_clock::now();
  for (size_t done = 0; done < total;) {
    std::vector<JobEvent> events = channel->pop(100);
    if (std::chrono::steady_clock::now() >= next_look) {
      next_look = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
      if (conn.peer_closed()) return channel->cancel();
    }
    for (JobEvent& e : events) {
      ChoiceResult& c = results[static_cast<size_t>(e.index)];
      bool ok = true;
      switch (e.kind) {
        case JobEvent::Kind::kError:
          channel->cancel();
          if (request.stream)
            conn.write(ResponseFormat::sse(
                json::parse(json_error_body(e.status, e.text, "server_error"))));
          else
            send_error(conn, ApiError{e.status, e.text, "server_error"});
          return;
        case JobEvent::Kind::kPromptScores:
          c.prompt_scores = std::move(e.scores);
          break;
        case JobEvent::Kind::kToken:
          if (request.stream && (!e.text.empty() || e.score))
            ok = conn.write(ResponseFormat::sse(format.token(e.index, e, c.text.size())));
          c.text += e.text;
          if (e.token >= 0) c.tokens.push_back(e.token);
          if (e.score) c.scores.push_back(*e.score);
          break;
        case JobEvent::Kind::kDone:
          c.finish_reason = e.finish_reason;
          c.completion_tokens = e.completion_tokens;
          c.done = true;
          ++done;
          if (request.stream)
            ok = conn.write(ResponseFormat::sse(format.closing(e.index, e.finish_reason)));
          break;
      }
      if (!ok) return channel->cancel();
    }
  }
  if (!request.stream) return send_json(conn, 200, format.full(results));
  if (request.include_usage) conn.write(ResponseFormat::sse(format.usage_chunk(results)));
  conn.write("data: [DONE]\n\n");
}

}  // namespace kivi::serve
