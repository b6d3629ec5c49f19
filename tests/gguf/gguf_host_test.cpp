// kivi-host with a .gguf path where a checkpoint folder goes: generate on the tiny fixture,
// tokenize with a GGUF tokenizer, and (when fetched) chat with SmolLM2-135M-Instruct through
// its own chat template, greedy on the CPU.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "gguf_test_support.h"
#include "test_paths.h"
#include "test_skip.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// Runs kivi-host on `toml` (written to a temp file), `input` on stdin; status and output.
std::pair<int, std::string> host(const std::string& name, const std::string& toml,
                                 const std::string& input = "") {
  const fs::path dir = fs::temp_directory_path() / ("kivi-gguf-host-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path config = dir / (name + ".toml"), stdin_file = dir / (name + ".in"),
                 out_file = dir / (name + ".out");
  std::ofstream(config) << toml;
  std::ofstream(stdin_file) << input;
  const int status = std::system(((kivi::test::build_dir() / "bin" / "kivi-host").string() +
                                  " --config " + config.string() + " < " + stdin_file.string() +
                                  " > " + out_file.string() + " 2>&1")
                                     .c_str());
  std::ifstream in(out_file);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const fs::path& f : {config, stdin_file, out_file}) ::remove(f.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string model_table(const fs::path& path) {
  return "[model]\npath = \"" + path.string() + "\"\ndevice = \"cpu\"\n";
}

}  // namespace

TEST_CASE("kivi-host generate runs a .gguf model", "[gguf]") {
  const auto [status, out] = host("gen",
                                  "mode = \"generate\"\n[generate]\nprompt_ids = [[1, 5, 9, 13]]\n"
                                  "max_new_tokens = 4\n" +
                                      model_table(kivi::test::gguf_fixture("llama-mixed.gguf")));
  INFO(out);
  CHECK(status == 0);
  CHECK_THAT(out, Contains("llama-mixed.gguf (family llama, 2 layers, vocab 256)"));
  CHECK_THAT(out, Contains("-> 4 new tokens"));
}

TEST_CASE("kivi-host tokenize reads a GGUF tokenizer", "[gguf]") {
  const auto [status, out] =
      host("tok", "mode = \"tokenize\"\n[tokenize]\ntokenizer = \"" +
                      kivi::test::gguf_fixture("tokenizer-kivi-llama-tiny.gguf").string() +
                      "\"\ntext = \"It is a truth universally acknowledged\"\n"
                      "[[tokenize.messages]]\nrole = \"user\"\ncontent = \"Hi\"\n");
  INFO(out);
  CHECK(status == 0);
  CHECK_THAT(out, Contains("<|bos|>user\nHi<|eos|>\n<|bos|>assistant\n"));
}

TEST_CASE("kivi-host: a .gguf that is not a model is a clear error", "[gguf]") {
  const auto [status, out] =
      host("notmodel", "mode = \"generate\"\n[generate]\nprompt_ids = [[1, 2]]\n" +
                           model_table(kivi::test::gguf_fixture("tokenizer-kivi-llama-tiny.gguf")));
  INFO(out);
  CHECK(status != 0);
  CHECK_THAT(
      out,
      Contains("tokenizer-kivi-llama-tiny.gguf: metadata \"llama.embedding_length\" is missing"));
}

TEST_CASE("kivi-host chat with SmolLM2-135M-Instruct (GGUF) through its chat template", "[gguf]") {
  if (!kivi::test::smollm2_available()) {
    kivi::test::skip_test(kivi::test::smollm2_path().string() +
                          " is absent (tools/fetch-smollm2.sh fetches it)");
    return;
  }
  for (const std::string cache : {"fp16", "kivi"}) {
    const auto [status, out] = host(
        "chat-" + cache,
        "mode = \"chat\"\n[generate]\ntemperature = 0\nmax_new_tokens = 24\n[cache]\nbackend = \"" +
            cache + "\"\n" + model_table(kivi::test::smollm2_path()),
        "What is the capital of France?\n/stats\nAnd of Italy?\n/quit\n");
    INFO(out);
    CHECK(status == 0);
    CHECK_THAT(out, Contains("family llama, 30 layers, vocab 49152"));
    CHECK_THAT(out, Contains("The capital of France is Paris."));
    CHECK_THAT(out, Contains("Rome"));
  }
}
