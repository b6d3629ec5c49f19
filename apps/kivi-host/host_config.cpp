#include "host_config.h"

#include <regex>
#include <sstream>

#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"

namespace kivi::host {
namespace fs = std::filesystem;

namespace {

// Reads a plugin table: `backend` names the plugin, every other key is the plugin's option.
PluginChoice read_plugin_choice(ConfigTable& parent, const std::string& key, const std::string& fallback) {
  PluginChoice choice;
  choice.name = fallback;
  const toml::table* raw = parent.raw_table(key);
  ConfigTable table = parent.sub(key);  // checks that it is a table
  if (!raw) return choice;
  choice.explicit_choice = true;
  choice.name = table.get_string("backend", fallback);
  toml::table options;
  for (const auto& [k, node] : *raw) {
    const std::string name(k.str());
    if (name == "backend") continue;
    table.mark_used(name);
    options.insert(k, node);
    const auto& begin = k.source().begin;
    choice.positions[name] = std::to_string(begin.line) + ":" + std::to_string(begin.column);
  }
  std::ostringstream text;
  text << toml::toml_formatter(options);
  choice.options_toml = text.str();
  return choice;
}

ModelChoice read_model(ConfigTable& top, const fs::path& base) {
  ModelChoice model;
  model.present = top.raw_table("model") != nullptr;
  ConfigTable table = top.sub("model");
  if (!model.present) return model;
  const fs::path path(table.require_string("path"));
  model.path = path.is_absolute() ? path : (base / path).lexically_normal();
  model.dtype = table.get_choice("dtype", model.dtype, {"auto", "float32", "float16", "bfloat16"});
  model.device = table.get_choice("device", model.device, {"auto", "cpu", "cuda"});
  model.weights = table.get_choice("weights", model.weights, {"safetensors", "dummy"});
  model.seed = table.get_int_in("seed", 0, 0, int64_t{1} << 62);
  table.finish();
  return model;
}

// prompt_ids = [1, 2, 3] (one prompt) or [[1, 2], [3, 4, 5]] (a batch of prompts).
GenerateChoice read_generate(ConfigTable& top) {
  GenerateChoice generate;
  const toml::table* raw = top.raw_table("generate");
  ConfigTable table = top.sub("generate");
  if (!raw) return generate;
  if (const toml::node* ids = raw->get("prompt_ids")) {
    table.mark_used("prompt_ids");
    auto bad = [&] {
      table.fail("prompt_ids", "expected a list of token ids or a list of such lists, found " +
                                   describe_toml(*ids));
    };
    auto read_list = [&](const toml::node& node) {
      std::vector<int64_t> out;
      const toml::array* list = node.as_array();
      if (!list || list->empty()) bad();
      for (const auto& item : *list) {
        auto v = item.value<int64_t>();
        if (!item.is_integer() || !v || *v < 0) bad();
        out.push_back(*v);
      }
      return out;
    };
    const toml::array* outer = ids->as_array();
    if (!outer || outer->empty()) bad();
    if ((*outer)[0].is_array())
      for (const auto& prompt : *outer) generate.prompt_ids.push_back(read_list(prompt));
    else
      generate.prompt_ids.push_back(read_list(*ids));
  }
  generate.max_new_tokens = table.get_int_in("max_new_tokens", generate.max_new_tokens, 0, 1 << 20);
  generate.top = table.get_int_in("top", generate.top, 0, 1000);
  table.finish();
  return generate;
}

}  // namespace

HostConfig parse_host_config(const toml::table& root, const std::string& source) {
  HostConfig config;
  config.file = source;
  const fs::path base = source.empty() ? fs::current_path() : fs::absolute(source).parent_path();
  ConfigTable top(root, source);
  config.mode = top.get_choice("mode", config.mode, known_modes());

  ConfigTable plugins = top.sub("plugins");
  for (const std::string& dir : plugins.get_string_list("dirs", {})) {
    fs::path p(dir);
    config.plugin_dirs.push_back(p.is_absolute() ? p : (base / p).lexically_normal());
  }
  config.default_plugin_dir = plugins.get_bool("default_dir", true);
  plugins.finish();

  config.cache = read_plugin_choice(top, "cache", config.cache.name);
  config.attention = read_plugin_choice(top, "attention", config.attention.name);

  ConfigTable memory = top.sub("memory");
  MemoryPlan& plan = config.memory;
  plan.num_layers = memory.get_int_in("num_layers", plan.num_layers, 1, 1024);
  plan.num_kv_heads = memory.get_int_in("num_kv_heads", plan.num_kv_heads, 1, 1024);
  plan.head_dim = memory.get_int_in("head_dim", plan.head_dim, 1, 4096);
  plan.dtype = memory.get_choice("dtype", plan.dtype, {"float16", "bfloat16", "float32"});
  plan.live_check = memory.get_bool("live_check", plan.live_check);
  if (const toml::table* raw = top.raw_table("memory"); raw && raw->contains("lengths")) {
    memory.mark_used("lengths");
    const toml::array* list = raw->get_as<toml::array>("lengths");
    if (!list) memory.fail("lengths", "expected an array of token counts, e.g. [4096, 32768]");
    plan.lengths.clear();
    for (const toml::node& item : *list) {
      const auto value = item.value<int64_t>();
      if (!value || *value <= 0) memory.fail("lengths", "expected positive integers, got " + describe_toml(item));
      plan.lengths.push_back(*value);
    }
  }
  memory.finish();
  config.model = read_model(top, base);
  config.generate = read_generate(top);

  ConfigTable output = top.sub("output");
  config.json_output = output.get_string("json", "");
  output.finish();

  top.finish();
  return config;
}

HostConfig load_host_config(const fs::path& file) {
  const toml::table root = ConfigTable::parse_file(file.string());
  return parse_host_config(root, file.string());
}

std::string map_plugin_error(const std::string& message, const std::string& source,
                             const std::string& table_name,
                             const std::map<std::string, std::string>& positions) {
  // Our own ConfigTable writes "<plugin options>[:line:col]: key: message".
  static const std::regex pattern(std::string("^") + plugin::kOptionsSource +
                                  R"((?::\d+:\d+)?: ([A-Za-z0-9_\-]+)(?:\.[A-Za-z0-9_.\-]+)?: ([\s\S]*)$)");
  std::smatch match;
  std::string plugin_part = message;
  std::string prefix;
  if (const auto colon = message.find("): "); colon != std::string::npos) {
    prefix = message.substr(0, colon + 3);  // "kv_cache plugin "x" (file): "
    plugin_part = message.substr(colon + 3);
  }
  if (std::regex_match(plugin_part, match, pattern)) {
    const std::string key = match[1].str();
    std::ostringstream out;
    out << source;
    if (auto it = positions.find(key); it != positions.end()) out << ':' << it->second;
    out << ": " << table_name << "." << key << ": " << match[2].str() << "  [" << prefix.substr(0, prefix.size() - 2) << "]";
    return out.str();
  }
  return source + ": [" + table_name + "]: " + message;
}

}  // namespace kivi::host
