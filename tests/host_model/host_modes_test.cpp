// kivi-host generate, perplexity, compare, bench and chat on the bundled models/kivi-llama-tiny,
// through the real binary, checking what they print.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <regex>

#include "test_paths.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

struct Run {
  int status;
  std::string output;  // stdout and stderr
};

const fs::path kModel = fs::path(KIVI_SOURCE_DIR) / "models" / "kivi-llama-tiny";
// Chapters 1-6 of Persuasion, shipped in data/ (its first tokens are the whole book's, so the
// reference below, computed on the book, holds).
const fs::path kText = kivi::test::data_dir() / "persuasion-ch1-6.txt";

// Writes run.toml (the [model] table last) and runs kivi-host on it, `input` on stdin.
Run run_host(const std::string& name, const std::string& toml, const std::string& input = "") {
  const fs::path dir = fs::temp_directory_path() / ("kivi-modes-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path config = dir / (name + ".toml");
  std::ofstream(config) << toml << "\n[model]\npath = \"" << kModel.string()
                        << "\"\ndevice = \"cpu\"\n";
  std::string command =
      (kivi::test::build_dir() / "bin" / "kivi-host").string() + " --config " + config.string();
  if (!input.empty()) {
    std::ofstream(dir / (name + ".in")) << input;
    command += " < " + (dir / (name + ".in")).string();
  }
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  ::remove(config.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string line_with(const std::string& output, const std::string& prefix) {
  const size_t at = output.find(prefix);
  if (at == std::string::npos) return "";
  return output.substr(at, output.find('\n', at) - at);
}

}  // namespace

TEST_CASE("generate: greedy text continuations agree between fp32 and kivi 16-bit", "[host]") {
  const std::string gen =
      "mode = \"generate\"\n[generate]\nprompts = [\"It is a truth universally acknowledged, "
      "that\", "
      "\"Anne\"]\nmax_new_tokens = 12\ncache_stats = true\n";
  const Run fp32 =
      run_host("gen-fp32", gen + "[cache]\nbackend = \"fp32\"\n[attention]\nbackend = \"sdpa\"\n");
  INFO(fp32.output);
  REQUIRE(fp32.status == 0);
  const Run kivi16 =
      run_host("gen-kivi16", gen +
                                 "[cache]\nbackend = \"kivi\"\nk_bits = 16\nv_bits = 16\n"
                                 "residual_length = 0\ngroup_size = 4\n");
  INFO(kivi16.output);
  REQUIRE(kivi16.status == 0);
  CHECK_THAT(kivi16.output, Contains("attention kivi, cache kivi"));
  for (const std::string row : {"prompt 0 (", "prompt 1 ("}) {
    CHECK_FALSE(line_with(fp32.output, row).empty());
    CHECK(line_with(fp32.output, row) == line_with(kivi16.output, row));
  }
  // The model card's greedy continuation of the first prompt.
  CHECK_THAT(fp32.output, Contains("text 0:  it is a\nfair to be a great deal"));
  // 16 bits: nothing quantized, every token in full precision, 32 bits per element on the CPU.
  CHECK_THAT(kivi16.output, Contains("keys and values: all in full precision (float32)") &&
                                Contains("= 32.00 bits per stored K/V element on average") &&
                                Contains("2.00x larger"));
}

TEST_CASE("generate: defaults (kivi 2/2), streaming, sampling and stop strings", "[host]") {
  const Run r =
      run_host("gen-stream",
               "mode = \"generate\"\n[generate]\nprompts = [\"Anne was\"]\nstream = true\n"
               "temperature = 0.8\ntop_k = 40\ntop_p = 0.95\nseed = 3\nmax_new_tokens = 40\n"
               "stop = [\".\"]\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("attention kivi, cache kivi") && Contains("prompt 0: "));
  const std::string summary = line_with(r.output, "prompt 0 (");
  CHECK((summary.find("[stop string]") != std::string::npos ||
         summary.find("[max_new_tokens]") != std::string::npos));
  const Run again =
      run_host("gen-stream2",
               "mode = \"generate\"\n[generate]\nprompts = [\"Anne was\"]\nstream = true\n"
               "temperature = 0.8\ntop_k = 40\ntop_p = 0.95\nseed = 3\nmax_new_tokens = 40\n"
               "stop = [\".\"]\n");
  CHECK(again.output == r.output);  // seeded: the same text
}

TEST_CASE("generate: beam search prints the best hypothesis with its text and score", "[host]") {
  const Run r = run_host("gen-beam",
                         "mode = \"generate\"\n[generate]\nprompts = [\"It is a truth\"]\n"
                         "max_new_tokens = 8\nnum_beams = 3\nlength_penalty = 1.0\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("beam score -") && Contains("(best of 3 hypotheses)"));
  CHECK(line_with(r.output, "text 0: ").size() > std::string("text 0: ").size());
}

TEST_CASE("generate: invalid sampling values are clear errors", "[host]") {
  const Run r =
      run_host("gen-bad", "mode = \"generate\"\n[generate]\nprompts = [\"x\"]\ntemperature = -1\n");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("[generate]: temperature = -1: expected a finite number >= 0"));
  const Run p =
      run_host("gen-bad-p", "mode = \"generate\"\n[generate]\nprompts = [\"x\"]\ntop_p = 0\n");
  CHECK_THAT(p.output, Contains("top_p = 0: expected a number in (0, 1]"));
  const Run c =
      run_host("gen-long",
               "mode = \"generate\"\n[generate]\nprompts = [\"It is a truth universally\"]\n"
               "context = 3\n");
  CHECK_THAT(c.output, Contains("longer than the context of 3"));
}

TEST_CASE("generate: a context past max_position_embeddings is cut there, and says so", "[host]") {
  const Run r =
      run_host("gen-context",
               "mode = \"generate\"\n[generate]\nprompts = [\"Anne\"]\nmax_new_tokens = 2\n"
               "context = 8192\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output,
             Contains("[generate] context = 8192 is more than") &&
                 Contains("max_position_embeddings = 4096; using 4096 (rope \"default\""));
}

TEST_CASE("a cache that cannot serve the model's shapes is an error before the weights load",
          "[host]") {
  // A checkpoint folder with config.json only: loading weights would fail on the missing file,
  // so an error about the cache shows that it came first.
  const fs::path dir =
      fs::temp_directory_path() / ("kivi-no-weights-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kModel / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  const fs::path config = dir / "run.toml";
  std::ofstream(config)
      << "mode = \"generate\"\n[generate]\nprompts = [\"Anne\"]\n[cache]\nbackend = \"kivi\"\n"
         "group_size = 48\nresidual_length = 96\n[model]\npath = \""
      << dir.string() << "\"\n";
  FILE* pipe = ::popen(((kivi::test::build_dir() / "bin" / "kivi-host").string() + " --config " +
                        config.string() + " 2>&1")
                           .c_str(),
                       "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  fs::remove_all(dir);
  INFO(output);
  CHECK(WEXITSTATUS(status) == 1);
  CHECK_THAT(output, Contains("[cache] backend \"kivi\" cannot serve") && Contains("head_dim 64") &&
                         Contains("group_size = 48 does not divide head_dim = 64"));
  CHECK_THAT(output, !Contains("safetensors"));
}

TEST_CASE("perplexity matches eval_perplexity.py for stride = context - 1", "[host]") {
  // Reference: python tools/train/eval_perplexity.py --model models/kivi-llama-tiny
  //   --text ../shared/data/corpora/austen_persuasion.txt --context 512 --max-windows 4
  //   (the whole book; its first 2044 tokens are those of data/persuasion-ch1-6.txt)
  //   -> ppl 66.7325 (2044 tokens, 4 windows, float32, cpu)
  const Run r = run_host(
      "ppl", "mode = \"perplexity\"\n[cache]\nbackend = \"fp32\"\n[perplexity]\ntext = \"" +
                 kText.string() + "\"\ncontext = 512\nmax_windows = 4\nchunk = 0\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  std::smatch m;
  const std::string line = line_with(r.output, "perplexity: ");
  REQUIRE(std::regex_search(line, m, std::regex(R"(perplexity: ([0-9.]+) .* over (\d+) tokens)")));
  CHECK(std::stod(m[1].str()) == Approx(66.7325).epsilon(2e-4));
  CHECK(m[2].str() == "2044");
  CHECK_THAT(r.output, Contains("4/4 windows"));  // the progress bar
}

TEST_CASE("compare prints one table with every variant against the first", "[host]") {
  const fs::path json =
      fs::temp_directory_path() / ("kivi-compare-" + std::to_string(::getpid()) + ".json");
  const Run r = run_host(
      "compare", "mode = \"compare\"\n[perplexity]\ntext = \"" + kText.string() +
                     "\"\ncontext = 384\nmax_windows = 1\nchunk = 64\nprogress = false\n"
                     "[generate]\nprompts = [\"Anne\"]\nmax_new_tokens = 8\n[output]\njson = \"" +
                     json.string() +
                     "\"\n[[compare.variants]]\nname = \"full\"\ncache = {backend = "
                     "\"fp32\"}\nattention = \"sdpa\"\n"
                     "[[compare.variants]]\nname = \"kivi-16\"\ncache = {backend = \"kivi\", "
                     "k_bits = 16, v_bits = 16}\n"
                     "[[compare.variants]]\nname = \"kivi-2\"\ncache = {backend = \"kivi\", k_bits "
                     "= 2, v_bits = 2, "
                     "residual_length = 64}\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("variant") && Contains("KL") && Contains("top1%"));
  // One model load for every variant; a variant without attention gets the one its cache names.
  CHECK_THAT(r.output, Contains("compare: model loaded once; 3 variants"));
  const std::string full = line_with(r.output, "full "), k16 = line_with(r.output, "kivi-16 "),
                    k2 = line_with(r.output, "kivi-2 ");
  CHECK_THAT(full, Contains("0.00") && Contains("100.00"));
  REQUIRE_FALSE(k2.empty());
  REQUIRE_FALSE(k16.empty());
  CHECK(k2 != k16);
  CHECK(std::regex_search(k2, std::regex(R"(^kivi-2 +kivi +kivi )")));
  CHECK(fs::exists(json));
  ::remove(json.c_str());
}

TEST_CASE("bench prints prefill and decode throughput", "[host]") {
  const Run r = run_host(
      "bench", "mode = \"bench\"\n[bench]\nprompt_tokens = 64\ndecode_tokens = 8\nrepeats = 2\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(std::regex_search(r.output, std::regex(R"(prefill: [0-9.]+ tokens/s)")));
  CHECK(std::regex_search(r.output, std::regex(R"(decode: [0-9.]+ tokens/s)")));
  CHECK_THAT(r.output, Contains("cache: "));
}

TEST_CASE("bench with a random fill times decode over a filled kivi cache and writes JSON",
          "[host]") {
  const fs::path json =
      fs::temp_directory_path() / ("kivi-bench-" + std::to_string(::getpid()) + ".json");
  const Run r = run_host(
      "bench-random",
      "mode = \"bench\"\n[cache]\nbackend = \"kivi\"\nk_bits = 2\nv_bits = 2\n[bench]\nbatch = 2\n"
      "prompt_tokens = 300\ndecode_tokens = 4\nfill = \"random\"\nrepeats = 1\n[output]\njson = "
      "\"" +
          json.string() + "\"\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, !Contains("prefill:"));  // nothing was prefilled
  CHECK(std::regex_search(r.output, std::regex(R"(decode: [0-9.]+ tokens/s .*ms per step)")));
  // 300 + 4 tokens per row: keys 256 quantized (128 at a time), values all but the newest 128
  // (plus the last step's token, whose flush waits for the next append).
  CHECK_THAT(
      r.output,
      Contains("cache: 608 tokens in 2 sequences") &&
          Contains(
              "keys:   512 quantized to 2 bits, 96 in the full-precision residual (float32)") &&
          Contains("values: 350 quantized to 2 bits, 258 in the residual"));
  std::ifstream in(json);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Contains("\"fill\": \"random\"") && Contains("\"context\": 300") &&
                       Contains("\"prefill_tokens_per_s\": null") &&
                       Contains("\"peak_allocated_bytes\""));
  CHECK(std::regex_search(text, std::regex(R"("decode_tokens_per_s": [1-9][0-9.]*)")));
  ::remove(json.c_str());
}

TEST_CASE("bench profile = true prints the top operators per decode step and writes a Chrome trace",
          "[host]") {
  const fs::path trace =
      fs::temp_directory_path() / ("kivi-trace-" + std::to_string(::getpid()) + ".json");
  const Run r = run_host("bench-profile",
                         "mode = \"bench\"\n[bench]\nprompt_tokens = 32\ndecode_tokens = 4\n"
                         "repeats = 1\nwarmup = 0\nprofile = true\ntrace = \"" +
                             trace.string() + "\"\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  // On the CPU: top-level operators; the decoder's projections are aten::linear.
  CHECK(std::regex_search(
      r.output,
      std::regex(
          R"(profile \(4 decode steps; top-level CPU operators\): [0-9.]+ us per step, busy)")));
  CHECK(std::regex_search(r.output,
                          std::regex(R"(\| aten::linear \| [0-9.]+ \| [0-9.]+ \| [0-9.]+% \|)")));
  CHECK_THAT(r.output, !Contains("ERROR"));
  std::ifstream in(trace);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Contains("\"traceEvents\"") && Contains("aten::linear"));
  ::remove(trace.c_str());
}

TEST_CASE("bench: an unwritable trace path fails before the work", "[host]") {
  const Run r =
      run_host("bench-trace",
               "mode = \"bench\"\n[bench]\nprofile = true\ntrace = \"/nonexistent-dir/t.json\"\n");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("bench.trace: cannot write \"/nonexistent-dir/t.json\": the "
                                "directory \"/nonexistent-dir\" does not exist"));
  CHECK_THAT(r.output, !Contains("decode:"));
}

TEST_CASE("bench find_max_batch searches up to the limit and stops there", "[host]") {
  // On the CPU nothing runs out of device memory, so the search climbs to the limit.
  const Run r =
      run_host("bench-fit",
               "mode = \"bench\"\n[bench]\nbatch = 5\nprompt_tokens = 40\ndecode_tokens = 2\n"
               "fill = \"random\"\nfind_max_batch = true\n");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.output, Contains("batch 4: fits") && Contains("largest batch that fits: 5"));
}

TEST_CASE("bench: an unknown fill is an error naming the key and the choices", "[host]") {
  const Run r = run_host("bench-bad", "mode = \"bench\"\n[bench]\nfill = \"sometimes\"\n");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("fill") && Contains("sometimes") && Contains("prefill") &&
                           Contains("random"));
}

TEST_CASE("chat without a chat template is a clear error", "[host]") {
  const Run r = run_host("chat", "mode = \"chat\"\n", "/quit\n");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("needs a tokenizer with a chat template"));
}

TEST_CASE("chat: a templated conversation streams replies, /stats, /reset and /quit", "[host]") {
  // A fixture folder: the bundled tokenizer with the chat template shipped in data/ and a tiny
  // dummy-weight model.
  const fs::path tokenizer = kivi::test::source_dir() / "models" / "tokenizer";
  const fs::path dir =
      fs::temp_directory_path() / ("kivi-chat-model-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(tokenizer / f, dir / f, fs::copy_options::overwrite_existing);
  fs::copy_file(kivi::test::data_dir() / "chat-template.jinja", dir / "chat_template.jinja",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "config.json")
      << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 4096,)"
      << R"( "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,)"
      << R"( "num_key_value_heads": 1, "head_dim": 32, "max_position_embeddings": 2048, "rope_theta": 500000.0,)"
      << R"( "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 1})";
  const fs::path config = dir / "chat.toml";
  std::ofstream(config)
      << "mode = \"chat\"\n[model]\npath = \"" << dir.string()
      << "\"\nweights = \"dummy\"\ndevice = \"cpu\"\n[generate]\nmax_new_tokens = 4\n"
      << "[cache]\nbackend = \"kivi\"\nresidual_length = 32\n";
  std::ofstream(dir / "in.txt")
      << "Hello there\n/stats\nHow are you?\n/stats\n/reset\n/stats\n/quit\n";
  FILE* pipe = ::popen(((kivi::test::build_dir() / "bin" / "kivi-host").string() + " --config " +
                        config.string() + " < " + (dir / "in.txt").string() + " 2>&1")
                           .c_str(),
                       "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                        "config.json", "chat.toml", "in.txt"})
    ::remove((dir / f).c_str());
  ::remove(dir.c_str());
  INFO(output);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(output, Contains("/stats shows the cache"));
  // Three /stats: two with the conversation in the cache (growing), one after the reset.
  std::vector<int64_t> tokens;
  const std::regex stats(R"(cache: (\d+) tokens)");
  for (std::sregex_iterator it(output.begin(), output.end(), stats), end; it != end; ++it)
    tokens.push_back(std::stoll((*it)[1].str()));
  REQUIRE(tokens.size() == 3);
  CHECK(tokens[0] > 0);
  CHECK(tokens[1] > tokens[0]);
  CHECK(tokens[2] == 0);
  CHECK_THAT(output, Contains("(conversation reset)"));
}
