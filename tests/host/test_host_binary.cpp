// Runs the real kivi-host binary and checks what it prints, not only its exit code.
#include "kivi_catch.h"

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sys/wait.h>

#include "test_paths.h"

namespace {

struct Run {
  int exit_code;
  std::string output;  // stdout and stderr together
};

Run run_host(const std::string& args) {
  const std::string command = (kivi::test::build_dir() / "bin" / "kivi-host").string() + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string write_config(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("kivi-test-" + name + ".toml");
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace

using Catch::Contains;

TEST_CASE("kivi-host --help and --version", "[host]") {
  const Run help = run_host("--help");
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.output, Contains("usage: kivi-host [MODE] --config run.toml"));
  const Run version = run_host("--version");
  CHECK(version.exit_code == 0);
  CHECK_THAT(version.output, Contains("build fingerprint: abi=1") && Contains("torch=2.11.0"));
}

TEST_CASE("kivi-host plugins lists the full-precision cache from the plugin folder", "[host]") {
  const Run run = run_host("plugins");
  CHECK(run.exit_code == 0);
  // Columns are as wide as the longest kind (e.g. model_family), so match the row loosely.
  CHECK_THAT(run.output, Catch::Matchers::Matches(R"([\s\S]*\nkv_cache +fp16 [\s\S]*)") &&
                             Contains("lib/kivi/plugins/libkivi-fp-cache.so"));
  // Without the default folder, nothing is loaded.
  const std::string config = write_config("nodefault", "[plugins]\ndefault_dir = false\n");
  const Run none = run_host("plugins --config " + config);
  CHECK_THAT(none.output, Contains("0 plugins loaded"));
}

TEST_CASE("kivi-host check validates the config and resolves the cache plugin", "[host]") {
  const Run ok = run_host("check --config " + write_config("ok", "[cache]\nbackend = \"bf16\"\n"));
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.output, Contains("cache: bf16 (view kind dense)"));

  const std::string bad_option = write_config("badopt", "mode = \"check\"\n[cache]\nbackend = \"fp16\"\nchunk_tokens = -4\n");
  const Run bad = run_host("--config " + bad_option);
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains(bad_option + ":4:1: cache.chunk_tokens: -4 is out of range"));

  const Run unknown = run_host("check --config " + write_config("unknown", "[cache]\nbackend = \"fp4\"\n"));
  CHECK(unknown.exit_code == 1);
  CHECK_THAT(unknown.output, Contains("no kv_cache plugin named \"fp4\"; available: bf16, fp16, fp32"));
}

TEST_CASE("kivi-host rejects bad command lines and missing files clearly", "[host]") {
  CHECK_THAT(run_host("check").output, Contains("--config run.toml is required"));
  CHECK_THAT(run_host("frobnicate --config x.toml").output, Contains("unknown mode \"frobnicate\""));
  CHECK_THAT(run_host("--config /nonexistent/run.toml").output, Contains("/nonexistent/run.toml: cannot open config file"));
  CHECK_THAT(run_host("--bogus").output, Contains("unknown argument \"--bogus\""));
  CHECK(run_host("--plugin-dir").exit_code == 1);
}

TEST_CASE("kivi-host tokenize encodes, decodes and renders a chat prompt", "[host]") {
  const auto model = kivi::test::source_dir() / "models" / "kivi-llama-tiny";
  const Run bundled = run_host("tokenize --config " + write_config("tok-bundled",
      "[tokenize]\ntokenizer = \"" + model.string() + "\"\ntext = \"It is a truth universally acknowledged\"\n"));
  CHECK(bundled.exit_code == 0);
  CHECK_THAT(bundled.output, Contains("ids (") && Contains("decoded: \"<|bos|>It is a truth universally acknowledged\"") &&
                                 Contains("streamed decode equals the full decode"));

  const auto llama31 = kivi::test::shared_data_dir() / "tokenizers" / "llama3.1";
  if (!std::filesystem::exists(llama31 / "tokenizer.json")) {
    WARN("skipped the chat part: " << llama31 << " is absent");
    return;
  }
  const Run chat = run_host("tokenize --config " + write_config("tok-chat",
      "[tokenize]\ntokenizer = \"" + llama31.string() + "\"\ntext = \"Hello, world!\"\nskip_special_tokens = true\n"
      "[[tokenize.messages]]\nrole = \"system\"\ncontent = \"Be brief.\"\n"
      "[[tokenize.messages]]\nrole = \"user\"\ncontent = \"Hi\"\n"));
  CHECK(chat.exit_code == 0);
  CHECK_THAT(chat.output, Contains("ids (5): 128000 9906 11 1917 0") && Contains("decoded: \"Hello, world!\""));
  CHECK_THAT(chat.output, Contains("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"));

  const Run bad = run_host("tokenize --config " + write_config("tok-bad",
      "[tokenize]\ntokenizer = \"" + model.string() + "\"\n[[tokenize.messages]]\nrole = \"robot\"\ncontent = \"x\"\n"));
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("tokenize.messages.role: \"robot\" is not allowed; expected one of: system, user, assistant"));
}
