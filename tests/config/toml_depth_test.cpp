// TOML nested past the bounds (dotted keys, table headers, inline values): an error naming the
// file and line, not a stack overflow. The inputs are built here.
#include "kivi_catch.h"

#include <string>

#include "kivi/config/config_table.h"
#include "kivi/util/error.h"
#include "kivi/util/toml_limits.h"

using Catch::Matchers::Contains;
using kivi::ConfigTable;

namespace {

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

TEST_CASE("TOML dotted keys and headers nested past the bound are errors", "[config]") {
  CHECK_THROWS_WITH(
      ConfigTable::parse_text("x = 1\n" + repeat("a.", 200000) + "a = 1\n", "run.toml"),
      Contains("run.toml:2") && Contains("more than 64 parts"));
  CHECK_THROWS_WITH(ConfigTable::parse_text("[" + repeat("a.", 200000) + "a]\n", "run.toml"),
                    Contains("run.toml:1") && Contains("more than 64 parts"));
  CHECK_THROWS_WITH(ConfigTable::parse_text("x = {" + repeat("a.", 100) + "a = 1}\n", "r.toml"),
                    Contains("r.toml:1"));
  // Inline arrays and tables: toml++'s own bound (256), an error with the position.
  CHECK_THROWS_WITH(
      ConfigTable::parse_text("x = " + repeat("[", 100000) + repeat("]", 100000), "run.toml"),
      Contains("run.toml") && Contains("malformed TOML"));
}

TEST_CASE("TOML dots in strings, comments and numbers do not count", "[config]") {
  const std::string dots = repeat(".", 500);
  const toml::table t = ConfigTable::parse_text(
      "a = \"" + dots + "\"\nb = '" + dots + "'\n# " + dots + "\nc = \"\"\"\n" + dots +
          "\n\"\"\"\nd = [1.5, 2.5, 3.5]\n\"q.r\".s = 1\n" + repeat("k.", 10) + "k = 2\n",
      "run.toml");
  CHECK(t["a"].value<std::string>() == dots);
  CHECK(t["d"].as_array()->size() == 3);
  CHECK(t["k"]["k"]["k"].is_table());
  CHECK_NOTHROW(kivi::check_toml_key_depth(repeat("a.", 63) + "a = 1", "x"));  // 64 parts
  CHECK_THROWS(kivi::check_toml_key_depth(repeat("a.", 64) + "a = 1", "x"));
}
