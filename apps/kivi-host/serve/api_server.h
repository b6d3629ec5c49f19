// The OpenAI-compatible endpoints over the HTTP server and the batch scheduler:
//   GET  /health               liveness and the scheduler's load (rows busy, queued, cache bytes)
//   GET  /metrics              the same and more in the Prometheus text format
//   GET  /v1/models            the one model served
//   POST /v1/completions       prompt(s) as text or token ids; echo + logprobs score the prompt
//   POST /v1/chat/completions  messages rendered with the chat template
// Streaming answers are server-sent events ("data: {...}\n\n", then "data: [DONE]").
#pragma once

#include "serve/api_request.h"
#include "serve/batch_scheduler.h"
#include "serve/http_server.h"

namespace kivi::serve {

class ApiServer {
 public:
  ApiServer(ServedModel model, BatchScheduler& scheduler, ApiLimits limits)
      : model_(std::move(model)), scheduler_(scheduler), limits_(limits) {}

  // The HttpHandler: routes one request and writes its response.
  void handle(const HttpRequest& request, HttpConnection& conn);

 private:
  void completions(const HttpRequest& request, HttpConnection& conn, bool chat);
  // GET /metrics: the scheduler's counters in the Prometheus text format (metrics.h).
  std::string metrics_text() const;
  ServedModel model_;
  BatchScheduler& scheduler_;
  ApiLimits limits_;
};

}  // namespace kivi::serve
