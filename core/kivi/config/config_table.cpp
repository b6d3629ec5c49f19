#include "kivi/config/config_table.h"

#include <fstream>
#include <sstream>

#include "kivi/util/error.h"
#include "kivi/util/input_file.h"
#include "kivi/util/toml_limits.h"

namespace kivi {
namespace {

std::string position(const std::string& source, const toml::source_region& region) {
  std::ostringstream out;
  out << source;
  if (region.begin.line > 0) out << ':' << region.begin.line << ':' << region.begin.column;
  return out.str();
}

const char* type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

template <class T>
std::string join(const std::vector<T>& items) {
  std::ostringstream out;
  for (size_t i = 0; i < items.size(); ++i) out << (i ? ", " : "") << items[i];
  return out.str();
}

}  // namespace

std::string describe_toml(const toml::node& node) {
  std::ostringstream out;
  if (node.is_table()) return "a table";
  if (auto s = node.value<std::string>(); s && node.is_string()) return "\"" + *s + "\"";
  node.visit([&](auto&& value) { out << value; });
  return out.str();
}

ConfigTable::ConfigTable(const toml::table& table, std::string source, std::string path)
    : table_(&table), source_(std::move(source)), path_(std::move(path)) {}

toml::table ConfigTable::parse_text(const std::string& text, const std::string& source) {
  check_toml_key_depth(text, source);
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << position(source, e.source()) << ": malformed TOML: " << e.description();
    throw Error(out.str());
  }
}

toml::table ConfigTable::parse_file(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(file + ": cannot open config file");
  check_input_file(file, "config file", uint64_t{16} << 20);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_text(buffer.str(), file);
}

bool ConfigTable::has(const std::string& key) const {
  return table_->contains(key);
}

std::string ConfigTable::key_path(const std::string& key) const {
  if (path_.empty()) return key;
  if (key.empty()) return path_;
  return path_ + "." + key;
}

std::string ConfigTable::where(const std::string& key) const {
  const toml::node* node = key.empty() ? table_ : table_->get(key);
  const toml::source_region region = node ? node->source() : table_->source();
  std::string path = key_path(key);
  return position(source_, region) + ": " + (path.empty() ? "(top level)" : path);
}

void ConfigTable::fail(const std::string& key, const std::string& message) const {
  throw Error(where(key) + ": " + message);
}

const toml::node* ConfigTable::lookup(const std::string& key) {
  used_.insert(key);
  return table_->get(key);
}

std::string ConfigTable::get_string(const std::string& key, const std::string& fallback) {
  const toml::node* node = lookup(key);
  if (!node) return fallback;
  if (!node->is_string())
    fail(key,
         std::string("expected a string, got ") + type_name(*node) + " " + describe_toml(*node));
  return *node->value<std::string>();
}

std::string ConfigTable::require_string(const std::string& key) {
  if (!has(key)) fail(key, "missing required key (a string)");
  return get_string(key, "");
}

int64_t ConfigTable::get_int(const std::string& key, int64_t fallback) {
  const toml::node* node = lookup(key);
  if (!node) return fallback;
  if (!node->is_integer())
    fail(key,
         std::string("expected an integer, got ") + type_name(*node) + " " + describe_toml(*node));
  return *node->value<int64_t>();
}

double ConfigTable::get_double(const std::string& key, double fallback) {
  const toml::node* node = lookup(key);
  if (!node) return fallback;
  if (!node->is_number())
    fail(key,
         std::string("expected a number, got ") + type_name(*node) + " " + describe_toml(*node));
  return *node->value<double>();
}

bool ConfigTable::get_bool(const std::string& key, bool fallback) {
  const toml::node* node = lookup(key);
  if (!node) return fallback;
  if (!node->is_boolean())
    fail(key, std::string("expected true or false, got ") + type_name(*node) + " " +
                  describe_toml(*node));
  return *node->value<bool>();
}

std::vector<std::string> ConfigTable::get_string_list(const std::string& key,
                                                      const std::vector<std::string>& fallback) {
  const toml::node* node = lookup(key);
  if (!node) return fallback;
  const toml::array* array = node->as_array();
  if (!array) fail(key, std::string("expected an array of strings, got ") + type_name(*node));
  std::vector<std::string> out;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& item = *array->get(i);
    if (!item.is_string())
      fail(key, "expected an array of strings, element " + std::to_string(i) + " is " +
                    type_name(item) + " " + describe_toml(item));
    out.push_back(*item.value<std::string>());
  }
  return out;
}

std::string ConfigTable::get_choice(const std::string& key, const std::string& fallback,
                                    const std::vector<std::string>& allowed) {
  std::string value = get_string(key, fallback);
  for (const auto& a : allowed)
    if (a == value) return value;
  fail(key, "\"" + value + "\" is not allowed; expected one of: " + join(allowed));
}

int64_t ConfigTable::get_int_choice(const std::string& key, int64_t fallback,
                                    const std::vector<int64_t>& allowed) {
  int64_t value = get_int(key, fallback);
  for (int64_t a : allowed)
    if (a == value) return value;
  fail(key, std::to_string(value) + " is not allowed; expected one of: " + join(allowed));
}

int64_t ConfigTable::get_int_in(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  int64_t value = get_int(key, fallback);
  if (value < lo || value > hi)
    fail(key, std::to_string(value) + " is out of range; expected " + std::to_string(lo) +
                  " <= value <= " + std::to_string(hi));
  return value;
}

const toml::table* ConfigTable::raw_table(const std::string& key) const {
  const toml::node* node = table_->get(key);
  return node ? node->as_table() : nullptr;
}

ConfigTable ConfigTable::sub(const std::string& key) {
  static const toml::table kEmpty;
  const toml::node* node = lookup(key);
  if (!node) return ConfigTable(kEmpty, source_, key_path(key));
  if (!node->is_table())
    fail(key,
         std::string("expected a table, got ") + type_name(*node) + " " + describe_toml(*node));
  return ConfigTable(*node->as_table(), source_, key_path(key));
}

void ConfigTable::finish() const {
  for (const auto& [key, node] : *table_) {
    const std::string name(key.str());
    if (used_.count(name)) continue;
    std::vector<std::string> known(used_.begin(), used_.end());
    throw Error(position(source_, key.source()) + ": " + key_path(name) +
                ": unknown key; expected one of: " + (known.empty() ? "(no keys)" : join(known)));
  }
}

}  // namespace kivi
