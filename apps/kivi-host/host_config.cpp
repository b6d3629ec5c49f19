#include "host_config.h"

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"
#include "kivi/util/output_file.h"

namespace kivi::host {
namespace fs = std::filesystem;

namespace {

// Paths in run.toml are relative to the file's folder.
fs::path relative_to(const fs::path& base, const std::string& path) {
  const fs::path p(path);
  return p.is_absolute() ? p : (base / p).lexically_normal();
}

// Reads a plugin table: `backend` names the plugin, every other key is the plugin's option.
// [cache] memory_budget: an integer of bytes, a string with a unit ("24GiB", "512MB"), or a
// fraction in (0, 1] of the available memory.
MemoryBudget read_memory_budget(ConfigTable& top) {
  MemoryBudget budget;
  const toml::table* raw = top.raw_table("cache");
  const toml::node* node = raw ? raw->get("memory_budget") : nullptr;
  if (!node) return budget;
  ConfigTable cache = top.sub("cache");
  const std::string expected =
      "expected bytes (an integer >= 1, or a string such as \"24GiB\" or \"512MB\") or a "
      "fraction of the available memory in (0, 1]";
  if (const auto* i = node->as_integer()) {
    if (i->get() < 1) cache.fail("memory_budget", "got " + describe_toml(*node) + ", " + expected);
    budget.bytes = i->get();
  } else if (const auto* f = node->as_floating_point()) {
    if (!(f->get() > 0 && f->get() <= 1))
      cache.fail("memory_budget", "got " + describe_toml(*node) + ", " + expected);
    budget.fraction = f->get();
  } else if (const auto* s = node->as_string()) {
    const std::string text = s->get();
    size_t used = 0;
    double number = 0;
    try {
      number = std::stod(text, &used);
    } catch (const std::exception&) {
      cache.fail("memory_budget", "got " + describe_toml(*node) + ", " + expected);
    }
    std::string unit = text.substr(used);
    unit.erase(0, unit.find_first_not_of(' '));
    const std::map<std::string, double> units = {{"B", 1},        {"KB", 1e3},   {"MB", 1e6},
                                                 {"GB", 1e9},     {"KiB", 1024}, {"MiB", 1 << 20},
                                                 {"GiB", 1 << 30}};
    const auto it = units.find(unit);
    if (it == units.end() || !(number > 0))
      cache.fail("memory_budget", "got " + describe_toml(*node) + ", " + expected +
                                      " (units: B, KB, MB, GB, KiB, MiB, GiB)");
    budget.bytes = static_cast<int64_t>(number * it->second);
  } else {
    cache.fail("memory_budget", "got " + describe_toml(*node) + ", " + expected);
  }
  return budget;
}

// `host_keys`: keys of the table that are the host's, not options for the plugin.
PluginChoice read_plugin_choice(ConfigTable& parent, const std::string& key,
                                const std::string& fallback,
                                const std::set<std::string>& host_keys = {}) {
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
    if (host_keys.count(name)) table.mark_used(name);
    if (name == "backend" || host_keys.count(name)) continue;
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
  model.path = relative_to(base, table.require_string("path"));
  model.dtype = table.get_choice("dtype", model.dtype, {"auto", "float32", "float16", "bfloat16"});
  model.device = table.get_choice("device", model.device, {"auto", "cpu", "cuda"});
  model.weights = table.get_choice("weights", model.weights, {"safetensors", "dummy"});
  model.seed = table.get_int_in("seed", 0, 0, int64_t{1} << 62);
  model.cuda_graphs = table.get_bool("cuda_graphs", model.cuda_graphs);
  table.finish();
  return model;
}

// prompt_ids = [1, 2, 3] (one prompt) or [[1, 2], [3, 4, 5]] (a batch of prompts).
GenerateChoice read_generate(ConfigTable& top, const fs::path& base) {
  GenerateChoice generate;
  const toml::table* raw = top.raw_table("generate");
  ConfigTable table = top.sub("generate");
  if (!raw) return generate;
  table.mark_used("prompt_ids");  // known whether or not it is given (finish() lists known keys)
  if (const toml::node* ids = raw->get("prompt_ids")) {
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
  generate.prompts = table.get_string_list("prompts", {});
  if (const std::string file = table.get_string("prompt_file", ""); !file.empty())
    generate.prompt_file = relative_to(base, file);
  generate.add_special_tokens = table.get_bool("add_special_tokens", generate.add_special_tokens);
  generate.max_new_tokens = table.get_int_in("max_new_tokens", generate.max_new_tokens, 0, 1 << 20);
  // Ranges are checked by kivi::generate::validate, with the field and value in the message.
  generate.temperature = table.get_double("temperature", generate.temperature);
  generate.top_k = table.get_int_in("top_k", generate.top_k, INT64_MIN, INT64_MAX);
  generate.top_p = table.get_double("top_p", generate.top_p);
  generate.min_p = table.get_double("min_p", generate.min_p);
  generate.repetition_penalty = table.get_double("repetition_penalty", generate.repetition_penalty);
  generate.seed = table.get_int_in("seed", generate.seed, 0, INT64_MAX);
  generate.stop = table.get_string_list("stop", {});
  generate.num_beams = table.get_int_in("num_beams", generate.num_beams, 1, 256);
  generate.length_penalty = table.get_double("length_penalty", generate.length_penalty);
  generate.context = table.get_int_in("context", generate.context, 0, int64_t{1} << 24);
  generate.stream = table.get_bool("stream", generate.stream);
  generate.cache_stats = table.get_bool("cache_stats", generate.cache_stats);
  table.finish();
  return generate;
}

// [[compare.variants]] name = "...", cache = {backend = "...", ...}, attention = "kivi" (or a
// table with backend and options). A variant without cache/attention takes the top-level ones.
CompareChoice read_compare(ConfigTable& top, const PluginChoice& cache,
                           const PluginChoice& attention) {
  CompareChoice choice;
  const toml::table* raw = top.raw_table("compare");
  ConfigTable table = top.sub("compare");
  if (!raw) return choice;
  table.mark_used("variants");
  const toml::array* list = raw->get_as<toml::array>("variants");
  if (!list || list->size() < 2)
    table.fail("variants",
               "expected two or more [[compare.variants]] tables (name, cache, attention)");
  for (size_t i = 0; i < list->size(); ++i) {
    const toml::table* v = (*list)[i].as_table();
    if (!v) table.fail("variants", "expected tables, got " + describe_toml((*list)[i]));
    ConfigTable vt(*v, top.source(), "compare.variants[" + std::to_string(i) + "]");
    vt.mark_used("cache");  // known whether or not they are given (finish() lists known keys)
    vt.mark_used("attention");
    CompareVariant variant;
    variant.name = vt.require_string("name");
    for (const auto& other : choice.variants)
      if (other.name == variant.name)
        vt.fail("name", "\"" + variant.name + "\" is used by two variants");
    variant.cache = cache;
    if (v->contains("cache")) variant.cache = read_plugin_choice(vt, "cache", cache.name);
    variant.attention = attention;
    if (const toml::node* a = v->get("attention"); a && a->is_string()) {
      variant.attention = PluginChoice{vt.get_string("attention", attention.name), "", {}, true};
    } else if (a) {
      variant.attention = read_plugin_choice(vt, "attention", attention.name);
    }
    vt.finish();
    choice.variants.push_back(std::move(variant));
  }
  table.finish();
  return choice;
}

PerplexityChoice read_perplexity(ConfigTable& top, const fs::path& base) {
  PerplexityChoice choice;
  const toml::table* raw = top.raw_table("perplexity");
  ConfigTable table = top.sub("perplexity");
  if (!raw) return choice;
  choice.text = relative_to(base, table.require_string("text"));
  choice.context = table.get_int_in("context", choice.context, 2, int64_t{1} << 24);
  choice.stride = table.get_int_in("stride", choice.stride, 0, int64_t{1} << 24);
  if (choice.stride >= choice.context)
    table.fail("stride", "stride = " + std::to_string(choice.stride) +
                             " must be below context = " + std::to_string(choice.context) +
                             " (each window predicts at most context - 1 tokens)");
  choice.max_windows = table.get_int_in("max_windows", choice.max_windows, 0, int64_t{1} << 30);
  choice.max_tokens = table.get_int_in("max_tokens", choice.max_tokens, 0, int64_t{1} << 40);
  choice.chunk = table.get_int_in("chunk", choice.chunk, 0, int64_t{1} << 24);
  choice.progress = table.get_bool("progress", choice.progress);
  choice.cache_stats = table.get_bool("cache_stats", choice.cache_stats);
  table.finish();
  return choice;
}

}  // namespace

namespace {

TokenizeChoice read_tokenize(ConfigTable& top, const fs::path& base) {
  TokenizeChoice choice;
  const toml::table* raw = top.raw_table("tokenize");
  ConfigTable table = top.sub("tokenize");
  if (!raw) return choice;
  choice.tokenizer = relative_to(base, table.require_string("tokenizer"));
  choice.text = table.get_string("text", "");
  choice.add_special_tokens = table.get_bool("add_special_tokens", choice.add_special_tokens);
  choice.skip_special_tokens = table.get_bool("skip_special_tokens", choice.skip_special_tokens);
  choice.add_generation_prompt =
      table.get_bool("add_generation_prompt", choice.add_generation_prompt);
  if (const std::string file = table.get_string("chat_template", ""); !file.empty())
    choice.chat_template = relative_to(base, file);
  table.mark_used("messages");  // known whether or not it is given (finish() lists known keys)
  if (raw->contains("messages")) {
    const toml::array* list = raw->get_as<toml::array>("messages");
    if (!list)
      table.fail("messages",
                 "expected an array of tables: [[tokenize.messages]] role = ..., content = ...");
    for (const toml::node& item : *list) {
      const toml::table* message = item.as_table();
      if (!message)
        table.fail("messages", "expected tables with role and content, got " + describe_toml(item));
      ConfigTable m(*message, top.source(), "tokenize.messages");
      const std::string role = m.get_choice("role", "user", {"system", "user", "assistant"});
      choice.messages.emplace_back(role, m.require_string("content"));
      m.finish();
    }
  }
  table.finish();
  return choice;
}

ParallelChoice read_parallel(ConfigTable& top) {
  ParallelChoice p;
  const toml::table* raw = top.raw_table("parallel");
  ConfigTable table = top.sub("parallel");
  if (!raw) return p;
  p.present = raw->contains("tensor");
  p.tensor = table.get_int_in("tensor", p.tensor, 1, 1024);
  p.launch = table.get_choice("launch", p.launch, {"local", "external"});
  p.rank = table.get_int_in("rank", p.rank, 0, 1023);
  if (p.rank >= p.tensor)
    table.fail("rank", "expected a rank below tensor = " + std::to_string(p.tensor) + ", got " +
                           std::to_string(p.rank));
  if (p.launch == "local" && p.rank != 0)
    table.fail("rank",
               "is set by the launch: with launch = \"local\" this process is rank 0 "
               "(set launch = \"external\" to start one rank by hand)");
  p.address = table.get_string("address", p.address);
  p.port = table.get_int_in("port", p.port, 0, 65535);
  if (p.port == 0 && p.launch == "external")
    table.fail("port",
               "is needed with launch = \"external\": every rank names the port of rank "
               "0's store (0, any free port, serves a local launch only)");
  p.timeout_seconds = table.get_int_in("timeout_seconds", p.timeout_seconds, 1, 86400);
  table.finish();
  return p;
}

ServeChoice read_serve(ConfigTable& top, const fs::path& base) {
  ServeChoice s;
  ConfigTable table = top.sub("serve");
  s.host = table.get_string("host", s.host);
  s.port = table.get_int_in("port", s.port, 0, 65535);
  s.model_name = table.get_string("model_name", s.model_name);
  s.max_batch = table.get_int_in("max_batch", s.max_batch, 1, 4096);
  s.max_queue = table.get_int_in("max_queue", s.max_queue, 1, 1 << 20);
  s.prefill_chunk = table.get_int_in("prefill_chunk", s.prefill_chunk, 1, int64_t{1} << 24);
  s.step_tokens = table.get_int_in("step_tokens", s.step_tokens, 1, int64_t{1} << 30);
  s.context = table.get_int_in("context", s.context, 0, int64_t{1} << 24);
  s.default_max_tokens =
      table.get_int_in("default_max_tokens", s.default_max_tokens, 0, int64_t{1} << 24);
  s.max_n = table.get_int_in("max_n", s.max_n, 1, 1024);
  s.profile_steps = table.get_int_in("profile_steps", s.profile_steps, 0, int64_t{1} << 20);
  s.prefix_sharing = table.get_bool("prefix_sharing", s.prefix_sharing);
  s.stats_seconds = table.get_int_in("stats_seconds", s.stats_seconds, 0, 86400);
  s.profile_trace = table.get_string("profile_trace", s.profile_trace);
  if (!s.profile_trace.empty()) check_output_file(s.profile_trace, table.where("profile_trace"));
  s.max_logprobs = table.get_int_in("max_logprobs", s.max_logprobs, 0, 1024);
  s.max_body_bytes = table.get_int_in("max_body_bytes", s.max_body_bytes, 1024, int64_t{1} << 32);
  s.max_connections = table.get_int_in("max_connections", s.max_connections, 1, 1 << 16);
  s.read_timeout_ms = table.get_int_in("read_timeout_ms", s.read_timeout_ms, 100, 3600 * 1000);
  if (const std::string file = table.get_string("chat_template", ""); !file.empty())
    s.chat_template = relative_to(base, file);
  table.finish();
  return s;
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
    config.plugin_dirs.push_back(relative_to(base, dir));
  }
  config.default_plugin_dir = plugins.get_bool("default_dir", true);
  plugins.finish();

  config.cache = read_plugin_choice(top, "cache", config.cache.name, {"memory_budget"});
  config.cache_budget = read_memory_budget(top);
  config.attention = read_plugin_choice(top, "attention", config.attention.name);

  ConfigTable memory = top.sub("memory");
  MemoryPlan& plan = config.memory;
  plan.num_layers = memory.get_int_in("num_layers", plan.num_layers, 1, 1024);
  plan.num_kv_heads = memory.get_int_in("num_kv_heads", plan.num_kv_heads, 1, 1024);
  plan.head_dim = memory.get_int_in("head_dim", plan.head_dim, 1, 4096);
  plan.dtype = memory.get_choice("dtype", plan.dtype, {"float16", "bfloat16", "float32"});
  plan.live_check = memory.get_bool("live_check", plan.live_check);
  memory.mark_used("lengths");  // known whether or not it is given (finish() lists known keys)
  if (const toml::table* raw = top.raw_table("memory"); raw && raw->contains("lengths")) {
    const toml::array* list = raw->get_as<toml::array>("lengths");
    if (!list) memory.fail("lengths", "expected an array of token counts, e.g. [4096, 32768]");
    plan.lengths.clear();
    for (const toml::node& item : *list) {
      const auto value = item.value<int64_t>();
      if (!value || *value <= 0)
        memory.fail("lengths", "expected positive integers, got " + describe_toml(item));
      plan.lengths.push_back(*value);
    }
  }
  memory.finish();
  config.model = read_model(top, base);
  config.generate = read_generate(top, base);
  config.perplexity = read_perplexity(top, base);
  config.compare = read_compare(top, config.cache, config.attention);
  ConfigTable bench = top.sub("bench");
  BenchChoice& b = config.bench;
  b.batch = bench.get_int_in("batch", b.batch, 1, 4096);
  b.prompt_tokens = bench.get_int_in("prompt_tokens", b.prompt_tokens, 1, int64_t{1} << 24);
  b.decode_tokens = bench.get_int_in("decode_tokens", b.decode_tokens, 1, int64_t{1} << 24);
  b.warmup = bench.get_int_in("warmup", b.warmup, 0, 1000);
  b.repeats = bench.get_int_in("repeats", b.repeats, 1, 1000);
  b.seed = bench.get_int_in("seed", b.seed, 0, INT64_MAX);
  b.fill = bench.get_choice("fill", b.fill, {"prefill", "random"});
  b.find_max_batch = bench.get_bool("find_max_batch", b.find_max_batch);
  b.profile = bench.get_bool("profile", b.profile);
  b.trace = bench.get_string("trace", b.trace);
  if (!b.trace.empty()) check_output_file(b.trace, bench.where("trace"));
  bench.finish();
  config.tokenize = read_tokenize(top, base);
  config.serve = read_serve(top, base);
  config.parallel = read_parallel(top);

  ConfigTable output = top.sub("output");
  config.json_output = output.get_string("json", "");
  // Written after the work: an unwritable path fails now, not an hour later.
  if (!config.json_output.empty()) check_output_file(config.json_output, output.where("json"));
  output.finish();

  top.finish();
  return config;
}

HostConfig load_host_config(const fs::path& file, const std::vector<std::string>& overrides) {
  toml::table root = ConfigTable::parse_file(file.string());
  apply_overrides(root, overrides);
  return parse_host_config(root, file.string());
}

void apply_overrides(toml::table& root, const std::vector<std::string>& overrides) {
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    check(eq != std::string::npos && eq > 0,
          "command line: --set " + o + ": expected section.key=value, e.g. --set cache.k_bits=4");
    const std::string path = o.substr(0, eq), text = o.substr(eq + 1);
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      const size_t dot = path.find('.', start);
      parts.push_back(path.substr(start, dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    toml::table* table = &root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      check(!parts[i].empty(), "command line: --set " + o + ": empty name in \"" + path + "\"");
      toml::node* node = table->get(parts[i]);
      if (!node) node = &table->insert(parts[i], toml::table{}).first->second;
      check(node->is_table(),
            "command line: --set " + o + ": \"" + parts[i] + "\" is not a table in run.toml");
      table = node->as_table();
    }
    check(!parts.back().empty(), "command line: --set " + o + ": empty key in \"" + path + "\"");
    toml::table parsed;
    try {
      parsed = toml::parse("v = " + text);
    } catch (const toml::parse_error&) {
      parsed = toml::table{{"v", text}};  // not TOML: a plain string
    }
    table->insert_or_assign(parts.back(), *parsed.get("v"));
  }
}

std::vector<std::string> known_keys(const std::string& table) {
  // The parser names the keys it knows when it meets one it does not: ask it with an unknown one.
  const std::string probe = "__kivi_help_probe__";
  // Required keys are read before the probe is met: give them.
  static const std::map<std::string, std::string> required_keys = {
      {"model", "path"}, {"perplexity", "text"}, {"tokenize", "tokenizer"}};
  const auto req = required_keys.find(table);
  const std::string required = req == required_keys.end() ? "" : req->second + " = \".\"\n";
  const std::string text =
      table.empty() ? probe + " = 0\n" : "[" + table + "]\n" + required + probe + " = 0\n";
  try {
    parse_host_config(ConfigTable::parse_text(text, "help"), "");
  } catch (const Error& e) {
    const std::string m = e.what(), marker = "expected one of: ";
    const auto at = m.find(marker);
    if (at == std::string::npos) return {};
    std::vector<std::string> keys;
    std::stringstream list(m.substr(at + marker.size()));
    for (std::string k; std::getline(list, k, ',');)
      keys.push_back(k.substr(k.find_first_not_of(' ')));
    return keys;
  }
  return {};
}

std::string map_plugin_error(const std::string& message, const std::string& source,
                             const std::string& table_name,
                             const std::map<std::string, std::string>& positions) {
  // Our own ConfigTable writes "<plugin options>[:line:col]: key: message".
  static const std::regex pattern(
      std::string("^") + plugin::kOptionsSource +
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
    out << ": " << table_name << "." << key << ": " << match[2].str() << "  ["
        << prefix.substr(0, prefix.size() - 2) << "]";
    return out.str();
  }
  return source + ": [" + table_name + "]: " + message;
}

std::string missing_input_note(const fs::path& config_file, const fs::path& path) {
  std::error_code ec;
  if (path.empty() || fs::exists(path, ec)) return "";
  std::string note = " (no such file or folder)";
  if (config_file.empty()) return note;
  // The checkout holding run.toml: the nearest folder above it with a .git (a folder, or a file
  // in a worktree or submodule).
  fs::path root;
  for (fs::path dir = fs::absolute(config_file, ec).parent_path(); !dir.empty();
       dir = dir.parent_path()) {
    if (fs::exists(dir / ".git", ec)) {
      root = dir.lexically_normal();
      break;
    }
    if (dir == dir.parent_path()) break;
  }
  if (root.empty()) return note;
  const fs::path target = fs::absolute(path, ec).lexically_normal();
  const fs::path inside = target.lexically_relative(root);
  if (!inside.empty() && *inside.begin() != "..") return note;
  return " (no such file or folder: it lies outside this checkout, " + root.string() +
         ", in a folder beside it that this clone does not have, such as ../shared beside a "
         "development checkout; point the key at a file in the repository or fetch that folder)";
}

}  // namespace kivi::host
