// The one table of modes: known_modes() (validation, --help), each mode's help (what it does,
// the run.toml tables it reads) and dispatch all read it.
#include <functional>
#include <map>
#include <ostream>

#include "host_context.h"
#include "rank_launch.h"

namespace kivi::host {
namespace {

using ModeFn = std::function<int(HostContext&)>;

struct Mode {
  ModeFn run;
  const char* summary;
  std::vector<std::string> tables;  // run.toml tables it reads, besides mode and [plugins]
};

const std::map<std::string, Mode>& mode_table() {
  static const std::map<std::string, Mode> modes = {
      {"bench",
       {run_bench_mode,
        "prefill and decode tokens/s on random tokens",
        {"model", "cache", "attention", "bench"}}},
      {"chat",
       {run_chat_mode,
        "an interactive chat with the model's chat template",
        {"model", "cache", "attention", "generate"}}},
      {"check",
       {run_check_mode,
        "validates run.toml and resolves its plugins (no model is loaded)",
        {"cache", "attention"}}},
      {"compare",
       {run_compare_mode,
        "variants (cache + attention) on the same text and prompts; the model loads once",
        {"model", "compare", "perplexity", "generate", "output"}}},
      {"memory",
       {run_memory_mode,
        "a cache's memory table: the write-up's accounting beside the honest one",
        {"cache", "memory"}}},
      {"generate",
       {run_generate_mode,
        "continuations of prompts",
        {"model", "cache", "attention", "generate"}}},
      {"perplexity",
       {run_perplexity_mode,
        "windowed perplexity of a text file",
        {"model", "cache", "attention", "perplexity"}}},
      {"plugins", {run_plugins_mode, "kind, name, version and file of each loaded plugin", {}}},
      {"serve",
       {run_serve_mode,
        "an OpenAI-compatible HTTP server (docs/server.md)",
        {"model", "cache", "attention", "serve"}}},
      {"tokenize",
       {run_tokenize_mode, "encode/decode text and render a chat prompt", {"tokenize"}}},
  };
  return modes;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

}  // namespace

const std::vector<std::string>& known_modes() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [name, mode] : mode_table()) out.push_back(name);
    return out;
  }();
  return names;
}

void print_mode_help(std::ostream& out, const std::string& name) {
  const Mode& mode = mode_table().at(name);
  out << "kivi-host " << name << ": " << mode.summary << "\n\nusage: kivi-host " << name
      << " --config run.toml [--set section.key=value]... [--plugin-dir DIR]...\n\nrun.toml tables "
         "it reads:\n";
  for (const std::string& table : mode.tables) {
    if (table == "cache" || table == "attention") {
      out << "  [" << table << "]  backend = " << (table == "cache" ? "a kv_cache" : "an attention")
          << " plugin (kivi-host plugins lists them), and that plugin's options"
          << (table == "attention" ? "; default: the attention the cache names" : "") << "\n";
    } else if (table == "compare") {
      out << "  [[compare.variants]]  name, cache = {backend = ..., options}, attention (default: "
             "the cache's)\n";
    } else {
      out << "  [" << table << "]  " << joined(known_keys(table)) << "\n";
    }
  }
  out << "  top level: " << joined(known_keys(""))
      << "\n\nEach key, its default and meaning: docs/config.md.\n";
}

int run_mode(HostContext& context) {
  const HostConfig& cfg = context.config;
  if (cfg.parallel.present) {
    check_parallel_mode(cfg);
    if (cfg.parallel.rank != 0) return run_rank_mode(context);
  }
  return mode_table().at(cfg.mode).run(context);
}

}  // namespace kivi::host
