// The server's counters in the Prometheus text format (GET /metrics): what vLLM's and SGLang's
// servers export, for the same dashboards. A Histogram has fixed upper bounds; the scheduler
// observes into them under its mutex.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kivi::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // increasing upper bounds (+Inf is added)
  void observe(double value);
  // "# TYPE name histogram" and its _bucket (cumulative), _sum and _count lines.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

// Bounds in seconds for time to first token and for the time between tokens.
std::vector<double> ttft_bounds();
std::vector<double> token_latency_bounds();

// One sample of a gauge or counter: "# HELP", "# TYPE" and "name value".
std::string render_metric(const std::string& name, const std::string& type, const std::string& help,
                          double value);

}  // namespace kivi::serve
