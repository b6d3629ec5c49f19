// The bundled models (models/kivi-llama-tiny, models/kivi-qwen2-tiny) through the real kivi-host
// binary against transformers, on held-out text that ships with the repository
// (tests/fixtures/heldout/persuasion-ch1-2.txt: chapters 1-2 of Persuasion, which neither the
// tokenizer nor the models saw):
//   - perplexity (fp32 cache, whole windows and chunks of 128 over the cache) equals
//     tools/train/eval_perplexity.py's within 0.1%, at contexts 512 and 2048;
//   - greedy generation of 64 new tokens from three held-out prompts (one longer than the
//     128-token residual window) equals transformers' generate(do_sample=False), token for token,
//     with the fp32 cache and with the kivi cache at 16 bits.
// The reference is computed in the test run by tools/fixtures/bundled_reference.py with the
// build's Python (the venv of tools/setup.sh); where that Python has no transformers, the test
// uses the output recorded in tests/fixtures/heldout/reference-<model>.json (the command that
// wrote it is in the script's docstring).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "test_paths.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

constexpr int kNewTokens = 64;

const fs::path kHeldout = kivi::test::fixtures_dir() / "heldout";

// Runs a shell command; stdout and stderr together, and the exit status. One OpenMP thread:
// CTest runs tests in parallel, and libtorch's spinning threads on busy cores are many times
// slower than one (92 s against 6 s for the same kivi-host run on a loaded 2-core machine).
std::string run(const std::string& command, int* status) {
  FILE* pipe = ::popen(("OMP_NUM_THREADS=1 " + command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int s = ::pclose(pipe);
  *status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  return output;
}

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

fs::path scratch_dir() {
  const fs::path dir = fs::temp_directory_path() / ("kivi-bundled-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

// The transformers reference for `model`: computed now when the build's Python has
// transformers, else the recorded one.
json reference(const std::string& model) {
  const fs::path recorded = kHeldout / ("reference-" + model + ".json");
  int status = 0;
  run(std::string(KIVI_TEST_PYTHON) + " -c 'import transformers'", &status);
  if (status != 0) {
    WARN("no transformers in " KIVI_TEST_PYTHON "; using the recorded reference " +
         recorded.string());
    return json::parse(std::ifstream(recorded));
  }
  const fs::path out = scratch_dir() / (model + "-reference.json");
  const std::string output =
      run(std::string(KIVI_TEST_PYTHON) + " " +
              quoted(kivi::test::source_dir() / "tools/fixtures/bundled_reference.py") +
              " --model " + quoted(kivi::test::source_dir() / "models" / model) + " --text " +
              quoted(kHeldout / "persuasion-ch1-2.txt") + " --prompts " +
              quoted(kHeldout / "prompts.txt") + " --context 512 2048 --max-new-tokens " +
              std::to_string(kNewTokens) + " --json " + quoted(out),
          &status);
  INFO(output);
  REQUIRE(status == 0);
  json result = json::parse(std::ifstream(out));
  ::remove(out.c_str());
  // The recorded reference (the fallback) must still be this one.
  const json old = json::parse(std::ifstream(recorded));
  for (size_t i = 0; i < result["perplexity"].size(); ++i)
    CHECK(old["perplexity"][i]["ppl"].get<double>() ==
          Approx(result["perplexity"][i]["ppl"].get<double>()).epsilon(1e-5));
  for (size_t i = 0; i < result["greedy"].size(); ++i)
    CHECK(old["greedy"][i]["new_ids"] == result["greedy"][i]["new_ids"]);
  return result;
}

// Runs kivi-host on run.toml = `toml` + a [model] table for the bundled `model` on the CPU.
std::string run_host(const std::string& model, const std::string& name, const std::string& toml,
                     int* status) {
  const fs::path config = scratch_dir() / (model + "-" + name + ".toml");
  std::ofstream(config) << toml << "\n[model]\npath = \""
                        << (kivi::test::source_dir() / "models" / model).string()
                        << "\"\ndevice = \"cpu\"\ndtype = \"float32\"\n";
  const std::string output =
      run((kivi::test::build_dir() / "bin" / "kivi-host").string() + " --config " + quoted(config),
          status);
  ::remove(config.c_str());
  return output;
}

void check_model(const std::string& model) {
  const json ref = reference(model);

  // Perplexity: whole windows (prefill only) and chunks of 128 (later chunks attend over the
  // cache).
  for (const json& r : ref["perplexity"]) {
    const int64_t context = r["context"].get<int64_t>();
    for (const int chunk : {0, 128}) {
      if (chunk && context < 2048) continue;
      int status = 0;
      const std::string output = run_host(
          model, "ppl",
          "mode = \"perplexity\"\n[cache]\nbackend = \"fp32\"\n[attention]\nbackend = \"sdpa\"\n"
          "[perplexity]\ntext = \"" +
              (kHeldout / "persuasion-ch1-2.txt").string() +
              "\"\ncontext = " + std::to_string(context) + "\nchunk = " + std::to_string(chunk) +
              "\nprogress = false\n",
          &status);
      INFO(model << ", context " << context << ", chunk " << chunk << "\n" << output);
      REQUIRE(status == 0);
      std::smatch m;
      REQUIRE(std::regex_search(output, m,
                                std::regex(R"(perplexity: ([0-9.]+) .* over (\d+) tokens)")));
      const double ours = std::stod(m[1].str()), theirs = r["ppl"].get<double>();
      INFO("ours " << ours << ", transformers " << theirs << ", relative difference "
                   << (ours - theirs) / theirs);
      CHECK(ours == Approx(theirs).epsilon(1e-3));  // the issue's bound: 0.1%
      CHECK(std::stoll(m[2].str()) == r["predicted_tokens"].get<int64_t>());
    }
  }

  // Greedy: 64 new tokens from each prompt, as transformers generated them.
  std::vector<std::string> expected;
  for (size_t b = 0; b < ref["greedy"].size(); ++b) {
    const json& g = ref["greedy"][b];
    REQUIRE(g["new_ids"].size() == kNewTokens);  // no eos in these continuations
    std::string line = "prompt " + std::to_string(b) + " (" +
                       std::to_string(g["prompt_ids"].size()) + " tokens) -> " +
                       std::to_string(kNewTokens) + " new tokens [max_new_tokens]:";
    for (const json& id : g["new_ids"]) line += " " + std::to_string(id.get<int64_t>());
    expected.push_back(line + "\n");
  }
  const std::string gen = "mode = \"generate\"\n[generate]\nprompt_file = \"" +
                          (kHeldout / "prompts.txt").string() +
                          "\"\nmax_new_tokens = " + std::to_string(kNewTokens) + "\n";
  for (const std::string& cache :
       {std::string("[cache]\nbackend = \"fp32\"\n[attention]\nbackend = \"sdpa\"\n"),
        std::string("[cache]\nbackend = \"kivi\"\nk_bits = 16\nv_bits = 16\n[attention]\nbackend = "
                    "\"kivi\"\n")}) {
    int status = 0;
    const std::string output = run_host(model, "gen", gen + cache, &status);
    INFO(model << "\n" << cache << output);
    REQUIRE(status == 0);
    for (const std::string& line : expected) CHECK_THAT(output, Contains(line));
  }
}

}  // namespace

TEST_CASE("kivi-llama-tiny: held-out perplexity and 64 greedy tokens match transformers",
          "[host][bundled]") {
  check_model("kivi-llama-tiny");
}

TEST_CASE("kivi-qwen2-tiny: held-out perplexity and 64 greedy tokens match transformers",
          "[host][bundled]") {
  check_model("kivi-qwen2-tiny");
}
