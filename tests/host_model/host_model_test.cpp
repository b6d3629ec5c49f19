// kivi-host generate on tests/fixtures/models/llama-gqa-llama3: the greedy continuation it
// prints must be the one transformers computed (reference.safetensors greedy_ids), with
// either attention backend and the full-precision cache.

#include <cstdio>
#include <fstream>
#include <sstream>

#include <ATen/ATen.h>
#include <ftw.h>
#include <unistd.h>

#include "kivi/model/safetensors.h"
#include "test_paths.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// Not std::filesystem::remove_all: libtorch.so exports a broken copy of it.
void remove_tree(const fs::path& dir) {
  ::nftw(
      dir.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

// Runs the built kivi-host with --config `toml`; stdout and stderr together.
std::string run_host(const fs::path& toml, int* status) {
  const std::string command =
      (kivi::test::build_dir() / "bin" / "kivi-host").string() + " --config " + toml.string();
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  *status = ::pclose(pipe);
  return output;
}

}  // namespace

TEST_CASE("kivi-host generate runs a checkpoint folder and matches the reference",
          "[host][model]") {
  const std::string attention = GENERATE(as<std::string>{}, "eager", "sdpa");
  const fs::path model = kivi::test::fixtures_dir() / "models" / "llama-gqa-llama3";
  const kivi::SafetensorsFile ref(model / "reference.safetensors");
  const at::Tensor prompts = ref.tensor("prompt_ids");
  const at::Tensor lengths = ref.tensor("prompt_lengths");
  const at::Tensor greedy = ref.tensor("greedy_ids");

  const fs::path dir =
      fs::temp_directory_path() / ("kivi-host-model-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream toml(dir / "run.toml");
  toml << "mode = \"generate\"\n[model]\npath = \"" << model.string() << "\"\ndtype = \"float32\"\n"
       << "device = \"cpu\"\n[attention]\nbackend = \"" << attention
       << "\"\n[cache]\nbackend = \"fp32\"\n"
       << "[generate]\nmax_new_tokens = 32\nprompt_ids = [";
  for (int64_t b = 0; b < prompts.size(0); ++b) {
    const at::Tensor ids = prompts[b].narrow(0, 0, lengths[b].item<int64_t>());
    toml << (b ? ", [" : "[");
    for (int64_t i = 0; i < ids.numel(); ++i) toml << (i ? ", " : "") << ids[i].item<int64_t>();
    toml << "]";
  }
  toml << "]\n";
  toml.close();

  int status = 0;
  const std::string output = run_host(dir / "run.toml", &status);
  remove_tree(dir);
  INFO(output);
  REQUIRE(status == 0);
  CHECK_THAT(output, Contains("family llama") && Contains("attention " + attention) &&
                         Contains("cache fp32"));
  for (int64_t b = 0; b < prompts.size(0); ++b) {
    // The host stops a sequence at its first eos token (2 or 3 in this config), keeping it.
    std::string ids;
    bool eos = false;
    int64_t n = 0;
    for (int64_t i = 0; i < greedy.size(1) && !eos; ++i, ++n) {
      const int64_t id = greedy[b][i].item<int64_t>();
      ids += " " + std::to_string(id);
      eos = id == 2 || id == 3;
    }
    const std::string expected = "prompt " + std::to_string(b) + " (" +
                                 std::to_string(lengths[b].item<int64_t>()) + " tokens) -> " +
                                 std::to_string(n) + " new tokens [" +
                                 (eos ? "eos" : "max_new_tokens") + "]:" + ids + "\n";
    CHECK_THAT(output, Contains(expected));
  }
}

TEST_CASE("kivi-host generate: an unknown architecture is a clear error", "[host][model]") {
  const fs::path dir = fs::temp_directory_path() / ("kivi-host-arch-" + std::to_string(::getpid()));
  fs::create_directories(dir / "m");
  std::ofstream(dir / "m" / "config.json")
      << R"({"architectures": ["FooForCausalLM"], "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,)"
      << R"( "num_hidden_layers": 1, "num_attention_heads": 2})";
  std::ofstream(dir / "run.toml")
      << "mode = \"generate\"\n[model]\npath = \"m\"\n[generate]\nprompt_ids = [1, 2]\n";
  int status = 0;
  const std::string output = run_host(dir / "run.toml", &status);
  remove_tree(dir);
  INFO(output);
  CHECK(status != 0);
  CHECK_THAT(output,
             Contains("config.json") && Contains("FooForCausalLM") && Contains("LlamaForCausalLM"));
}
