// Recursive-descent parser with Jinja2's operator precedence (lowest first): conditional
// expression, or, and, not, comparisons (== != < <= > >= in, not in), + -, ~, * / // %, **,
// unary - +, then primaries with postfix . [] () and the filter/test chain | and is.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "kivi/text/jinja_ast.h"
#include "kivi/text/jinja_lexer.h"
#include "kivi/util/error.h"

namespace kivi::text::jinja {

namespace {

Node make_node(Node::Kind kind, int line) {
  Node node;
  node.kind = kind;
  node.line = line;
  return node;
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Limits& limits)
      : tokens_(std::move(tokens)), limits_(limits) {}

  Body parse() {
    Body body = parse_body({});
    if (peek().kind != TokenKind::kEnd) fail("unexpected '" + peek_block_keyword() + "'");
    return body;
  }

 private:
  [[noreturn]] void fail(const std::string& message, int line = -1) const {
    throw Error("chat template line " + std::to_string(line < 0 ? peek().line : line) + ": " +
                message);
  }
  // One level of recursion (a nested block, parenthesis, bracket or unary operator).
  class Nest {
   public:
    explicit Nest(Parser& parser) : parser_(parser) {
      if (++parser_.depth_ > parser_.limits_.max_nesting)
        parser_.fail("blocks or expressions nested more than " +
                     std::to_string(parser_.limits_.max_nesting) +
                     " levels deep (Limits::max_nesting)");
    }
    ~Nest() { --parser_.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser& parser_;
  };

  // Appends `child` (may be null) to `parent`, keeping the tree's height bounded: a long chain
  // (1 + 1 + ... or x|f|f|...) is built without recursion but evaluated with it.
  void add(Expr& parent, ExprPtr child) {
    if (child) {
      parent.height = std::max(parent.height, child->height + 1);
      if (parent.height > limits_.max_nesting)
        fail("an expression nested more than " + std::to_string(limits_.max_nesting) +
                 " levels deep (Limits::max_nesting)",
             parent.line);
    }
    parent.children.push_back(std::move(child));
  }

  int64_t integer_literal(const Token& t) {
    try {
      return static_cast<int64_t>(std::stoll(t.value));
    } catch (const std::out_of_range&) {
      fail("integer literal " + t.value + " does not fit in 64 bits", t.line);
    }
  }

  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  Token next() {
    Token t = peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool is_op(const char* op, std::size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::kOperator && peek(ahead).value == op;
  }
  bool is_name(const char* name, std::size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::kName && peek(ahead).value == name;
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "', got '" + peek().value + "'");
    next();
  }
  void expect_block_end() {
    if (peek().kind != TokenKind::kBlockEnd) fail("expected '%}', got '" + peek().value + "'");
    next();
  }
  std::string expect_name() {
    if (peek().kind != TokenKind::kName) fail("expected a name, got '" + peek().value + "'");
    return next().value;
  }
  std::string peek_block_keyword() const {
    return peek().kind == TokenKind::kBlockBegin ? peek(1).value : peek().value;
  }

  // Parses nodes until a block tag whose keyword is in `ends` (left unconsumed after its
  // keyword is read: the caller finishes that tag) or the end of input.
  Body parse_body(const std::vector<std::string>& ends) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.kind == TokenKind::kEnd) {
        if (!ends.empty()) fail("missing {% " + ends.back() + " %}");
        return body;
      }
      if (t.kind == TokenKind::kText) {
        Node node = make_node(Node::Kind::kText, t.line);
        node.text = next().value;
        body.push_back(std::move(node));
      } else if (t.kind == TokenKind::kVariableBegin) {
        next();
        Node node = make_node(Node::Kind::kOutput, t.line);
        node.expr = parse_expression();
        if (peek().kind != TokenKind::kVariableEnd)
          fail("expected '}}', got '" + peek().value + "'");
        next();
        body.push_back(std::move(node));
      } else if (t.kind == TokenKind::kBlockBegin) {
        const std::string keyword = peek(1).value;
        if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) return body;
        next();
        parse_statement(body);
      } else {
        fail("unexpected token '" + t.value + "'");
      }
    }
  }

  // Reads the block tag "{% <keyword>" that parse_body stopped at.
  std::string take_end_keyword() {
    next();  // {%
    return next().value;
  }

  void parse_statement(Body& body) {
    const Nest nest(*this);
    const int line = peek().line;
    const std::string keyword = expect_name();
    if (keyword == "if") {
      body.push_back(parse_if(line));
    } else if (keyword == "for") {
      body.push_back(parse_for(line));
    } else if (keyword == "set") {
      body.push_back(parse_set(line));
    } else if (keyword == "break" || keyword == "continue") {
      expect_block_end();
      body.push_back(
          make_node(keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, line));
    } else if (keyword == "generation") {
      // transformers' assistant-mask marker: renders its body unchanged.
      expect_block_end();
      Body inner = parse_body({"endgeneration"});
      take_end_keyword();
      expect_block_end();
      for (auto& node : inner) body.push_back(std::move(node));
    } else {
      fail("unsupported template tag '{% " + keyword +
               " %}' (supported: if, for, set, break, continue, generation)",
           line);
    }
  }

  Node parse_if(int line) {
    Node node = make_node(Node::Kind::kIf, line);
    ExprPtr condition = parse_expression();
    expect_block_end();
    while (true) {
      Body branch = parse_body({"elif", "else", "endif"});
      node.branches.emplace_back(std::move(condition), std::move(branch));
      const std::string keyword = take_end_keyword();
      if (keyword == "elif") {
        condition = parse_expression();
        expect_block_end();
        continue;
      }
      if (keyword == "else") {
        expect_block_end();
        node.else_body = parse_body({"endif"});
        take_end_keyword();
      }
      expect_block_end();
      return node;
    }
  }

  Node parse_for(int line) {
    Node node = make_node(Node::Kind::kFor, line);
    const bool parenthesized = is_op("(");
    if (parenthesized) next();
    node.targets.push_back(expect_name());
    while (is_op(",")) {
      next();
      node.targets.push_back(expect_name());
    }
    if (parenthesized) expect_op(")");
    if (!is_name("in")) fail("expected 'in' in the for tag");
    next();
    node.expr = parse_expression(/*with_condition=*/false);
    if (is_name("if")) {
      next();
      node.filter = parse_expression(false);
    }
    if (is_name("recursive")) fail("recursive for loops are not supported");
    expect_block_end();
    node.body = parse_body({"else", "endfor"});
    if (take_end_keyword() == "else") {
      expect_block_end();
      node.else_body = parse_body({"endfor"});
      take_end_keyword();
    }
    expect_block_end();
    return node;
  }

  Node parse_set(int line) {
    Node node = make_node(Node::Kind::kSet, line);
    node.targets.push_back(expect_name());
    if (is_op(".")) {
      next();
      node.targets.push_back(expect_name());
      node.set_attribute = true;
    } else {
      while (is_op(",")) {
        next();
        node.targets.push_back(expect_name());
      }
    }
    if (peek().kind == TokenKind::kBlockEnd && !node.set_attribute && node.targets.size() == 1) {
      next();
      node.kind = Node::Kind::kSetBlock;
      node.body = parse_body({"endset"});
      take_end_keyword();
      expect_block_end();
      return node;
    }
    expect_op("=");
    node.expr = parse_tuple_or_expression();
    expect_block_end();
    return node;
  }

  ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // "a, b" without brackets is a tuple (in set statements).
  ExprPtr parse_tuple_or_expression() {
    ExprPtr first = parse_expression();
    if (!is_op(",")) return first;
    auto tuple = make(Expr::Kind::kTuple, first->line);
    add(*tuple, std::move(first));
    while (is_op(",")) {
      next();
      add(*tuple, parse_expression());
    }
    return tuple;
  }

  ExprPtr parse_expression(bool with_condition = true) {
    const Nest nest(*this);
    ExprPtr expr = parse_or();
    if (!with_condition) return expr;
    while (is_name("if")) {
      next();
      auto conditional = make(Expr::Kind::kConditional, expr->line);
      add(*conditional, parse_or());
      add(*conditional, std::move(expr));
      if (is_name("else")) {
        next();
        add(*conditional, parse_expression());
      } else {
        add(*conditional, nullptr);
      }
      expr = std::move(conditional);
    }
    return expr;
  }

  ExprPtr binary(Expr::Kind kind, std::string op, ExprPtr lhs, ExprPtr rhs) {
    auto e = make(kind, lhs->line);
    e->name = std::move(op);
    add(*e, std::move(lhs));
    add(*e, std::move(rhs));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr lhs = parse_and();
    while (is_name("or")) {
      next();
      lhs = binary(Expr::Kind::kOr, "or", std::move(lhs), parse_and());
    }
    return lhs;
  }

  ExprPtr parse_and() {
    ExprPtr lhs = parse_not();
    while (is_name("and")) {
      next();
      lhs = binary(Expr::Kind::kAnd, "and", std::move(lhs), parse_not());
    }
    return lhs;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const Nest nest(*this);
      const int line = next().line;
      auto e = make(Expr::Kind::kNot, line);
      add(*e, parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr lhs = parse_math1();
    bool compared = false;
    // Chained comparisons (a < b < c) mean "a < b and b < c" in Jinja; templates rarely use
    // them, so they are refused rather than evaluated differently.
    while (true) {
      std::string op;
      if (peek().kind == TokenKind::kOperator &&
          (peek().value == "==" || peek().value == "!=" || peek().value == "<" ||
           peek().value == "<=" || peek().value == ">" || peek().value == ">=")) {
        op = next().value;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        op = "notin";
      } else {
        return lhs;
      }
      if (compared) fail("chained comparisons are not supported");
      compared = true;
      lhs = binary(Expr::Kind::kBinary, op, std::move(lhs), parse_math1());
    }
  }

  ExprPtr parse_math1() {
    ExprPtr lhs = parse_concat();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().value;
      lhs = binary(Expr::Kind::kBinary, op, std::move(lhs), parse_concat());
    }
    return lhs;
  }

  ExprPtr parse_concat() {
    ExprPtr lhs = parse_math2();
    while (is_op("~")) {
      next();
      lhs = binary(Expr::Kind::kBinary, "~", std::move(lhs), parse_math2());
    }
    return lhs;
  }

  ExprPtr parse_math2() {
    ExprPtr lhs = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().value;
      lhs = binary(Expr::Kind::kBinary, op, std::move(lhs), parse_pow());
    }
    return lhs;
  }

  ExprPtr parse_pow() {
    ExprPtr lhs = parse_unary();
    while (is_op("**")) {
      next();
      lhs = binary(Expr::Kind::kBinary, "**", std::move(lhs), parse_unary());
    }
    return lhs;
  }

  ExprPtr parse_unary(bool with_filter = true) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Nest nest(*this);
      const Token sign = next();
      ExprPtr operand = parse_unary(false);
      if (sign.value == "-") {
        node = make(Expr::Kind::kNegate, sign.line);
        add(*node, std::move(operand));
      } else {
        node = std::move(operand);
      }
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_chain(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token t = next();
    switch (t.kind) {
      case TokenKind::kName: {
        if (t.value == "true" || t.value == "True") return literal(Value(true), t.line);
        if (t.value == "false" || t.value == "False") return literal(Value(false), t.line);
        if (t.value == "none" || t.value == "None") return literal(Value(None{}), t.line);
        auto e = make(Expr::Kind::kName, t.line);
        e->name = t.value;
        return e;
      }
      case TokenKind::kString: {
        std::string text = t.value;
        while (peek().kind == TokenKind::kString) text += next().value;  // implicit concatenation
        return literal(Value(std::move(text)), t.line);
      }
      case TokenKind::kInteger:
        return literal(Value(integer_literal(t)), t.line);
      case TokenKind::kFloat:  // Python: too large a float literal is inf
        return literal(Value(std::strtod(t.value.c_str(), nullptr)), t.line);
      case TokenKind::kOperator:
        if (t.value == "(") {
          if (is_op(")")) {
            next();
            return make(Expr::Kind::kTuple, t.line);
          }
          ExprPtr inner = parse_expression();
          if (is_op(",")) {
            auto tuple = make(Expr::Kind::kTuple, t.line);
            add(*tuple, std::move(inner));
            while (is_op(",")) {
              next();
              if (is_op(")")) break;
              add(*tuple, parse_expression());
            }
            inner = std::move(tuple);
          }
          expect_op(")");
          return inner;
        }
        if (t.value == "[") {
          auto list = make(Expr::Kind::kList, t.line);
          while (!is_op("]")) {
            add(*list, parse_expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("]");
          return list;
        }
        if (t.value == "{") {
          auto dict = make(Expr::Kind::kDict, t.line);
          while (!is_op("}")) {
            add(*dict, parse_expression());
            expect_op(":");
            add(*dict, parse_expression());
            if (!is_op(",")) break;
            next();
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    fail("unexpected '" + t.value + "' in an expression", t.line);
  }

  ExprPtr literal(Value value, int line) {
    auto e = make(Expr::Kind::kLiteral, line);
    e->literal = std::move(value);
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        next();
        auto e = make(Expr::Kind::kAttribute, node->line);
        if (peek().kind == TokenKind::kInteger) {
          e->kind = Expr::Kind::kItem;
          add(*e, std::move(node));
          add(*e, literal(Value(integer_literal(next())), e->line));
        } else {
          e->name = expect_name();
          add(*e, std::move(node));
        }
        node = std::move(e);
      } else if (is_op("[")) {
        next();
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node), Expr::Kind::kCall, "");
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target) {
    const int line = target->line;
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!is_op("]")) {
      if (is_op(":")) {
        next();
        is_slice = true;
        if (++part > 2) fail("too many ':' in a slice");
        continue;
      }
      if (parts[part]) fail("expected ']' or ':' in a subscript");
      parts[part] = parse_expression();
    }
    expect_op("]");
    if (!is_slice) {
      if (!parts[0]) fail("empty subscript");
      auto e = make(Expr::Kind::kItem, line);
      add(*e, std::move(target));
      add(*e, std::move(parts[0]));
      return e;
    }
    auto e = make(Expr::Kind::kSlice, line);
    add(*e, std::move(target));
    for (auto& p : parts) add(*e, std::move(p));
    return e;
  }

  // Parses "(args)" and returns a call/filter/test node whose first child is `subject`.
  ExprPtr parse_call(ExprPtr subject, Expr::Kind kind, std::string name) {
    auto e = make(kind, subject->line);
    e->name = std::move(name);
    add(*e, std::move(subject));
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == TokenKind::kName && is_op("=", 1)) {
        e->keyword_names.push_back(next().value);
        next();
        add(*e, parse_expression());
      } else {
        if (!e->keyword_names.empty()) fail("positional argument after a keyword argument");
        add(*e, parse_expression());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
    return e;
  }

  ExprPtr parse_filter_chain(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        next();
        std::string name = expect_name();
        if (is_op("(")) {
          node = parse_call(std::move(node), Expr::Kind::kFilter, name);
        } else {
          auto e = make(Expr::Kind::kFilter, node->line);
          e->name = std::move(name);
          add(*e, std::move(node));
          node = std::move(e);
        }
      } else if (is_name("is")) {
        next();
        bool negated = false;
        if (is_name("not")) {
          next();
          negated = true;
        }
        std::string name = expect_name();
        ExprPtr test;
        if (is_op("(")) {
          test = parse_call(std::move(node), Expr::Kind::kTest, name);
        } else {
          test = make(Expr::Kind::kTest, node->line);
          test->name = name;
          add(*test, std::move(node));
          // One bare argument: "is equalto 3", "is sameas none".
          const Token& t = peek();
          const bool starts_argument =
              (t.kind == TokenKind::kName && t.value != "else" && t.value != "or" &&
               t.value != "and" && t.value != "if" && t.value != "is") ||
              t.kind == TokenKind::kString || t.kind == TokenKind::kInteger ||
              t.kind == TokenKind::kFloat ||
              (t.kind == TokenKind::kOperator && (t.value == "[" || t.value == "{"));
          if (starts_argument) add(*test, parse_postfix(parse_primary()));
        }
        test->negated = negated;
        node = std::move(test);
      } else if (is_op("(")) {
        node = parse_call(std::move(node), Expr::Kind::kCall, "");
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  const Limits& limits_;
  std::size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse_template(const std::string& source, const Limits& limits) {
  return Parser(tokenize_template(source), limits).parse();
}

}  // namespace kivi::text::jinja
