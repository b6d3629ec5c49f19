// The Jinja subset: whitespace rules, expressions and the errors for what it does not support.
#include "kivi_catch.h"

#include "kivi/text/chat_template.h"
#include "kivi/util/error.h"

namespace {

std::string render(const std::string& source,
                   const nlohmann::json& variables = nlohmann::json::object()) {
  return kivi::text::ChatTemplate(source).render(nlohmann::json::array(), false, variables);
}

}  // namespace

TEST_CASE("jinja whitespace control follows trim_blocks and lstrip_blocks", "[text][jinja]") {
  CHECK(render("a\n  {% if true %}\n  b\n  {% endif %}\nc\n") == "a\n  b\nc");
  CHECK(render("a  {%- if true -%}  b  {%- endif %}") == "ab");
  CHECK(render("{{ 'x' }}  {% if true %}y{% endif %}") == "x  y");
  CHECK(render("a {# note #}\nb") == "a b");
  CHECK(render("x\r\ny") == "x\ny");
}

TEST_CASE("jinja expressions follow Python semantics", "[text][jinja]") {
  CHECK(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}") ==
        "3 -4 2 3.5 1024");
  CHECK(render("{{ [1, 'a', none, true] }}") == "[1, 'a', None, True]");
  CHECK(render("{{ 'ab' ~ 1 }} {{ 'x' if false else 'y' }} {{ 'b' in 'abc' }}") == "ab1 y True");
  CHECK(render("{{ '  pad  ' | trim }}|{{ ' s '.strip() }}|{{ 'a,b'.split(',') | join('-') }}") ==
        "pad|s|a-b");
  CHECK(render("{{ {'a': [1, 2.5, 'é\"']} | tojson }}") == "{\"a\": [1, 2.5, \"é\\\"\"]}");
  CHECK(render("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }}{{ ', ' if not loop.last "
               "}}{% endfor %}") == "a=1, b=2");
  CHECK(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% "
               "endfor %}{{ ns.n }}") == "6");
  CHECK(render("{{ x is defined }} {{ x is not none }} {{ y }}", {{"y", nullptr}}) ==
        "False True None");
  CHECK(
      render("{% for m in [1,2,3] %}{% if m == 2 %}{% continue %}{% endif %}{{ m }}{% endfor %}") ==
      "13");
  CHECK(render("{{ [1,2,3][1:] }} {{ 'hello'[::-1] }} {{ [1,2,3][-1] }}") == "[2, 3] olleh 3");
}

TEST_CASE("unsupported jinja is an error, not a different prompt", "[text][jinja][errors]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(kivi::text::ChatTemplate("{% macro f() %}x{% endmacro %}"),
                    Contains("unsupported template tag") && Contains("macro"));
  CHECK_THROWS_WITH(kivi::text::ChatTemplate("{% include 'x' %}"), Contains("line 1"));
  CHECK_THROWS_WITH(kivi::text::ChatTemplate("{% if x %}"), Contains("endif"));
  CHECK_THROWS_WITH(render("{{ x | wordwrap }}"), Contains("unsupported filter 'wordwrap'"));
  CHECK_THROWS_WITH(render("{{ x.y }}"), Contains("'x' is undefined"));
  CHECK_THROWS_WITH(render("{{ 'a' + 1 }}"), Contains("unsupported operand"));
  CHECK_THROWS_WITH(render("{{ raise_exception('boom') }}"), Contains("boom"));
}
