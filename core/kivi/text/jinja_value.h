// Values of the Jinja-subset interpreter that renders chat templates. They follow Python's
// semantics where templates can observe them: truthiness, equality, str() and repr().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kivi::text::jinja {

class Value;
using List = std::vector<Value>;
// Insertion-ordered, string keys only (what chat messages and namespaces need).
using Dict = std::vector<std::pair<std::string, Value>>;

struct Undefined {
  std::string name;  // what was looked up, for error messages
};
struct None {};

struct Arguments;
using Function = std::function<Value(const Arguments&)>;

class Value {
 public:
  using Storage =
      std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<List>,
                   std::shared_ptr<Dict>, std::shared_ptr<const Function>>;

  Value() : storage_(Undefined{}) {}
  Value(Undefined u) : storage_(std::move(u)) {}
  Value(None) : storage_(None{}) {}
  Value(bool b) : storage_(b) {}
  Value(int64_t i) : storage_(i) {}
  Value(int i) : storage_(static_cast<int64_t>(i)) {}
  Value(double d) : storage_(d) {}
  Value(std::string s) : storage_(std::move(s)) {}
  Value(const char* s) : storage_(std::string(s)) {}
  // Containers record how deeply they nest: past Limits::max_nesting these throw LimitError
  // (printing, comparing and destroying values recurse).
  Value(List list);
  Value(Dict dict);
  // A namespace(): the one value templates mutate (set ns.attr = ...).
  static Value make_namespace(Dict attributes);
  Value(Function f) : storage_(std::make_shared<const Function>(std::move(f))) {}

  static Value from_json(const nlohmann::json& json);

  bool is_undefined() const { return std::holds_alternative<Undefined>(storage_); }
  bool is_none() const { return std::holds_alternative<None>(storage_); }
  bool is_bool() const { return std::holds_alternative<bool>(storage_); }
  bool is_int() const { return std::holds_alternative<int64_t>(storage_); }
  bool is_float() const { return std::holds_alternative<double>(storage_); }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return std::holds_alternative<std::string>(storage_); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(storage_); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(storage_); }
  bool is_function() const {
    return std::holds_alternative<std::shared_ptr<const Function>>(storage_);
  }

  bool as_bool() const { return std::get<bool>(storage_); }
  int64_t as_int() const;    // ints and bools
  double as_double() const;  // any number
  const std::string& as_string() const { return std::get<std::string>(storage_); }
  const List& as_list() const { return *std::get<std::shared_ptr<List>>(storage_); }
  const Dict& as_dict() const { return *std::get<std::shared_ptr<Dict>>(storage_); }
  // A namespace's attributes (throws unless is_namespace()).
  Dict& mutable_dict();
  const Function& as_function() const {
    return *std::get<std::shared_ptr<const Function>>(storage_);
  }
  const std::string& undefined_name() const { return std::get<Undefined>(storage_).name; }
  // Levels of lists and dicts (0 for a scalar). A namespace holds no namespace, so a value's
  // real depth is at most this plus Limits::max_nesting even after namespaces change.
  int depth() const { return depth_; }
  bool is_namespace() const { return namespace_; }
  // Whether a namespace is inside (or is) this value.
  bool holds_namespace() const { return holds_namespace_; }

  // The value stored under `key`, or nullptr.
  const Value* find(const std::string& key) const;

  // Python's bool(x); Undefined is false.
  bool truthy() const;
  // Python's str(x) as Jinja prints it: None -> "None", True -> "True", Undefined -> "".
  std::string str() const;
  // Python's repr(x), used inside containers.
  std::string repr() const;
  // Python's json.dumps(x, ensure_ascii=False, indent=indent) (indent < 0: none). Throws
  // LimitError past Limits::max_string_bytes.
  std::string to_json(int indent = -1) const;
  // The type name for error messages ("str", "int", "list", ...).
  std::string type_name() const;

  friend bool operator==(const Value& a, const Value& b);

 private:
  void write_json(std::string& out, int indent, int depth) const;
  void repr_into(std::string& out) const;
  static Value from_json(const nlohmann::json& json, int depth);
  template <class Items>
  void measure(const Items& items);
  Storage storage_;
  int depth_ = 0;
  bool namespace_ = false;
  bool holds_namespace_ = false;
};

// Call arguments: positional then keyword.
struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The positional argument `index`, else the keyword `name`, else nullptr.
  const Value* get(std::size_t index, const char* name) const;
};

// Python's repr() of a float.
std::string format_float(double d);

}  // namespace kivi::text::jinja
