// docs/config.md (and the [serve] table of docs/server.md) against the run.toml parser, both
// ways: every documented key is accepted where the page puts it and its documented default is
// the parser's (setting the key to it changes nothing), and every key the parser accepts is
// documented (the parser lists the keys it knows when it meets an unknown one).
#include "kivi_catch.h"

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "host_config.h"
#include "kivi/config/config_table.h"
#include "kivi/util/error.h"
#include "test_paths.h"

using kivi::ConfigTable;

namespace {

struct DocKey {
  std::string table;  // "" (top level), "generate", "[tokenize.messages]", ...
  std::string key;
  std::string default_cell;  // as written, e.g. "`32`", "required"
  std::string where;         // file:line
};

// Every row of every key table in `file`: a heading with a `[table]` or `[[table]]` in backticks
// (or "Top level") sets the table; a row's first cell is the `key`; the "default" column is found
// by its header.
std::vector<DocKey> documented_keys(const std::filesystem::path& file) {
  std::ifstream in(file);
  REQUIRE(in.good());
  std::vector<DocKey> keys;
  std::string table;
  bool in_table_section = false;
  int default_column = -1, line_number = 0;
  // The first `[table]` of the heading (later ones are mentions: "with `[perplexity]`").
  const std::regex heading(R"(^#+ .*?`(\[\[?)([a-z_.]+)\]\]?`)"), top(R"(^#+ Top level)");
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    std::smatch m;
    if (line.rfind("#", 0) == 0) {
      in_table_section = std::regex_search(line, m, heading) || std::regex_search(line, top);
      table = !in_table_section || m.empty()
                  ? ""
                  : (m[1].str() == "[[" ? "[" + m[2].str() + "]" : m[2].str());
      default_column = -1;
      continue;
    }
    if (!in_table_section || line.rfind("|", 0) != 0) continue;
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) {
      const size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    if (cells.empty()) continue;
    if (cells[0] == "key") {
      for (size_t i = 0; i < cells.size(); ++i)
        if (cells[i] == "default") default_column = static_cast<int>(i);
      continue;
    }
    if (cells[0].rfind("---", 0) == 0) continue;
    REQUIRE(std::regex_match(cells[0], m, std::regex("`([a-z_]+)`")));
    INFO(file.string() << ":" << line_number);
    REQUIRE(default_column >= 0);
    REQUIRE(static_cast<int>(cells.size()) > default_column);
    keys.push_back({table, m[1].str(), cells[default_column],
                    file.string() + ":" + std::to_string(line_number)});
  }
  return keys;
}

// The least config in which `table` exists and the parser accepts it, with `extra` (TOML lines)
// added inside the table.
std::string config_with(const std::string& table, const std::string& extra) {
  if (table.empty()) return extra;
  if (table == "[tokenize.messages]")
    return "[tokenize]\ntokenizer = \"t\"\n[[tokenize.messages]]\ncontent = \"x\"\n" + extra;
  if (table == "[compare.variants]")
    return "[[compare.variants]]\nname = \"a\"\n" + extra + "[[compare.variants]]\nname = \"b\"\n";
  const std::map<std::string, std::string> required = {{"model", "path = \"m\"\n"},
                                                       {"perplexity", "text = \"t\"\n"},
                                                       {"tokenize", "tokenizer = \"t\"\n"}};
  const auto it = required.find(table);
  return "[" + table + "]\n" + (it == required.end() ? "" : it->second) + extra;
}

kivi::host::HostConfig parse(const std::string& text) {
  const toml::table root = ConfigTable::parse_text(text, "/doc/run.toml");
  return kivi::host::parse_host_config(root, "/doc/run.toml");
}

// The keys the parser knows in `table`, from its message about an unknown one.
std::set<std::string> parser_keys(const std::string& table) {
  try {
    parse(config_with(table, "zz_not_a_key = 1\n"));
  } catch (const kivi::Error& e) {
    const std::string message = e.what();
    const std::string marker = "zz_not_a_key: unknown key; expected one of: ";
    const size_t at = message.find(marker);
    INFO(message);
    REQUIRE(at != std::string::npos);
    std::set<std::string> keys;
    std::stringstream list(message.substr(at + marker.size()));
    for (std::string key; std::getline(list, key, ',');)
      keys.insert(key.substr(key.find_first_not_of(' ')));
    return keys;
  }
  FAIL("an unknown key in [" << table << "] was accepted");
  return {};
}

// `32`, `"auto"`, `[]`, `[4096, 32768]`, `true`: a TOML value to set the key to.
std::optional<std::string> literal_default(const std::string& cell) {
  std::smatch m;
  if (!std::regex_match(cell, m, std::regex("`([^`]+)`"))) return std::nullopt;
  const std::string value = m[1].str();
  if (std::regex_match(value, std::regex(R"(\[[a-z]+\])")))
    return std::nullopt;  // "[cache]": another table's
  return value;
}

std::vector<DocKey> all_documented_keys() {
  std::vector<DocKey> keys = documented_keys(kivi::test::source_dir() / "docs" / "config.md");
  const std::vector<DocKey> serve =
      documented_keys(kivi::test::source_dir() / "docs" / "server.md");
  keys.insert(keys.end(), serve.begin(), serve.end());
  return keys;
}

}  // namespace

TEST_CASE("docs/config.md: every documented key is accepted with its documented default",
          "[config][docs]") {
  const std::vector<DocKey> keys = all_documented_keys();
  REQUIRE(keys.size() > 60);
  for (const DocKey& k : keys) {
    INFO(k.where << ": [" << k.table << "] " << k.key << " (default " << k.default_cell << ")");
    // [cache] and [attention] take any key besides `backend`: the plugin checks its options.
    if (k.table != "cache" && k.table != "attention") CHECK(parser_keys(k.table).count(k.key) == 1);
    const std::optional<std::string> value = literal_default(k.default_cell);
    if (!value) {
      // Not a value: a key without a default, or one whose default is another table's.
      CHECK(std::regex_match(k.default_cell, std::regex(R"(required|none|`\[[a-z]+\]`)")));
      continue;
    }
    const kivi::host::HostConfig without = parse(config_with(k.table, ""));
    const kivi::host::HostConfig with = parse(config_with(k.table, k.key + " = " + *value + "\n"));
    CHECK(with == without);
  }
}

TEST_CASE("docs/config.md: every key the parser accepts is documented", "[config][docs]") {
  std::map<std::string, std::set<std::string>> documented;
  for (const DocKey& k : all_documented_keys()) documented[k.table].insert(k.key);
  // [cache] and [attention] take the plugin's own options besides `backend` (documented as prose).
  for (const std::string table :
       {"plugins", "output", "memory", "model", "generate", "perplexity", "tokenize",
        "[tokenize.messages]", "[compare.variants]", "bench", "serve"}) {
    for (const std::string& key : parser_keys(table)) {
      INFO("[" << table << "] " << key
               << " is accepted by the parser but not in docs/config.md or docs/server.md");
      CHECK(documented[table].count(key) == 1);
    }
  }
  // The top level's keys are its tables and `mode`; every table has its section.
  for (const std::string& key : parser_keys("")) {
    if (key == "mode") continue;
    INFO("top-level table [" << key << "] has no section");
    CHECK((documented.count(key) == 1 || documented.count("[" + key + ".variants]") == 1));
  }
}
