// run.toml validation: unknown keys, wrong types and bad values are errors that give
// file:line:column and the expected form; plugin option errors are mapped back to run.toml.
#include <cstdio>
#include <fstream>

#include "kivi_catch.h"

#include "host_config.h"
#include "kivi/config/config_table.h"
#include "kivi/util/error.h"

using Catch::Contains;
using kivi::ConfigTable;

namespace {
kivi::host::HostConfig parse(const std::string& text) {
  const toml::table root = ConfigTable::parse_text(text, "run.toml");
  return kivi::host::parse_host_config(root, "run.toml");
}
}  // namespace

TEST_CASE("a valid config is read with its defaults", "[config]") {
  const auto config = parse("mode = \"plugins\"\n[cache]\nbackend = \"fp32\"\nchunk_tokens = 64\n");
  CHECK(config.mode == "plugins");
  CHECK(config.cache.name == "fp32");
  CHECK(config.cache.explicit_choice);
  CHECK_THAT(config.cache.options_toml, Contains("chunk_tokens = 64"));
  CHECK(config.cache.positions.at("chunk_tokens") == "4:1");
  CHECK(config.attention.name == "kivi");  // reads the default kivi cache and dense ones
  CHECK_FALSE(config.attention.explicit_choice);
  CHECK(config.default_plugin_dir);
}

TEST_CASE("plugin folders are relative to run.toml", "[config]") {
  const toml::table root =
      ConfigTable::parse_text("[plugins]\ndirs = [\"p\", \"/abs\"]\n", "/etc/kivi/run.toml");
  const auto config = kivi::host::parse_host_config(root, "/etc/kivi/run.toml");
  REQUIRE(config.plugin_dirs.size() == 2);
  CHECK(config.plugin_dirs[0] == "/etc/kivi/p");
  CHECK(config.plugin_dirs[1] == "/abs");
}

TEST_CASE("malformed TOML names the file, line and column", "[config]") {
  CHECK_THROWS_WITH(parse("mode = \"check\"\n[cache\n"),
                    Contains("run.toml:2:") && Contains("malformed TOML"));
  CHECK_THROWS_WITH(parse("mode = \n"), Contains("run.toml:1:") && Contains("malformed TOML"));
}

TEST_CASE("unknown keys are errors listing the known ones", "[config]") {
  CHECK_THROWS_WITH(
      parse("mode = \"check\"\nmodel_path = \"x\"\n"),
      Contains("run.toml:2:1: model_path: unknown key; expected one of: attention, bench, cache,"));
  CHECK_THROWS_WITH(
      parse("[plugins]\ndir = [\"x\"]\n"),
      Contains("run.toml:2:1: plugins.dir: unknown key") && Contains("default_dir, dirs"));
  CHECK_THROWS_WITH(parse("[output]\njsn = \"x\"\n"), Contains("output.jsn: unknown key"));
}

TEST_CASE("wrong types and bad values say what was expected", "[config]") {
  CHECK_THROWS_WITH(parse("mode = 3\n"),
                    Contains("run.toml:1:8: mode: expected a string, got an integer 3"));
  CHECK_THROWS_WITH(
      parse("mode = \"serv\"\n"),
      Contains("mode: \"serv\" is not allowed; expected one of: bench, chat, check,"));
  CHECK_THROWS_WITH(parse("[plugins]\ndirs = \"x\"\n"),
                    Contains("plugins.dirs: expected an array of strings"));
  CHECK_THROWS_WITH(parse("[plugins]\ndirs = [\"x\", 2]\n"), Contains("element 1 is an integer 2"));
  CHECK_THROWS_WITH(parse("[plugins]\ndefault_dir = \"yes\"\n"),
                    Contains("expected true or false"));
  CHECK_THROWS_WITH(parse("cache = \"fp16\"\n"), Contains("cache: expected a table, got a string"));
  CHECK_THROWS_WITH(parse("[cache]\nbackend = 16\n"),
                    Contains("run.toml:2:11: cache.backend: expected a string"));
}

TEST_CASE("ConfigTable range and choice checks", "[config]") {
  const toml::table t = ConfigTable::parse_text("bits = 3\nratio = 2\nname = \"x\"\n", "opts");
  ConfigTable table(t, "opts", "cache");
  CHECK_THROWS_WITH(
      table.get_int_choice("bits", 2, {2, 4, 8, 16}),
      Contains("opts:1:8: cache.bits: 3 is not allowed; expected one of: 2, 4, 8, 16"));
  CHECK(table.get_double("ratio", 0.0) == 2.0);  // integers are accepted where numbers are
  CHECK_THROWS_WITH(table.get_int_in("ratio", 0, 3, 5),
                    Contains("2 is out of range; expected 3 <= value <= 5"));
  CHECK(table.get_int("missing", 7) == 7);
  CHECK_THROWS_WITH(table.finish(), Contains("cache.name: unknown key"));
  table.get_string("name", "");
  CHECK_NOTHROW(table.finish());
}

TEST_CASE("plugin option errors are mapped to the key's place in run.toml", "[config]") {
  const std::map<std::string, std::string> positions = {{"k_bits", "7:1"}};
  const std::string mapped = kivi::host::map_plugin_error(
      "kv_cache plugin \"kivi\" (/p/libkivi.so): <plugin options>:1:10: k_bits: 3 is not allowed; "
      "expected one of: 2, 4",
      "run.toml", "cache", positions);
  CHECK(mapped ==
        "run.toml:7:1: cache.k_bits: 3 is not allowed; expected one of: 2, 4  [kv_cache plugin "
        "\"kivi\" (/p/libkivi.so)]");
}

TEST_CASE("output paths are checked when the config is read, before any work", "[config]") {
  const std::string missing = "/nonexistent-kivi-dir/out.json";
  CHECK_THROWS_WITH(parse("mode = \"check\"\n[output]\njson = \"" + missing + "\"\n"),
                    Contains("run.toml:3:") && Contains("output.json: cannot write") &&
                        Contains("the directory \"/nonexistent-kivi-dir\" does not exist"));
  CHECK_THROWS_WITH(parse("mode = \"check\"\n[output]\njson = \"/tmp\"\n"),
                    Contains("output.json: cannot write \"/tmp\": it is a directory"));
  CHECK_THROWS_WITH(parse("mode = \"check\"\n[bench]\ntrace = \"/dev/null/trace.json\"\n"),
                    Contains("bench.trace: cannot write") && Contains("is not a directory"));
  CHECK_THROWS_WITH(
      parse("mode = \"check\"\n[serve]\nprofile_trace = \"/dev/zero\"\n"),
      Contains("serve.profile_trace: cannot write") && Contains("not a regular file"));
  // A writable place passes, and nothing is created by the check.
  const std::string fine = "/tmp/kivi-config-output-check.json";
  std::remove(fine.c_str());
  CHECK(parse("mode = \"check\"\n[output]\njson = \"" + fine + "\"\n").json_output == fine);
  CHECK_FALSE(std::ifstream(fine).good());
}
