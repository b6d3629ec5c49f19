#include "kivi/text/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "kivi/text/jinja_limits.h"
#include "kivi/util/error.h"

namespace kivi::text::jinja {

template <class Items>
void Value::measure(const Items& items) {
  int deepest = 0;
  for (const auto& item : items) {
    const Value& v = [&]() -> const Value& {
      if constexpr (std::is_same_v<Items, List>)
        return item;
      else
        return item.second;
    }();
    deepest = std::max(deepest, v.depth_);
    holds_namespace_ = holds_namespace_ || v.holds_namespace_;
  }
  depth_ = deepest + 1;
  const int limit = Budget::limits().max_nesting;
  if (depth_ > limit)
    throw LimitError("lists and dicts nested more than " + std::to_string(limit) +
                     " levels deep (Limits::max_nesting)");
  Budget::charge(static_cast<int64_t>(items.size()));
}

Value::Value(List list) {
  measure(list);
  storage_ = std::make_shared<List>(std::move(list));
}

Value::Value(Dict dict) {
  measure(dict);
  storage_ = std::make_shared<Dict>(std::move(dict));
}

Value Value::make_namespace(Dict attributes) {
  if (std::any_of(attributes.begin(), attributes.end(),
                  [](const auto& a) { return a.second.holds_namespace_; }))
    throw Error("chat template: a namespace cannot hold another namespace");
  Value v(std::move(attributes));
  v.namespace_ = true;
  v.holds_namespace_ = true;
  return v;
}

Dict& Value::mutable_dict() {
  if (!namespace_) throw Error("chat template: only a namespace can be changed");
  return *std::get<std::shared_ptr<Dict>>(storage_);
}

Value Value::from_json(const nlohmann::json& json) {
  return from_json(json, 0);
}

Value Value::from_json(const nlohmann::json& json, int depth) {
  const int limit = Budget::limits().max_nesting;
  if (depth >= limit && (json.is_array() || json.is_object()))
    throw Error("chat template: a JSON variable nests arrays and objects more than " +
                std::to_string(limit) + " levels deep");
  switch (json.type()) {
    case nlohmann::json::value_t::null:
      return None{};
    case nlohmann::json::value_t::boolean:
      return json.get<bool>();
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return json.get<int64_t>();
    case nlohmann::json::value_t::number_float:
      return json.get<double>();
    case nlohmann::json::value_t::string:
      return json.get<std::string>();
    case nlohmann::json::value_t::array: {
      List list;
      for (const auto& item : json) list.push_back(from_json(item, depth + 1));
      return list;
    }
    case nlohmann::json::value_t::object: {
      Dict dict;
      for (const auto& [key, item] : json.items())
        dict.emplace_back(key, from_json(item, depth + 1));
      return dict;
    }
    default:
      throw Error("chat template: cannot use a JSON " + std::string(json.type_name()) +
                  " as a template value");
  }
}

int64_t Value::as_int() const {
  if (is_bool()) return as_bool() ? 1 : 0;
  if (!is_int()) throw Error("chat template: expected an integer, got a " + type_name());
  return std::get<int64_t>(storage_);
}

double Value::as_double() const {
  if (is_float()) return std::get<double>(storage_);
  return static_cast<double>(as_int());
}

const Value* Value::find(const std::string& key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, v] : as_dict())
    if (k == key) return &v;
  return nullptr;
}

bool Value::truthy() const {
  return std::visit(
      [](const auto& v) -> bool {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, None>)
          return false;
        else if constexpr (std::is_same_v<T, bool>)
          return v;
        else if constexpr (std::is_same_v<T, int64_t>)
          return v != 0;
        else if constexpr (std::is_same_v<T, double>)
          return v != 0.0;
        else if constexpr (std::is_same_v<T, std::string>)
          return !v.empty();
        else if constexpr (std::is_same_v<T, std::shared_ptr<const Function>>)
          return true;
        else
          return !v->empty();
      },
      storage_);
}

std::string format_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), d, std::chars_format::scientific);
  const std::string sci(buffer, result.ptr);
  // Shortest round-trip digits and the decimal exponent, then Python's layout rules.
  const auto e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::stoi(sci.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa)
    if (c != '.') digits.push_back(c);
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+',
                std::abs(exponent));
  return out + exp_text;
}

std::string Value::str() const {
  if (is_undefined()) return "";
  if (is_string()) return as_string();
  return repr();
}

namespace {

std::string python_string_repr(const std::string& s) {
  // Python prefers single quotes unless the text contains one and no double quote.
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (const char c : s) {
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c == quote) {
          out += '\\';
          out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "\\x%02x", static_cast<unsigned char>(c));
          out += hex;
        } else {
          out += c;
        }
    }
  }
  return out + quote;
}

}  // namespace

std::string Value::repr() const {
  std::string out;
  repr_into(out);
  return out;
}

void Value::repr_into(std::string& out) const {
  Budget::charge(1);
  if (is_list()) {
    out += '[';
    const List& list = as_list();
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (i) out += ", ";
      list[i].repr_into(out);
    }
    out += ']';
  } else if (is_dict()) {
    out += '{';
    const Dict& dict = as_dict();
    for (std::size_t i = 0; i < dict.size(); ++i) {
      if (i) out += ", ";
      out += python_string_repr(dict[i].first);
      out += ": ";
      dict[i].second.repr_into(out);
    }
    out += '}';
  } else if (is_undefined()) {
  } else if (is_none()) {
    out += "None";
  } else if (is_bool()) {
    out += as_bool() ? "True" : "False";
  } else if (is_int()) {
    out += std::to_string(as_int());
  } else if (is_float()) {
    out += format_float(as_double());
  } else if (is_string()) {
    out += python_string_repr(as_string());
  } else {
    out += "<function>";
  }
  Budget::check_string(out.size(), "a printed value", false);
}

std::string Value::type_name() const {
  if (is_undefined()) return "undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return "list";
  if (is_dict()) return "dict";
  return "function";
}

namespace {

void write_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "\\u%04x", static_cast<unsigned char>(c));
          out += hex;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace

void Value::write_json(std::string& out, int indent, int depth) const {
  auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent * level), ' ');
  };
  const char* item_separator = indent < 0 ? ", " : ",";
  Budget::check_string(out.size(), "a tojson result", false);
  if (is_undefined())
    throw Error("chat template: tojson of an undefined value '" + undefined_name() + "'");
  if (is_none()) {
    out += "null";
  } else if (is_bool()) {
    out += as_bool() ? "true" : "false";
  } else if (is_int()) {
    out += std::to_string(as_int());
  } else if (is_float()) {
    const double d = as_double();
    out += std::isnan(d)   ? "NaN"
           : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                           : format_float(d);
  } else if (is_string()) {
    write_json_string(out, as_string());
  } else if (is_list()) {
    const List& list = as_list();
    if (list.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (i) out += item_separator;
      newline(depth + 1);
      list[i].write_json(out, indent, depth + 1);
    }
    newline(depth);
    out += ']';
  } else if (is_dict()) {
    const Dict& dict = as_dict();
    if (dict.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    for (std::size_t i = 0; i < dict.size(); ++i) {
      if (i) out += item_separator;
      newline(depth + 1);
      write_json_string(out, dict[i].first);
      out += ": ";
      dict[i].second.write_json(out, indent, depth + 1);
    }
    newline(depth);
    out += '}';
  } else {
    throw Error("chat template: tojson of a function");
  }
}

std::string Value::to_json(int indent) const {
  std::string out;
  write_json(out, indent, 0);
  return out;
}

bool operator==(const Value& a, const Value& b) {
  Budget::charge(1);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.storage_.index() != b.storage_.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.as_string() == b.as_string();
  if (a.is_list()) return a.as_list() == b.as_list();
  if (a.is_dict()) {
    const Dict& x = a.as_dict();
    const Dict& y = b.as_dict();
    if (x.size() != y.size()) return false;
    for (const auto& [key, value] : x) {
      const Value* other = b.find(key);
      if (other == nullptr || !(*other == value)) return false;
    }
    return true;
  }
  if (a.is_bool()) return a.as_bool() == b.as_bool();
  return std::get<std::shared_ptr<const Function>>(a.storage_) ==
         std::get<std::shared_ptr<const Function>>(b.storage_);
}

const Value* Arguments::get(std::size_t index, const char* name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : keyword)
    if (key == name) return &value;
  return nullptr;
}

}  // namespace kivi::text::jinja
