#include "kivi/text/jinja_render.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <unordered_map>

#include "kivi/text/jinja_builtins.h"
#include "kivi/util/error.h"

namespace kivi::text::jinja {

namespace {

enum class Flow { kNormal, kBreak, kContinue };

[[noreturn]] void overflow(int line, int64_t x, const std::string& op, int64_t y) {
  template_error(line, "integer overflow: " + std::to_string(x) + " " + op + " " +
                           std::to_string(y) +
                           " does not fit in 64 bits (Python's integers are unbounded; "
                           "kivi's are not)");
}

// Python's floor division for integers (b != 0, and not INT64_MIN // -1).
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Python's int ** int for a non-negative exponent, or an overflow error.
int64_t int_power(int64_t base, int64_t exponent, int line) {
  int64_t result = 1, b = base, e = exponent;
  while (e > 0) {
    if ((e & 1) && __builtin_mul_overflow(result, b, &result)) overflow(line, base, "**", exponent);
    e >>= 1;
    if (e > 0 && __builtin_mul_overflow(b, b, &b)) overflow(line, base, "**", exponent);
  }
  return result;
}

class Interpreter {
 public:
  Interpreter(const Dict& variables, const Limits& limits) : budget_(limits) {
    scopes_.emplace_back();
    for (const auto& [name, value] : global_functions()) scopes_.back()[name] = value;
    for (const auto& [name, value] : variables) scopes_.back()[name] = value;
  }

  std::string run(const Body& body) {
    exec_body(body);
    return std::move(out_);
  }

 private:
  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Undefined{name};
  }

  Flow exec_body(const Body& body) {
    for (const Node& node : body) {
      const Flow flow = exec(node);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  // Runs one node; a bound passed inside it is reported with the node's line.
  Flow exec(const Node& node) {
    try {
      Budget::charge(1);
      return exec_node(node);
    } catch (const LimitError& e) {
      template_error(node.line, e.what());
    }
  }

  void emit(const std::string& text) {
    Budget::check_string(out_.size() + text.size(), "the output", false);
    out_ += text;
  }

  Flow exec_node(const Node& node) {
    switch (node.kind) {
      case Node::Kind::kText:
        emit(node.text);
        return Flow::kNormal;
      case Node::Kind::kOutput:
        emit(eval(*node.expr).str());
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (const auto& [condition, branch] : node.branches)
          if (eval(*condition).truthy()) return exec_body(branch);
        return exec_body(node.else_body);
      case Node::Kind::kFor:
        return exec_for(node);
      case Node::Kind::kSet:
        exec_set(node, eval(*node.expr));
        return Flow::kNormal;
      case Node::Kind::kSetBlock: {
        std::string saved = std::move(out_);
        out_.clear();
        exec_body(node.body);
        std::string captured = std::move(out_);
        out_ = std::move(saved);
        exec_set(node, Value(std::move(captured)));
        return Flow::kNormal;
      }
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  void exec_set(const Node& node, Value value) {
    if (node.set_attribute) {
      Value target = lookup(node.targets[0]);
      if (!target.is_namespace())
        template_error(node.line, "cannot set an attribute of '" + node.targets[0] + "' (a " +
                                      target.type_name() + ", not a namespace)");
      if (value.holds_namespace())
        template_error(node.line,
                       "cannot store a namespace inside the namespace '" + node.targets[0] + "'");
      if (value.depth() >= Budget::limits().max_nesting)
        template_error(node.line, "lists and dicts nested more than " +
                                      std::to_string(Budget::limits().max_nesting) +
                                      " levels deep (Limits::max_nesting)");
      Dict& dict = target.mutable_dict();
      for (auto& [key, existing] : dict) {
        if (key == node.targets[1]) {
          existing = std::move(value);
          return;
        }
      }
      dict.emplace_back(node.targets[1], std::move(value));
      return;
    }
    assign(node.targets, value, node.line);
  }

  void assign(const std::vector<std::string>& targets, const Value& value, int line) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = value;
      return;
    }
    if (!value.is_list() || value.as_list().size() != targets.size())
      template_error(line, "cannot unpack a " + value.type_name() + " into " +
                               std::to_string(targets.size()) + " names");
    for (std::size_t i = 0; i < targets.size(); ++i)
      scopes_.back()[targets[i]] = value.as_list()[i];
  }

  Flow exec_for(const Node& node) {
    const Value iterable = eval(*node.expr);
    List items;
    if (iterable.is_list()) {
      items = iterable.as_list();
    } else if (iterable.is_dict()) {
      for (const auto& [key, value] : iterable.as_dict()) items.emplace_back(key);
    } else if (iterable.is_string()) {
      items = apply_filter("list", iterable, {}, node.line).as_list();
    } else if (!iterable.is_undefined()) {
      template_error(node.line, "cannot loop over a " + iterable.type_name() + " value");
    }
    scopes_.emplace_back();
    if (node.filter) {
      List kept;
      for (const Value& item : items) {
        Budget::iteration();
        assign(node.targets, item, node.line);
        if (eval(*node.filter).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Budget::iteration();
      assign(node.targets, items[i], node.line);
      Dict loop{{"index", i + 1},      {"index0", i},
                {"revindex", n - i},   {"revindex0", n - i - 1},
                {"first", i == 0},     {"last", i == n - 1},
                {"length", n},         {"depth", int64_t{1}},
                {"depth0", int64_t{0}}};
      if (i > 0) loop.emplace_back("previtem", items[i - 1]);
      if (i + 1 < n) loop.emplace_back("nextitem", items[i + 1]);
      scopes_.back()["loop"] = Value(std::move(loop));
      if (exec_body(node.body) == Flow::kBreak) break;
    }
    scopes_.pop_back();
    if (n == 0) return exec_body(node.else_body);
    return Flow::kNormal;
  }

  Arguments eval_arguments(const Expr& e, std::size_t first) {
    Arguments args;
    const std::size_t keywords = e.keyword_names.size();
    const std::size_t positional_end = e.children.size() - keywords;
    for (std::size_t i = first; i < positional_end; ++i)
      args.positional.push_back(eval(*e.children[i]));
    for (std::size_t k = 0; k < keywords; ++k)
      args.keyword.emplace_back(e.keyword_names[k], eval(*e.children[positional_end + k]));
    return args;
  }

  static void require_defined(const Value& v, int line) {
    if (v.is_undefined()) template_error(line, "'" + v.undefined_name() + "' is undefined");
  }

  Value get_attribute(const Value& object, const std::string& name, int line) {
    require_defined(object, line);
    if (object.is_dict()) {
      if (const Value* found = object.find(name)) return *found;
    }
    return Undefined{name};
  }

  Value get_item(const Value& object, const Value& key, int line) {
    require_defined(object, line);
    if (object.is_dict()) {
      if (key.is_string())
        if (const Value* found = object.find(key.as_string())) return *found;
      return Undefined{key.str()};
    }
    if ((object.is_list() || object.is_string()) && key.is_int()) {
      const List items =
          object.is_list() ? object.as_list() : apply_filter("list", object, {}, line).as_list();
      int64_t index = key.as_int();
      if (index < 0) index += static_cast<int64_t>(items.size());
      if (index < 0 || index >= static_cast<int64_t>(items.size()))
        return Undefined{"[" + key.str() + "]"};
      return items[index];
    }
    if (key.is_string()) return get_attribute(object, key.as_string(), line);
    template_error(line, "cannot index a " + object.type_name() + " with a " + key.type_name());
  }

  Value slice(const Expr& e) {
    const Value object = eval(*e.children[0]);
    require_defined(object, e.line);
    auto bound = [&](std::size_t i) -> std::optional<int64_t> {
      if (!e.children[i]) return std::nullopt;
      const Value v = eval(*e.children[i]);
      if (v.is_none()) return std::nullopt;
      if (!v.is_int()) template_error(e.line, "slice bounds must be integers");
      return v.as_int();
    };
    const auto start = bound(1), stop = bound(2), step_value = bound(3);
    const int64_t step = step_value.value_or(1);
    if (step == 0) template_error(e.line, "slice step cannot be zero");
    const List items =
        object.is_list() ? object.as_list() : apply_filter("list", object, {}, e.line).as_list();
    const auto n = static_cast<int64_t>(items.size());
    // Python's slice.indices(): start and stop clamped into [0, n] (step > 0) or [-1, n - 1]
    // (step < 0); then the count, so that no index is computed past the ends.
    auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
      if (!v) return fallback;
      const int64_t x = *v < 0 ? (*v < -n ? -1 : *v + n) : std::min(*v, n);
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t begin = clamp(start, step > 0 ? 0 : n - 1);
    const int64_t end = clamp(stop, step > 0 ? n : -1);
    const uint64_t stride =
        step > 0 ? static_cast<uint64_t>(step) : 0 - static_cast<uint64_t>(step);
    const uint64_t span = step > 0 ? (end > begin ? static_cast<uint64_t>(end - begin) : 0)
                                   : (begin > end ? static_cast<uint64_t>(begin - end) : 0);
    const uint64_t count = span == 0 ? 0 : (span - 1) / stride + 1;
    List out;
    for (uint64_t k = 0; k < count; ++k) {
      const uint64_t offset = k * stride;  // < span <= n + 1
      const int64_t i =
          step > 0 ? begin + static_cast<int64_t>(offset) : begin - static_cast<int64_t>(offset);
      out.push_back(items[static_cast<std::size_t>(i)]);
    }
    if (object.is_string()) {
      std::string s;
      for (const Value& c : out) s += c.as_string();
      return s;
    }
    return out;
  }

  Value eval(const Expr& e) {
    Budget::charge(1);
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.literal;
      case Expr::Kind::kName:
        return lookup(e.name);
      case Expr::Kind::kAttribute:
        return get_attribute(eval(*e.children[0]), e.name, e.line);
      case Expr::Kind::kItem:
        return get_item(eval(*e.children[0]), eval(*e.children[1]), e.line);
      case Expr::Kind::kSlice:
        return slice(e);
      case Expr::Kind::kCall:
        return call(e);
      case Expr::Kind::kFilter:
        return apply_filter(e.name, eval(*e.children[0]), eval_arguments(e, 1), e.line);
      case Expr::Kind::kTest:
        return apply_test(e.name, eval(*e.children[0]), eval_arguments(e, 1), e.line) != e.negated;
      case Expr::Kind::kNot:
        return !eval(*e.children[0]).truthy();
      case Expr::Kind::kNegate: {
        const Value v = eval(*e.children[0]);
        if (v.is_float()) return -v.as_double();
        if (v.is_int() || v.is_bool()) {
          if (v.as_int() == INT64_MIN) overflow(e.line, 0, "-", v.as_int());
          return -v.as_int();
        }
        template_error(e.line, "cannot negate a " + v.type_name());
      }
      case Expr::Kind::kAnd: {
        Value lhs = eval(*e.children[0]);
        return lhs.truthy() ? eval(*e.children[1]) : lhs;
      }
      case Expr::Kind::kOr: {
        Value lhs = eval(*e.children[0]);
        return lhs.truthy() ? lhs : eval(*e.children[1]);
      }
      case Expr::Kind::kConditional:
        if (eval(*e.children[0]).truthy()) return eval(*e.children[1]);
        return e.children[2] ? eval(*e.children[2]) : Value(Undefined{"else"});
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List items;
        for (const auto& child : e.children) items.push_back(eval(*child));
        return items;
      }
      case Expr::Kind::kDict: {
        Dict dict;
        for (std::size_t i = 0; i + 1 < e.children.size(); i += 2) {
          const Value key = eval(*e.children[i]);
          if (!key.is_string()) template_error(e.line, "dict keys must be strings");
          dict.emplace_back(key.as_string(), eval(*e.children[i + 1]));
        }
        return dict;
      }
      case Expr::Kind::kBinary:
        return binary(e.name, eval(*e.children[0]), eval(*e.children[1]), e.line);
    }
    template_error(e.line, "unknown expression");
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.children[0];
    Arguments args = eval_arguments(e, 1);
    if (callee.kind == Expr::Kind::kAttribute) {
      const Value object = eval(*callee.children[0]);
      require_defined(object, callee.line);
      if (has_method(object, callee.name)) return call_method(object, callee.name, args, e.line);
      const Value member = get_attribute(object, callee.name, e.line);
      if (member.is_function()) return member.as_function()(args);
      template_error(e.line,
                     "'" + callee.name + "' of a " + object.type_name() + " is not callable");
    }
    const Value function = eval(callee);
    if (function.is_function()) return function.as_function()(args);
    if (function.is_undefined())
      template_error(e.line, "'" + function.undefined_name() + "' is undefined");
    template_error(e.line, "a " + function.type_name() + " value is not callable");
  }

  static std::string concatenate(const std::string& a, const std::string& b) {
    Budget::check_string(a.size() + b.size(), "a concatenated string");
    return a + b;
  }

  static Value binary(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return a == b;
    if (op == "!=") return !(a == b);
    if (op == "~") return concatenate(a.str(), b.str());
    if (op == "in" || op == "notin") {
      bool found = false;
      if (b.is_string()) {
        if (!a.is_string()) template_error(line, "'in <string>' needs a string on the left");
        found = b.as_string().find(a.as_string()) != std::string::npos;
      } else if (b.is_dict()) {
        found = a.is_string() && b.find(a.as_string()) != nullptr;
      } else if (b.is_list()) {
        for (const Value& item : b.as_list()) found = found || item == a;
      } else {
        template_error(line,
                       "'in' needs a string, list or dict on the right, got " + b.type_name());
      }
      return op == "in" ? found : !found;
    }
    require_defined(a, line);
    require_defined(b, line);
    if (op == "+") {
      if (a.is_string() && b.is_string()) return concatenate(a.as_string(), b.as_string());
      if (a.is_list() && b.is_list()) {
        if (a.as_list().size() + b.as_list().size() >
            static_cast<std::size_t>(Budget::limits().max_range))
          throw LimitError("a list of more than " + std::to_string(Budget::limits().max_range) +
                           " items (Limits::max_range)");
        List joined = a.as_list();
        joined.insert(joined.end(), b.as_list().begin(), b.as_list().end());
        return joined;
      }
    }
    if (op == "*" && a.is_string() && b.is_int()) {
      const int64_t times = std::max<int64_t>(b.as_int(), 0);
      const std::size_t bytes = a.as_string().size();
      if (bytes > 0) {
        if (static_cast<uint64_t>(times) > Budget::limits().max_string_bytes / bytes)
          throw LimitError("a repeated string ('...' * " + std::to_string(times) +
                           ") longer than " + std::to_string(Budget::limits().max_string_bytes) +
                           " bytes (Limits::max_string_bytes)");
        Budget::check_string(bytes * static_cast<std::size_t>(times), "a repeated string");
      }
      std::string out;
      out.reserve(bytes * static_cast<std::size_t>(times));
      for (int64_t i = 0; i < times && bytes > 0; ++i) out += a.as_string();
      return out;
    }
    if (op == "<" || op == "<=" || op == ">" || op == ">=") {
      int order;
      if (a.is_string() && b.is_string()) {
        order = a.as_string().compare(b.as_string());
      } else if (a.is_number() && b.is_number()) {
        order = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
      } else {
        template_error(line, "cannot compare a " + a.type_name() + " with a " + b.type_name());
      }
      if (op == "<") return order < 0;
      if (op == "<=") return order <= 0;
      if (op == ">") return order > 0;
      return order >= 0;
    }
    if (!a.is_number() || !b.is_number())
      template_error(line, "unsupported operand types for " + op + ": " + a.type_name() + " and " +
                               b.type_name());
    const bool integral = !a.is_float() && !b.is_float();
    if (op == "/") {
      if (b.as_double() == 0) template_error(line, "division by zero");
      return a.as_double() / b.as_double();
    }
    if (integral) {
      const int64_t x = a.as_int(), y = b.as_int();
      int64_t r = 0;
      if (op == "+") {
        if (__builtin_add_overflow(x, y, &r)) overflow(line, x, op, y);
        return r;
      }
      if (op == "-") {
        if (__builtin_sub_overflow(x, y, &r)) overflow(line, x, op, y);
        return r;
      }
      if (op == "*") {
        if (__builtin_mul_overflow(x, y, &r)) overflow(line, x, op, y);
        return r;
      }
      if ((op == "//" || op == "%") && y == 0)
        template_error(
            line, "integer division or modulo by zero (" + std::to_string(x) + " " + op + " 0)");
      if (op == "//" || op == "%") {
        if (y == -1) {  // INT64_MIN // -1 traps in C++; x % -1 is 0
          if (op == "%") return int64_t{0};
          if (x == INT64_MIN) overflow(line, x, op, y);
          return -x;
        }
        const int64_t q = floor_div(x, y);
        return op == "//" ? q : x - q * y;
      }
      if (op == "**" && y >= 0) return int_power(x, y, line);
      // Python: a negative exponent gives a float.
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return x + y;
    if (op == "-") return x - y;
    if (op == "*") return x * y;
    if ((op == "//" || op == "%") && y == 0)
      template_error(line, "float division or modulo by zero (" + a.str() + " " + op + " 0)");
    if (op == "//") return std::floor(x / y);
    if (op == "%") {  // Python: the sign of the divisor
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return m;
    }
    if (op == "**") return std::pow(x, y);
    template_error(line, "unsupported operator " + op);
  }

  Budget budget_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
  std::string out_;
};

}  // namespace

std::string render(const Body& body, const Dict& variables, const Limits& limits) {
  return Interpreter(variables, limits).run(body);
}

}  // namespace kivi::text::jinja
