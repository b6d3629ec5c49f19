// run.toml: the host's configuration, validated before any work starts. Unknown keys, wrong
// types and bad values are errors with file:line:column and the expected form. Plugin
// choices are names resolved through the registry; a plugin's own options (the rest of its
// table) are checked by the plugin itself, and its messages are mapped back to run.toml.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "kivi/config/config_table.h"

namespace kivi::host {

// A plugin choice: its name, and its options as TOML text for the plugin's create().
struct PluginChoice {
  std::string name;
  std::string options_toml;
  std::map<std::string, std::string> positions;  // option key -> "line:column" in run.toml
  bool explicit_choice = false;  // the table was in run.toml (else the default applies)
  // The same choice: where it came from (explicit_choice) is not part of it.
  bool operator==(const PluginChoice& o) const {
    return name == o.name && options_toml == o.options_toml && positions == o.positions;
  }
};

// [cache] memory_budget: the page pool of a paged cache for `serve` (docs/paged-cache.md), as
// bytes or as a fraction of the memory available on the device once the weights are loaded (like
// vLLM's gpu_memory_utilization); unset: every row holds its own storage.
struct MemoryBudget {
  int64_t bytes = 0;
  double fraction = 0;
  bool set() const { return bytes > 0 || fraction > 0; }
  bool operator==(const MemoryBudget&) const = default;
};

// [memory]: the model geometry and sequence lengths the `memory` mode tabulates.
struct MemoryPlan {
  int64_t num_layers = 32;  // defaults: Llama-3.1-8B
  int64_t num_kv_heads = 8;
  int64_t head_dim = 128;
  std::string dtype = "float16";  // the model's K/V dtype
  std::vector<int64_t> lengths = {4096, 32768};
  bool live_check = true;  // also build each cache (max_batch 1, CPU) and compare its bytes
  bool operator==(const MemoryPlan&) const = default;
};

// [model]: a Hugging Face checkpoint folder, built by the model_family plugin that declares
// its config.json `architectures`.
struct ModelChoice {
  bool present = false;
  std::filesystem::path path;           // relative to run.toml
  std::string dtype = "auto";           // auto | float32 | float16 | bfloat16
  std::string device = "auto";          // auto | cpu | cuda
  std::string weights = "safetensors";  // safetensors | dummy (random, from config.json alone)
  int64_t seed = 0;                     // dummy weights
  bool cuda_graphs = true;              // decode steps on CUDA replay captured graphs
  bool operator==(const ModelChoice&) const = default;
};

// [generate]: prompts as text (tokenized with the model folder's tokenizer) or token ids, the
// sampling and stopping options, and what to print. Also read by chat and compare.
struct GenerateChoice {
  std::vector<std::string> prompts;              // text prompts
  std::filesystem::path prompt_file;             // one prompt per line (relative to run.toml)
  std::vector<std::vector<int64_t>> prompt_ids;  // or token ids: one prompt, or a batch
  bool add_special_tokens = true;                // encode prompts with BOS etc.
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  int64_t seed = 0;
  std::vector<std::string> stop;  // stop strings
  int64_t num_beams = 1;
  double length_penalty = 1.0;
  int64_t context = 0;       // 0 = the model's max_position_embeddings
  bool stream = false;       // print tokens as they come (one prompt at a time)
  bool cache_stats = false;  // print the cache's memory statistics after the run
  bool operator==(const GenerateChoice&) const = default;
};

// [perplexity]: sliding-window perplexity of a text file.
struct PerplexityChoice {
  std::filesystem::path text;  // relative to run.toml
  int64_t context = 2048;      // tokens per window, BOS included
  int64_t stride = 0;          // new tokens per window; 0 = context - 1 (non-overlapping)
  int64_t max_windows = 0;     // 0 = all
  int64_t max_tokens = 0;      // use only the first max_tokens text tokens; 0 = all
  int64_t chunk = 256;   // tokens per forward pass; later passes read the cache (0 = whole window)
  bool progress = true;  // progress bar on stderr
  bool cache_stats = false;
  bool operator==(const PerplexityChoice&) const = default;
};

// [tokenize]: encode/decode text and render a chat prompt with a checkpoint's tokenizer.
struct TokenizeChoice {
  std::filesystem::path
      tokenizer;     // a folder with tokenizer.json, or the file; relative to run.toml
  std::string text;  // encoded, then decoded back
  bool add_special_tokens = true;
  bool skip_special_tokens = false;
  std::vector<std::pair<std::string, std::string>>
      messages;  // (role, content), for the chat template
  bool add_generation_prompt = true;
  std::filesystem::path
      chat_template;  // a Jinja file instead of the tokenizer's (relative to run.toml)
  bool operator==(const TokenizeChoice&) const = default;
};

// [[compare.variants]]: a named cache and attention choice; compare runs each on the same
// [perplexity] text and [generate] prompts and sets them against the first.
struct CompareVariant {
  std::string name;
  PluginChoice cache;
  PluginChoice attention;
  bool operator==(const CompareVariant&) const = default;
};

struct CompareChoice {
  std::vector<CompareVariant> variants;
  bool operator==(const CompareChoice&) const = default;
};

// [bench]: prefill and decode throughput on random tokens.
struct BenchChoice {
  int64_t batch = 1;
  int64_t prompt_tokens = 512;
  int64_t decode_tokens = 64;
  int64_t warmup = 1;
  int64_t repeats = 5;
  int64_t seed = 0;
  std::string fill = "prefill";  // prefill (random prompts) | random (K/V straight into the cache)
  bool find_max_batch = false;   // search the largest batch up to `batch` instead of timing
  bool profile = false;          // one more run, its decode steps profiled (step_profiler.h)
  std::string trace = "kivi-bench-trace.json";  // the profile's Chrome trace ("": none)
  bool operator==(const BenchChoice&) const = default;
};

// [parallel]: tensor parallelism over c10d (docs/parallel.md).
struct ParallelChoice {
  bool present = false;  // [parallel] tensor given (even 1: the N = 1 path through c10d)
  int64_t tensor = 1;    // ranks, each with a shard of every layer
  // "local": this process is rank 0 and starts ranks 1..N-1 itself (one per GPU, or CPU ranks);
  // "external": this process is rank `rank`, and the others are started apart (other hosts).
  std::string launch = "local";
  int64_t rank = 0;
  std::string address = "127.0.0.1";  // rank 0's TCPStore
  int64_t port = 0;                   // rank 0's store; 0 (local launch only): any free port
  int64_t timeout_seconds = 120;      // a rank silent this long in a collective is an error
  bool operator==(const ParallelChoice&) const = default;
};

// [serve]: the OpenAI-compatible HTTP server (docs/server.md).
struct ServeChoice {
  std::string host = "127.0.0.1";   // loopback unless asked otherwise
  int64_t port = 8000;              // 0 = any free port (printed at start)
  std::string model_name;           // the "model" clients send; "" = the model folder's name
  int64_t max_batch = 8;            // cache rows: sequences decoded together
  int64_t max_queue = 64;           // sequences waiting for a row; beyond, 503
  int64_t prefill_chunk = 512;      // prompt tokens a row feeds per forward pass
  int64_t step_tokens = 8192;       // rows x tokens per forward pass (bounds the logits' memory)
  int64_t context = 0;              // tokens per sequence; 0 = max_position_embeddings
  int64_t default_max_tokens = 16;  // completions without max_tokens
  int64_t max_n = 16;               // n per request
  int64_t profile_steps = 0;        // profile the first N forward passes (step_profiler.h); 0: off
  bool prefix_sharing = true;       // paged cache: reuse the pages of published prompt prefixes
  int64_t stats_seconds = 0;        // log the load and the cache's pages this often; 0: never
  std::string profile_trace = "kivi-serve-trace.json";  // their Chrome trace ("": none)
  int64_t max_logprobs = 20;                            // logprobs / top_logprobs
  int64_t max_body_bytes = 8 << 20;
  int64_t max_connections = 256;
  int64_t read_timeout_ms = 30000;
  std::filesystem::path chat_template;  // a Jinja file (relative to run.toml); "" = the tokenizer's
  bool operator==(const ServeChoice&) const = default;
};

struct HostConfig {
  std::filesystem::path file;  // run.toml ("" when built from defaults)
  std::string mode = "check";
  std::vector<std::filesystem::path> plugin_dirs;  // [plugins] dirs, relative to run.toml
  bool default_plugin_dir = true;                  // [plugins] default_dir
  // The research code's default cache (kivi, 2-bit keys and values, group 32, residual 128; the
  // plugin's own defaults) and the attention backend that reads its views.
  PluginChoice cache{"kivi", "", {}, false};      // [cache] backend + options
  MemoryBudget cache_budget;                      // [cache] memory_budget (not a plugin option)
  PluginChoice attention{"kivi", "", {}, false};  // [attention] backend + options
  std::string json_output;                        // [output] json: also write results here
  MemoryPlan memory;                              // [memory]
  ModelChoice model;                              // [model]
  GenerateChoice generate;                        // [generate]
  TokenizeChoice tokenize;                        // [tokenize]
  PerplexityChoice perplexity;                    // [perplexity]
  CompareChoice compare;                          // [compare]
  BenchChoice bench;                              // [bench]
  ServeChoice serve;                              // [serve]
  ParallelChoice parallel;                        // [parallel]
  bool operator==(const HostConfig&) const = default;
};

// The modes kivi-host knows, in the order --help lists them.
const std::vector<std::string>& known_modes();

HostConfig parse_host_config(const toml::table& root, const std::string& source);
// `overrides`: command-line `--set section.key=value` (apply_overrides), applied before reading.
HostConfig load_host_config(const std::filesystem::path& file,
                            const std::vector<std::string>& overrides = {});

// Why an input path named by run.toml `config_file` cannot be read: "(no such file)", and when
// the path also lies outside the checkout that holds run.toml (the nearest folder above it with
// a .git), that it points outside the repository, at a folder a plain clone does not have (e.g.
// ../shared beside a development checkout). Empty when the path exists.
std::string missing_input_note(const std::filesystem::path& config_file,
                               const std::filesystem::path& path);

// Sets each "section.key=value" (or "key=value" at the top level) in `root`, creating missing
// tables: value is read as TOML (42, 0.5, true, "text", [1, 2]) or, when it is not, as a plain
// string (so --set cache.backend=fp16 needs no quotes). Throws naming the override when its
// form is wrong or a part of its path is not a table.
void apply_overrides(toml::table& root, const std::vector<std::string>& overrides);

// The keys run.toml's `table` ("" = the top level) accepts, as the parser knows them (for
// `kivi-host MODE --help`).
std::vector<std::string> known_keys(const std::string& table);

// Rewrites a plugin's option error ("<plugin options>:L:C: key: message") to point at the key
// in run.toml ("run.toml:12:1: cache.key: message").
std::string map_plugin_error(const std::string& message, const std::string& source,
                             const std::string& table_name,
                             const std::map<std::string, std::string>& positions);

}  // namespace kivi::host
