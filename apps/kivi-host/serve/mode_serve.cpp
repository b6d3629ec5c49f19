// `kivi-host serve`: the [model] behind an OpenAI-compatible HTTP API ([serve] host, port,
// max_batch, ...; docs/server.md). Requests are batched continuously through one cache of the
// configured backend, so a KIVI cache's smaller rows turn into more concurrent sequences.
// Runs until SIGINT or SIGTERM; then running requests get a 503 and the server exits 0.
// [serve] profile_steps = N profiles the first N forward passes (step_profiler.h) into the log.
#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <iomanip>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <thread>

#include "host_context.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/util/device_memory.h"
#include "model_session.h"
#include "serve/api_server.h"
#include "step_profiler.h"

namespace kivi::host {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) {
  g_stop = true;
}

serve::ServedModel served_model(const HostConfig& cfg, const ModelSession& session,
                                int64_t context) {
  serve::ServedModel m;
  m.name = cfg.serve.model_name.empty() ? session.config.folder.filename().string()
                                        : cfg.serve.model_name;
  if (m.name.empty()) m.name = cfg.model.path.filename().string();
  m.tokenizer = session.tokenizer ? &*session.tokenizer : nullptr;
  std::string source = m.tokenizer ? m.tokenizer->chat_template() : "";
  if (!cfg.serve.chat_template.empty()) {
    std::ifstream in(cfg.serve.chat_template);
    check(in.good(), cfg.file.string() + ": [serve] chat_template: cannot open " +
                         cfg.serve.chat_template.string());
    std::ostringstream text;
    text << in.rdbuf();
    source = text.str();
  }
  if (!source.empty()) m.chat.emplace(source);
  if (m.tokenizer)
    m.template_variables = {{"bos_token", m.tokenizer->bos_token()},
                            {"eos_token", m.tokenizer->eos_token()}};
  m.eos_ids = generate_options(cfg, session).eos_ids;  // the model's and the tokenizer's
  m.context = context;
  m.vocab_size = session.config.vocab_size;
  return m;
}

// [cache] memory_budget: `max_batch` slots and the page pool the rest of the budget buys
// (docs/paged-cache.md); without it, `max_batch` rows of their own storage.
CacheGeometry serve_geometry(const HostConfig& cfg, ModelSession& session, int64_t max_batch,
                             int64_t context) {
  if (!cfg.cache_budget.set()) return session.model().cache_geometry(max_batch);
  CacheGeometry g = session.model().cache_geometry(max_batch, context);
  const CacheSpec spec = session.cache_factory->spec(g);
  const std::string where = cfg.file.string() + ": [cache] memory_budget";
  check(spec.bytes_per_page > 0, where + ": the " + session.cache_name + " cache (" +
                                     spec.description +
                                     ") cannot be paged; use the kivi cache with k_bits and "
                                     "v_bits below 16, or remove memory_budget");
  int64_t bytes = cfg.cache_budget.bytes;
  if (cfg.cache_budget.fraction > 0) {
    const int64_t available = available_memory(g.device);
    check(available > 0, where + ": the memory available on " + g.device.str() +
                             " is unknown; give the budget in bytes");
    bytes = static_cast<int64_t>(cfg.cache_budget.fraction * static_cast<double>(available));
  }
  const int64_t slots = max_batch * spec.bytes_per_slot;
  g.pool_pages = (bytes - slots) / spec.bytes_per_page;
  check(g.pool_pages >= 1,
        where + ": " + std::to_string(bytes) + " bytes do not cover the windows of [serve] " +
            "max_batch = " + std::to_string(max_batch) + " slots (" + std::to_string(slots) +
            " bytes) and one page (" + std::to_string(spec.bytes_per_page) +
            " bytes); raise the budget or lower max_batch");
  return g;
}

// One line of the scheduler's counters ([serve] stats_seconds, --verbose): the load, the pages,
// and the token rates since the last line.
std::string stats_line(const serve::SchedulerStats& now, const serve::SchedulerStats& before,
                       double seconds) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << "serve: running " << now.active << ", waiting "
      << now.queued << ", completed " << now.completed;
  if (now.pool.pages > 0) {
    out << ", pages " << now.pool.used << "/" << now.pool.pages << " (shared " << now.pool.shared
        << ")";
    if (now.pool.prefix_queries > 0)
      out << ", prefix hits "
          << 100.0 * static_cast<double>(now.pool.prefix_hits) /
                 static_cast<double>(now.pool.prefix_queries)
          << "%";
    out << ", preemptions " << now.preemptions;
  }
  out << ", prompt " << static_cast<double>(now.prompt_tokens - before.prompt_tokens) / seconds
      << " tok/s, generation "
      << static_cast<double>(now.generated_tokens - before.generated_tokens) / seconds << " tok/s";
  return out.str();
}

}  // namespace

int run_serve_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  const ServeChoice& s = cfg.serve;
  ModelSession session = open_model_session(context, cfg.cache, cfg.attention);
  CausalLM& model = session.model();
  const int64_t ctx = effective_context(context, session, s.context, "[serve] context");
  check(ctx > 0, cfg.file.string() +
                     ": [serve] context: the model declares no max_position_embeddings; set one");

  serve::SchedulerOptions options;
  options.max_queue = s.max_queue;
  options.prefill_chunk = s.prefill_chunk;
  options.step_tokens = s.step_tokens;
  options.context = ctx;
  options.prefix_sharing = s.prefix_sharing;
  std::shared_ptr<StepProfiler> profiler;
  std::mutex log_mutex;
  if (s.profile_steps > 0) {
    profiler = std::make_shared<StepProfiler>(model.options().device);
    options.profiling = {s.profile_steps, [profiler] { profiler->start(); },
                         [&, profiler](int64_t steps) {
                           StepProfile profile = profiler->stop(steps, s.profile_trace);
                           profile.step_name = "forward passes";
                           std::lock_guard lock(log_mutex);
                           print_profile(context.err, profile);
                           if (!s.profile_trace.empty())
                             context.err << "trace: " << s.profile_trace << "\n";
                           context.err << std::flush;
                         }};
  }
  serve::BatchScheduler scheduler(
      model,
      create_cache(session, serve_geometry(cfg, session, s.max_batch, ctx),
                   cfg.cache_budget.set() ? "[cache] memory_budget" : "[serve] max_batch"),
      text_streams(session), options);
  serve::ApiServer api(
      served_model(cfg, session, ctx), scheduler,
      {s.max_n, /*max_sequences=*/s.max_queue, s.max_logprobs, s.default_max_tokens});
  serve::HttpServer server(
      s.host, static_cast<int>(s.port),
      {16 * 1024, static_cast<size_t>(s.max_body_bytes), static_cast<int>(s.max_connections),
       static_cast<int>(s.read_timeout_ms)},
      [&api](const serve::HttpRequest& r, serve::HttpConnection& c) { api.handle(r, c); });

  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  const std::string host = s.host.find(':') != std::string::npos ? "[" + s.host + "]" : s.host;
  context.out << describe(session) << "\nserve: max_batch " << s.max_batch << ", queue "
              << s.max_queue << ", context " << ctx;
  if (const PoolStats pool = scheduler.stats().pool; pool.pages > 0)
    context.out << ", cache pool " << pool.pages << " pages of " << pool.page_tokens
                << " tokens (admission by free pages)";
  context.out << "\nserve: listening on http://" << host << ":" << server.port() << std::endl;
  // --verbose: a line of counters every stats_seconds while the server runs.
  std::atomic<bool> serving{true};
  std::thread reporter;
  if (s.stats_seconds > 0)
    reporter = std::thread([&] {
      serve::SchedulerStats before = scheduler.stats();
      auto last = std::chrono::steady_clock::now();
      while (serving) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const auto now = std::chrono::steady_clock::now();
        if (now - last < std::chrono::seconds(s.stats_seconds)) continue;
        const serve::SchedulerStats stats = scheduler.stats();
        const double seconds = std::chrono::duration<double>(now - last).count();
        std::lock_guard lock(log_mutex);
        context.err << stats_line(stats, before, seconds) << std::endl;
        before = stats;
        last = now;
      }
    });
  server.run(g_stop);
  serving = false;
  if (reporter.joinable()) reporter.join();
  context.out << "serve: stopping" << std::endl;
  scheduler.stop();
  server.drain(5000);
  return 0;
}

}  // namespace kivi::host
