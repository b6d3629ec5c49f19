#include "kivi/text/jinja_builtins.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <ctime>

#include <utf8proc.h>

#include "kivi/text/jinja_limits.h"
#include "kivi/text/utf8.h"
#include "kivi/util/error.h"

namespace kivi::text::jinja {

void template_error(int line, const std::string& message) {
  throw Error("chat template line " + std::to_string(line) + ": " + message);
}

namespace {

const std::string& require_string(const Value& v, const char* what, int line) {
  if (!v.is_string())
    template_error(line, std::string(what) + " expects a string, got " + v.type_name());
  return v.as_string();
}

bool in_chars(char32_t cp, const std::string* chars) {
  if (chars == nullptr) return utf8::is_python_space(cp);
  std::size_t pos = 0;
  while (pos < chars->size())
    if (utf8::decode(*chars, pos) == cp) return true;
  return false;
}

// Python's str.strip/lstrip/rstrip, with an optional set of characters.
std::string strip(const std::string& s, bool left, bool right, const std::string* chars) {
  std::size_t begin = 0;
  std::size_t end = s.size();
  if (left) {
    while (begin < end) {
      std::size_t next = begin;
      if (!in_chars(utf8::decode(s, next), chars)) break;
      begin = next;
    }
  }
  if (right) {
    while (end > begin) {
      std::size_t start = end;
      if (!in_chars(utf8::decode_backward(s, start), chars)) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto cp = static_cast<utf8proc_int32_t>(utf8::decode(s, pos));
    utf8::append(out, static_cast<char32_t>(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)));
  }
  return out;
}

std::string capitalize(const std::string& s) {
  if (s.empty()) return s;
  std::size_t pos = 0;
  std::string out;
  utf8::append(out, static_cast<char32_t>(
                        utf8proc_toupper(static_cast<utf8proc_int32_t>(utf8::decode(s, pos)))));
  return out + map_case(s.substr(pos), false);
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  if (from.empty()) return s;
  std::string out;
  std::size_t copied = 0;
  for (std::size_t hit = s.find(from); hit != std::string::npos && count != 0;
       hit = s.find(from, copied), --count) {
    Budget::check_string(out.size() + (hit - copied) + to.size(), "a replace() result", false);
    out.append(s, copied, hit - copied);
    out += to;
    copied = hit + from.size();
  }
  return out + s.substr(copied);
}

Value length_of(const Value& v, int line) {
  if (v.is_string()) {
    int64_t n = 0;
    for (const char c : v.as_string()) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }
  if (v.is_list()) return static_cast<int64_t>(v.as_list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.as_dict().size());
  if (v.is_undefined()) return static_cast<int64_t>(0);
  template_error(line, "length of a " + v.type_name() + " value");
}

// The items of an iterable value: list items, dict keys, string characters.
List iterate(const Value& v, int line) {
  if (v.is_list()) return v.as_list();
  if (v.is_undefined()) return {};
  if (v.is_dict()) {
    List keys;
    for (const auto& [key, value] : v.as_dict()) keys.emplace_back(key);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    const std::string& s = v.as_string();
    if (s.size() > static_cast<std::size_t>(Budget::limits().max_range))
      throw LimitError("a string of " + std::to_string(s.size()) +
                       " bytes split into characters: more than the limit of " +
                       std::to_string(Budget::limits().max_range) + " items (Limits::max_range)");
    for (std::size_t pos = 0; pos < s.size();) {
      const std::size_t start = pos;
      utf8::decode(s, pos);
      chars.emplace_back(s.substr(start, pos - start));
    }
    return chars;
  }
  template_error(line, "cannot iterate over a " + v.type_name() + " value");
}

Value attribute_of(const Value& v, const std::string& name) {
  if (const Value* found = v.find(name)) return *found;
  return Undefined{name};
}

Arguments shift(const Arguments& args, std::size_t n) {
  Arguments rest;
  rest.positional.assign(args.positional.begin() + std::min(n, args.positional.size()),
                         args.positional.end());
  rest.keyword = args.keyword;
  return rest;
}

// select/reject/selectattr/rejectattr.
Value filter_items(const Value& subject, const Arguments& args, bool keep_if, bool by_attribute,
                   int line) {
  List out;
  std::size_t test_index = 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty())
      template_error(line, "selectattr/rejectattr need an attribute name");
    attribute = require_string(args.positional[0], "selectattr/rejectattr", line);
    test_index = 1;
  }
  for (const Value& item : iterate(subject, line)) {
    const Value candidate = by_attribute ? attribute_of(item, attribute) : item;
    bool result;
    if (args.positional.size() <= test_index) {
      result = candidate.truthy();
    } else {
      const std::string& test = require_string(args.positional[test_index], "the test name", line);
      result = apply_test(test, candidate, shift(args, test_index + 1), line);
    }
    if (result == keep_if) out.push_back(item);
  }
  return out;
}

}  // namespace

bool has_method(const Value& object, const std::string& name) {
  static const char* const kStringMethods[] = {
      "strip", "lstrip",  "rstrip", "startswith", "endswith", "split", "upper",
      "lower", "replace", "title",  "capitalize", "find",     "count"};
  static const char* const kDictMethods[] = {"get", "items", "keys", "values"};
  if (object.is_string())
    return std::find(std::begin(kStringMethods), std::end(kStringMethods), name) !=
           std::end(kStringMethods);
  if (object.is_dict())
    return std::find(std::begin(kDictMethods), std::end(kDictMethods), name) !=
           std::end(kDictMethods);
  return false;
}

Value call_method(const Value& object, const std::string& name, const Arguments& args, int line) {
  if (object.is_string()) {
    const std::string& s = object.as_string();
    const Value* a0 = args.get(0, "");
    const std::string* chars = a0 && a0->is_string() ? &a0->as_string() : nullptr;
    if (name == "strip") return strip(s, true, true, chars);
    if (name == "lstrip") return strip(s, true, false, chars);
    if (name == "rstrip") return strip(s, false, true, chars);
    if (name == "upper") return map_case(s, true);
    if (name == "lower") return map_case(s, false);
    if (name == "capitalize") return capitalize(s);
    if (name == "startswith" || name == "endswith") {
      if (!a0) template_error(line, name + "() needs an argument");
      List options = a0->is_list() ? a0->as_list() : List{*a0};
      for (const Value& o : options) {
        const std::string& p = require_string(o, name.c_str(), line);
        if (name == "startswith" ? s.starts_with(p) : s.ends_with(p)) return true;
      }
      return false;
    }
    if (name == "replace") {
      if (args.positional.size() < 2) template_error(line, "replace() needs two arguments");
      const Value* count = args.get(2, "count");
      return replace_all(s, require_string(args.positional[0], "replace", line),
                         require_string(args.positional[1], "replace", line),
                         count ? count->as_int() : -1);
    }
    if (name == "find")
      return a0 ? (s.find(require_string(*a0, "find", line)) == std::string::npos
                       ? int64_t{-1}
                       : static_cast<int64_t>(s.find(a0->as_string())))
                : int64_t{-1};
    if (name == "count") {
      const std::string& needle = require_string(a0 ? *a0 : Value(), "count", line);
      int64_t n = 0;
      for (std::size_t hit = s.find(needle); hit != std::string::npos && !needle.empty();
           hit = s.find(needle, hit + needle.size()))
        ++n;
      return n;
    }
    if (name == "split") {
      List parts;
      const Value* sep = args.get(0, "sep");
      if (sep && !sep->is_none()) {
        const std::string& d = require_string(*sep, "split", line);
        if (d.empty()) template_error(line, "split() with an empty separator");
        std::size_t start = 0;
        for (std::size_t hit = s.find(d); hit != std::string::npos; hit = s.find(d, start)) {
          parts.emplace_back(s.substr(start, hit - start));
          start = hit + d.size();
        }
        parts.emplace_back(s.substr(start));
      } else {
        std::size_t pos = 0;
        while (pos < s.size()) {
          std::size_t next = pos;
          if (utf8::is_python_space(utf8::decode(s, next))) {
            pos = next;
            continue;
          }
          std::size_t end = pos;
          while (end < s.size()) {
            std::size_t after = end;
            if (utf8::is_python_space(utf8::decode(s, after))) break;
            end = after;
          }
          parts.emplace_back(s.substr(pos, end - pos));
          pos = end;
        }
      }
      return parts;
    }
    if (name == "title") {
      std::string out;
      bool previous_cased = false;
      std::size_t pos = 0;
      while (pos < s.size()) {
        const auto cp = static_cast<utf8proc_int32_t>(utf8::decode(s, pos));
        const bool cased = utf8proc_toupper(cp) != cp || utf8proc_tolower(cp) != cp;
        utf8::append(out, static_cast<char32_t>(previous_cased ? utf8proc_tolower(cp)
                                                               : utf8proc_toupper(cp)));
        previous_cased = cased;
      }
      return out;
    }
  }
  if (object.is_dict()) {
    if (name == "get") {
      const Value* key = args.get(0, "key");
      if (!key) template_error(line, "get() needs a key");
      if (const Value* found = object.find(require_string(*key, "get", line))) return *found;
      const Value* fallback = args.get(1, "default");
      return fallback ? *fallback : Value(None{});
    }
    if (name == "items") return apply_filter("items", object, {}, line);
    if (name == "keys") return iterate(object, line);
    if (name == "values") {
      List values;
      for (const auto& [key, value] : object.as_dict()) values.push_back(value);
      return values;
    }
  }
  template_error(line, "unsupported method " + object.type_name() + "." + name + "()");
}

Value apply_filter(const std::string& name, const Value& subject, const Arguments& args, int line) {
  if (name == "trim") {
    const Value* chars = args.get(0, "chars");
    return strip(subject.str(), true, true,
                 chars && chars->is_string() ? &chars->as_string() : nullptr);
  }
  if (name == "length" || name == "count") return length_of(subject, line);
  if (name == "tojson") {
    const Value* indent = args.get(0, "indent");
    if (args.get(1, "ensure_ascii") || args.get(2, "separators") || args.get(3, "sort_keys"))
      template_error(line, "tojson supports only the indent argument");
    if (indent && !indent->is_none() &&
        (!indent->is_int() || indent->as_int() < 0 || indent->as_int() > 64))
      template_error(line,
                     "tojson's indent must be an integer from 0 to 64, got " + indent->repr());
    return subject.to_json(indent && !indent->is_none() ? static_cast<int>(indent->as_int()) : -1);
  }
  if (name == "items") {
    if (subject.is_undefined()) return List{};
    if (!subject.is_dict()) template_error(line, "items of a " + subject.type_name() + " value");
    List pairs;
    for (const auto& [key, value] : subject.as_dict()) pairs.emplace_back(List{Value(key), value});
    return pairs;
  }
  if (name == "join") {
    const Value* separator = args.get(0, "d");
    const Value* attribute = args.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(subject, line)) {
      if (!first && separator) out += separator->str();
      first = false;
      out += (attribute ? attribute_of(item, attribute->str()) : item).str();
      Budget::check_string(out.size(), "a joined string", false);
    }
    return out;
  }
  if (name == "select") return filter_items(subject, args, true, false, line);
  if (name == "reject") return filter_items(subject, args, false, false, line);
  if (name == "selectattr") return filter_items(subject, args, true, true, line);
  if (name == "rejectattr") return filter_items(subject, args, false, true, line);
  if (name == "map") {
    // map('map', 'map', ...) recurses once per argument: bounded like any nesting.
    thread_local int map_depth = 0;
    if (map_depth >= Budget::limits().max_nesting)
      throw LimitError("map filters nested more than " +
                       std::to_string(Budget::limits().max_nesting) +
                       " levels deep (Limits::max_nesting)");
    struct Depth {
      Depth() { ++map_depth; }
      ~Depth() { --map_depth; }
    } depth;
    List out;
    const Value* attribute = nullptr;  // keyword only
    for (const auto& [key, value] : args.keyword)
      if (key == "attribute") attribute = &value;
    for (const Value& item : iterate(subject, line)) {
      if (attribute) {
        out.push_back(attribute_of(item, attribute->str()));
      } else {
        if (args.positional.empty()) template_error(line, "map needs a filter name or attribute=");
        out.push_back(apply_filter(require_string(args.positional[0], "map", line), item,
                                   shift(args, 1), line));
      }
    }
    return out;
  }
  if (name == "first" || name == "last") {
    const List items = iterate(subject, line);
    if (items.empty()) return Undefined{"first"};
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return iterate(subject, line);
  if (name == "unique") {
    List out;
    for (const Value& item : iterate(subject, line))
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    return out;
  }
  if (name == "upper" || name == "lower") return map_case(subject.str(), name == "upper");
  if (name == "capitalize") return capitalize(subject.str());
  if (name == "string") return subject.str();
  if (name == "safe" || name == "e" || name == "escape") {
    if (name != "safe")
      template_error(
          line,
          "HTML escaping is not supported (the chat-template environment does not autoescape)");
    return subject;
  }
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    const bool use_fallback =
        subject.is_undefined() || (boolean && boolean->truthy() && !subject.truthy());
    return use_fallback ? (fallback ? *fallback : Value(std::string())) : subject;
  }
  if (name == "int") {
    if (subject.is_int() || subject.is_bool()) return subject.as_int();
    if (subject.is_float()) {
      const double d = subject.as_double();
      // Python: int(nan) and int(inf) raise; kivi's integers stop at 64 bits.
      if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
        template_error(line, "int of " + subject.repr() + " does not fit in 64 bits");
      return static_cast<int64_t>(d);
    }
    try {
      return static_cast<int64_t>(std::stoll(subject.str()));
    } catch (const std::exception&) {
      return static_cast<int64_t>(0);
    }
  }
  if (name == "abs") {
    if (subject.is_int() && subject.as_int() == INT64_MIN)
      template_error(line, "integer overflow: abs(" + subject.str() + ") does not fit in 64 bits");
    if (subject.is_int()) return subject.as_int() < 0 ? -subject.as_int() : subject.as_int();
    if (subject.is_float())
      return subject.as_double() < 0 ? -subject.as_double() : subject.as_double();
  }
  if (name == "replace") return call_method(Value(subject.str()), "replace", args, line);
  template_error(line, "unsupported filter '" + name + "'");
}

bool apply_test(const std::string& name, const Value& subject, const Arguments& args, int line) {
  const Value* other = args.get(0, "value");
  if (name == "defined") return !subject.is_undefined();
  if (name == "undefined") return subject.is_undefined();
  if (name == "none") return subject.is_none();
  if (name == "string") return subject.is_string();
  if (name == "mapping") return subject.is_dict();
  if (name == "iterable") return subject.is_list() || subject.is_dict() || subject.is_string();
  if (name == "sequence") return subject.is_list() || subject.is_dict() || subject.is_string();
  if (name == "number") return subject.is_number() && !subject.is_bool();
  if (name == "integer") return subject.is_int();
  if (name == "float") return subject.is_float();
  if (name == "boolean") return subject.is_bool();
  if (name == "true") return subject.is_bool() && subject.as_bool();
  if (name == "false") return subject.is_bool() && !subject.as_bool();
  if (name == "callable") return subject.is_function();
  if (name == "odd" || name == "even") {
    if (!subject.is_int()) template_error(line, "'" + name + "' test of a " + subject.type_name());
    return (subject.as_int() % 2 != 0) == (name == "odd");
  }
  if (other == nullptr)
    template_error(line, "test '" + name + "' needs an argument or is not supported");
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas")
    return subject == *other;
  if (name == "ne" || name == "!=") return !(subject == *other);
  if (name == "in") {
    for (const Value& item : iterate(*other, line))
      if (item == subject) return true;
    return false;
  }
  template_error(line, "unsupported test '" + name + "'");
}

namespace {

// Python's range(), its length computed without overflow and bounded by Limits::max_range.
Value range(const Arguments& args) {
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3)
    throw Error("chat template: range() takes 1 to 3 integer arguments, got " +
                std::to_string(p.size()));
  for (const Value& v : p)
    if (!v.is_int() && !v.is_bool())
      throw Error("chat template: range() arguments must be integers, got a " + v.type_name());
  int64_t start = 0, stop = 0, step = 1;
  if (p.size() == 1) {
    stop = p[0].as_int();
  } else {
    start = p[0].as_int();
    stop = p[1].as_int();
    if (p.size() > 2) step = p[2].as_int();
  }
  if (step == 0) throw Error("chat template: range() step must not be zero");
  // Distances in unsigned arithmetic: stop - start can exceed int64_t.
  const uint64_t span =
      step > 0 ? (stop > start ? static_cast<uint64_t>(stop) - static_cast<uint64_t>(start) : 0)
               : (start > stop ? static_cast<uint64_t>(start) - static_cast<uint64_t>(stop) : 0);
  const uint64_t stride = step > 0 ? static_cast<uint64_t>(step) : 0 - static_cast<uint64_t>(step);
  const uint64_t count = span == 0 ? 0 : (span - 1) / stride + 1;
  const int64_t limit = Budget::limits().max_range;
  if (count > static_cast<uint64_t>(limit))
    throw LimitError("range(" + std::to_string(start) + ", " + std::to_string(stop) + ", " +
                     std::to_string(step) + ") has " + std::to_string(count) +
                     " items, more than the limit of " + std::to_string(limit) +
                     " (Limits::max_range)");
  List out;
  out.reserve(count);
  for (uint64_t k = 0; k < count; ++k)
    out.emplace_back(
        static_cast<int64_t>(static_cast<uint64_t>(start) + k * static_cast<uint64_t>(step)));
  return out;
}

}  // namespace

Dict global_functions() {
  Dict globals;
  globals.emplace_back("raise_exception", Function([](const Arguments& args) -> Value {
                         const Value* message = args.get(0, "message");
                         throw Error("chat template raised an exception: " +
                                     (message ? message->str() : std::string()));
                       }));
  globals.emplace_back("strftime_now", Function([](const Arguments& args) -> Value {
                         const Value* format = args.get(0, "format");
                         if (!format || !format->is_string())
                           throw Error("chat template: strftime_now needs a format string");
                         const std::time_t now = std::time(nullptr);
                         std::tm local{};
                         localtime_r(&now, &local);
                         char buffer[256];
                         const std::size_t n = std::strftime(buffer, sizeof(buffer),
                                                             format->as_string().c_str(), &local);
                         return std::string(buffer, n);
                       }));
  globals.emplace_back("namespace", Function([](const Arguments& args) -> Value {
                         Dict attributes;
                         for (const auto& [key, value] : args.keyword)
                           attributes.emplace_back(key, value);
                         return Value::make_namespace(std::move(attributes));
                       }));
  globals.emplace_back("range",
                       Function([](const Arguments& args) -> Value { return range(args); }));
  return globals;
}

}  // namespace kivi::text::jinja
