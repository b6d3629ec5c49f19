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
};

// [memory]: the model geometry and sequence lengths the `memory` mode tabulates.
struct MemoryPlan {
  int64_t num_layers = 32;  // defaults: Llama-3.1-8B
  int64_t num_kv_heads = 8;
  int64_t head_dim = 128;
  std::string dtype = "float16";  // the model's K/V dtype
  std::vector<int64_t> lengths = {4096, 32768};
  bool live_check = true;  // also build each cache (max_batch 1, CPU) and compare its bytes
};

// [model]: a Hugging Face checkpoint folder, built by the model_family plugin that declares
// its config.json `architectures`.
struct ModelChoice {
  bool present = false;
  std::filesystem::path path;         // relative to run.toml
  std::string dtype = "auto";         // auto | float32 | float16 | bfloat16
  std::string device = "auto";        // auto | cpu | cuda
  std::string weights = "safetensors";  // safetensors | dummy (random, from config.json alone)
  int64_t seed = 0;                   // dummy weights
};

// [generate]: prompts as token ids (until the tokenizer library lands) and greedy decoding.
struct GenerateChoice {
  std::vector<std::vector<int64_t>> prompt_ids;  // one prompt, or a batch
  int64_t max_new_tokens = 16;
  int64_t top = 5;  // how many next-token candidates to print after each prompt
};

struct HostConfig {
  std::filesystem::path file;  // run.toml ("" when built from defaults)
  std::string mode = "check";
  std::vector<std::filesystem::path> plugin_dirs;  // [plugins] dirs, relative to run.toml
  bool default_plugin_dir = true;                  // [plugins] default_dir
  PluginChoice cache{"fp16", "", {}, false};              // [cache] backend + options
  PluginChoice attention{"sdpa", "", {}, false};          // [attention] backend + options
  std::string json_output;                         // [output] json: also write results here
  MemoryPlan memory;                               // [memory]
  ModelChoice model;                               // [model]
  GenerateChoice generate;                         // [generate]
};

// The modes kivi-host knows, in the order --help lists them.
const std::vector<std::string>& known_modes();

HostConfig parse_host_config(const toml::table& root, const std::string& source);
HostConfig load_host_config(const std::filesystem::path& file);

// Rewrites a plugin's option error ("<plugin options>:L:C: key: message") to point at the key
// in run.toml ("run.toml:12:1: cache.key: message").
std::string map_plugin_error(const std::string& message, const std::string& source,
                             const std::string& table_name,
                             const std::map<std::string, std::string>& positions);

}  // namespace kivi::host
