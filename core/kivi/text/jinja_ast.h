// The syntax tree of a parsed Jinja template (the subset chat templates use).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kivi/text/jinja_limits.h"
#include "kivi/text/jinja_value.h"

namespace kivi::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kAttribute,  // children[0].name
    kItem,       // children[0][children[1]]
    kSlice,      // children[0][children[1]:children[2]:children[3]] (null parts absent)
    kCall,       // children[0](args...)
    kFilter,     // children[0] | name(args...)
    kTest,       // children[0] is [not] name(args...)
    kNot,        // not children[0]
    kNegate,     // -children[0]
    kBinary,     // children[0] <name> children[1]: + - * / // % ** ~ == != < <= > >= in notin
    kAnd,
    kOr,
    kConditional,  // children[1] if children[0] else children[2] (null: undefined)
    kList,
    kTuple,
    kDict,  // children alternate key, value
  };
  Kind kind;
  int line = 0;
  int height = 1;  // levels of this subtree (bounded by Limits::max_nesting)
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  // For calls and filters: the last keyword_names.size() arguments are keyword arguments.
  std::vector<std::string> keyword_names;
  bool negated = false;
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches, else_body
    kFor,       // for targets in expr [if filter]: body [else else_body]
    kSet,       // set targets = expr; targets = {ns, attr} when set_attribute
    kSetBlock,  // {% set target %}body{% endset %}
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  bool set_attribute = false;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
};

// Parses a template; throws kivi::Error naming the line and the unsupported construct, or
// the bound passed (blocks or expressions nested more than limits.max_nesting levels).
Body parse_template(const std::string& source, const Limits& limits = {});

}  // namespace kivi::text::jinja
