// Runs the real kivi-host binary and checks what it prints, not only its exit code.
#include "kivi_catch.h"

#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <regex>

#include "test_paths.h"
#include "test_skip.h"

namespace {

struct Run {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// `shell` runs first in the same shell (e.g. a ulimit for the binary).
Run run_host(const std::string& args, const std::string& shell = "") {
  const std::string command =
      shell + (kivi::test::build_dir() / "bin" / "kivi-host").string() + " " + args + " 2>&1";
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

TEST_CASE("every config in configs/ is valid", "[host]") {
  int checked = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(kivi::test::source_dir() / "configs")) {
    if (entry.path().extension() != ".toml") continue;
    const Run run = run_host("check --config " + entry.path().string());
    INFO(entry.path().string() << "\n" << run.output);
    CHECK(run.exit_code == 0);
    CHECK_THAT(run.output, Contains(": valid"));
    ++checked;
  }
  CHECK(checked >= 10);
}

TEST_CASE("a config that needs the shared data folder names what is missing", "[host]") {
  // configs/tokenize-llama3.1.toml copied where nothing is beside it, as in a user's clone.
  const auto dir =
      std::filesystem::temp_directory_path() / ("kivi-clone-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "repo" / "configs");
  std::filesystem::copy_file(kivi::test::source_dir() / "configs" / "tokenize-llama3.1.toml",
                             dir / "repo" / "configs" / "tokenize-llama3.1.toml",
                             std::filesystem::copy_options::overwrite_existing);
  const Run run =
      run_host("--config " + (dir / "repo" / "configs" / "tokenize-llama3.1.toml").string());
  std::filesystem::remove_all(dir);
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.output, Contains("[tokenize] tokenizer: ") &&
                             Contains("/shared/data/tokenizers/llama3.1 does not exist"));
}

TEST_CASE(
    "kivi-host memory prints the write-up's table beside the honest one, and what it leaves out",
    "[host]") {
  // configs/memory.toml's geometry and lengths, without building the live caches.
  const std::string table =
      "mode = \"memory\"\n[memory]\nlengths = [256, 512, 1024, 2048, 4096, 8192, "
      "32768]\nlive_check = false\n";
  const Run kivi2 = run_host("--config " + write_config("memory-kivi2", table));
  INFO(kivi2.output);
  REQUIRE(kivi2.exit_code == 0);
  // The write-up's accounting (codes + 128 fp16 residual tokens, no scales) as it prints it,
  // then the honest bytes; KIVI-2 at 4096 tokens holds 115,933,184 bytes (docs/kivi-cache.md).
  const std::vector<std::pair<std::string, std::string>> writeup = {
      {"256", "9.00   1.78x"},  {"512", "5.50   2.91x"},  {"1024", "3.75   4.27x"},
      {"2048", "2.88   5.57x"}, {"4096", "2.44   6.56x"}, {"8192", "2.22   7.21x"},
      {"32768", "2.05   7.79x"}};
  for (const auto& [tokens, figures] : writeup)
    CHECK(std::regex_search(kivi2.output, std::regex("\n +" + tokens + " \\| +" + figures)));
  CHECK_THAT(kivi2.output,
             Contains("115933184") && Contains("3.46 =  1.97 +  0.98 +  0.50   4.63x"));
  CHECK_THAT(
      kivi2.output,
      Contains("What the write-up leaves out") &&
          Contains("a scale and a minimum (float16) for every group of 32 codes: 1.00 bits") &&
          Contains("128 key slots") && Contains("129 value slots") &&
          Contains("tend to 3.00 for long sequences, not 2"));
  // A full-precision cache: the write-up's figure is 16 bits, and there is nothing left out.
  const Run fp16 =
      run_host("--config " + write_config("memory-fp16", table + "[cache]\nbackend = \"fp16\"\n"));
  CHECK(fp16.exit_code == 0);
  CHECK(std::regex_search(fp16.output, std::regex(R"(\n +4096 \| +16\.00   1\.00x)")));
  CHECK_THAT(fp16.output, !Contains("leaves out"));
}

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
  CHECK_THAT(ok.output, Contains("cache: bf16 (view format dense/1)") &&
                            Contains("attention: sdpa (the cache's)"));

  const std::string bad_option =
      write_config("badopt", "mode = \"check\"\n[cache]\nbackend = \"fp16\"\nchunk_tokens = -4\n");
  const Run bad = run_host("--config " + bad_option);
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains(bad_option + ":4:1: cache.chunk_tokens: -4 is out of range"));

  const Run unknown =
      run_host("check --config " + write_config("unknown", "[cache]\nbackend = \"fp4\"\n"));
  CHECK(unknown.exit_code == 1);
  CHECK_THAT(unknown.output,
             Contains("no kv_cache plugin named \"fp4\"; available: bf16, fp16, fp32"));
}

TEST_CASE("kivi-host --set overrides run.toml keys; MODE --help lists a mode's keys", "[host]") {
  const std::string config = write_config("set", "mode = \"check\"\n[cache]\nbackend = \"kivi\"\n");
  const Run fp16 = run_host("check --config " + config + " --set cache.backend=fp16");
  CHECK(fp16.exit_code == 0);
  CHECK_THAT(fp16.output, Contains("cache: fp16 (view format dense/1)") &&
                              Contains("attention: sdpa (the cache's)"));
  // A new table, and a TOML value checked like the file's own.
  CHECK_THAT(run_host("check --config " + config + " --set cache.k_bits=3").output,
             Contains("cache.k_bits: 3 is not allowed"));
  CHECK(run_host("check --config " + config + " --set attention.backend=sdpa").exit_code == 1);
  CHECK_THAT(
      run_host("check --config " + config + " --set attention.backend=sdpa").output,
      Contains("[attention] backend \"sdpa\" cannot read the \"kivi/2\" views of cache \"kivi\""));
  CHECK_THAT(run_host("check --config " + config + " --set novalue").output,
             Contains("--set novalue: expected section.key=value"));
  CHECK_THAT(run_host("check --config " + config + " --set mode.x=1").output,
             Contains("\"mode\" is not a table"));

  const Run help = run_host("perplexity --help");
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.output, Contains("kivi-host perplexity: windowed perplexity") &&
                              Contains("[perplexity]  cache_stats, chunk, context, max_tokens, "
                                       "max_windows, progress, stride, text") &&
                              Contains("[model]  cuda_graphs, device, dtype, path"));
}

TEST_CASE("kivi-host rejects bad command lines and missing files clearly", "[host]") {
  CHECK_THAT(run_host("check").output, Contains("--config run.toml is required"));
  CHECK_THAT(run_host("frobnicate --config x.toml").output,
             Contains("unknown mode \"frobnicate\""));
  CHECK_THAT(run_host("--config /nonexistent/run.toml").output,
             Contains("/nonexistent/run.toml: cannot open config file"));
  CHECK_THAT(run_host("--bogus").output, Contains("unknown argument \"--bogus\""));
  // A directory is not an empty config, nor a device an endless one.
  CHECK_THAT(run_host("--config " + std::filesystem::temp_directory_path().string()).output,
             Contains("the config file is a directory, expected a file"));
  CHECK_THAT(run_host("--config /dev/zero").output,
             Contains("/dev/zero: the config file is not a regular file"));
  CHECK(run_host("--plugin-dir").exit_code == 1);
  const std::string config = write_config("profile", "mode = \"check\"\n");
  CHECK_THAT(run_host("check --config " + config + " --profile 3").output,
             Contains("--profile N is for serve (mode here: check)"));
  CHECK_THAT(run_host("serve --config " + config + " --profile 0").output,
             Contains("--profile \"0\": expected a number of forward passes from 1 to 1048576"));
  CHECK_THAT(run_host("serve --config " + config + " --profile x2").output,
             Contains("--profile \"x2\""));

  // A config inside a checkout that points outside it, at a folder this clone lacks (as
  // configs/tokenize-llama3.1.toml points at ../shared beside a development checkout), says so;
  // a missing path inside the checkout is only missing.
  const auto checkout =
      std::filesystem::temp_directory_path() / ("kivi-outside-" + std::to_string(::getpid()));
  std::filesystem::create_directories(checkout / ".git");
  std::filesystem::create_directories(checkout / "configs");
  std::ofstream(checkout / "configs" / "outside.toml")
      << "mode = \"tokenize\"\n[tokenize]\ntokenizer = "
         "\"../../absent-shared/tokenizers/llama3.1\"\ntext = \"x\"\n";
  std::ofstream(checkout / "configs" / "inside.toml")
      << "mode = \"tokenize\"\n[tokenize]\ntokenizer = \"../models/none\"\ntext = \"x\"\n";
  const Run outside = run_host("--config " + (checkout / "configs" / "outside.toml").string());
  CHECK(outside.exit_code == 1);
  CHECK_THAT(outside.output, Contains("[tokenize] tokenizer: ") &&
                                 Contains("absent-shared/tokenizers/llama3.1 does not exist") &&
                                 Contains("it lies outside this checkout, " + checkout.string()));
  const Run inside = run_host("--config " + (checkout / "configs" / "inside.toml").string());
  CHECK(inside.exit_code == 1);
  CHECK_THAT(inside.output, Contains("models/none does not exist (no such file or folder)"));
  CHECK_THAT(inside.output, !Contains("outside this checkout"));
  std::filesystem::remove_all(checkout);
}

TEST_CASE("kivi-host tokenize with the Llama-3.1 tokenizer and its official chat template",
          "[host]") {
  const auto llama31 = kivi::test::shared_data_dir() / "tokenizers" / "llama3.1";
  if (!std::filesystem::exists(llama31 / "tokenizer.json")) {
    kivi::test::skip_without_shared_data(llama31.string());
    return;
  }
  const Run chat = run_host(
      "tokenize --config " +
      write_config("tok-chat",
                   "[tokenize]\ntokenizer = \"" + llama31.string() +
                       "\"\ntext = \"Hello, world!\"\nskip_special_tokens = true\n"
                       "[[tokenize.messages]]\nrole = \"system\"\ncontent = \"Be brief.\"\n"
                       "[[tokenize.messages]]\nrole = \"user\"\ncontent = \"Hi\"\n"));
  CHECK(chat.exit_code == 0);
  CHECK_THAT(chat.output,
             Contains("ids (5): 128000 9906 11 1917 0") && Contains("decoded: \"Hello, world!\""));
  CHECK_THAT(chat.output, Contains("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|"
                                   "start_header_id|>assistant<|end_header_id|>"));
}

TEST_CASE("kivi-host tokenize encodes, decodes and renders a chat prompt", "[host]") {
  const auto model = kivi::test::source_dir() / "models" / "kivi-llama-tiny";
  const Run bundled = run_host(
      "tokenize --config " +
      write_config("tok-bundled", "[tokenize]\ntokenizer = \"" + model.string() +
                                      "\"\ntext = \"It is a truth universally acknowledged\"\n"));
  CHECK(bundled.exit_code == 0);
  CHECK_THAT(bundled.output,
             Contains("ids (") &&
                 Contains("decoded: \"<|bos|>It is a truth universally acknowledged\"") &&
                 Contains("streamed decode equals the full decode"));

  // The README's example: the bundled tokenizer with the chat template shipped in data/.
  const Run shipped = run_host("tokenize --config " +
                               (kivi::test::source_dir() / "configs" / "tokenize.toml").string());
  CHECK(shipped.exit_code == 0);
  CHECK_THAT(
      shipped.output,
      Contains("chat prompt (") &&
          Contains("<|bos|>system: You are a concise assistant.<|eos|>\nuser: What does KIVI "
                   "store in full precision?<|eos|>\nassistant:"));
  const Run no_template =
      run_host("tokenize --config " +
               write_config("tok-chat-missing",
                            "[tokenize]\ntokenizer = \"" + model.string() +
                                "\"\nchat_template = \"no-such.jinja\"\n"
                                "[[tokenize.messages]]\nrole = \"user\"\ncontent = \"Hi\"\n"));
  CHECK(no_template.exit_code == 1);
  CHECK_THAT(no_template.output,
             Contains("[tokenize] chat_template: cannot open") && Contains("no-such.jinja"));

  const Run bad =
      run_host("tokenize --config " +
               write_config("tok-bad",
                            "[tokenize]\ntokenizer = \"" + model.string() +
                                "\"\n[[tokenize.messages]]\nrole = \"robot\"\ncontent = \"x\"\n"));
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Contains("tokenize.messages.role: \"robot\" is not allowed; expected one "
                                  "of: system, user, assistant"));
}

TEST_CASE("out of host memory: one line naming the cache, its size and the setting to lower",
          "[host]") {
#if defined(__SANITIZE_ADDRESS__)
  kivi::test::skip_test("AddressSanitizer reserves more address space than the limit allows");
#else
  // A 4 GB address-space limit: libtorch (with its CUDA libraries) loads in about 3 GB, and a
  // cache of 7.8 GB cannot be allocated. (On the CPU, Linux overcommits: without a limit the
  // cache would be "allocated" and the machine swap or the OOM killer strike instead.)
  const std::string limit = "ulimit -v 4000000; ";
  if (run_host("--version", limit).exit_code != 0) {
    kivi::test::skip_test("kivi-host does not even load within a 4 GB address space here");
    return;
  }
  const Run run =
      run_host("bench --config " + (kivi::test::source_dir() / "configs/bench.toml").string() +
                   " --set bench.batch=2048 --set bench.prompt_tokens=4000"
                   " --set bench.decode_tokens=8",
               limit);
  INFO(run.output);
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.output,
             Contains("error: out of memory while allocating the kivi cache for 2048 "
                      "sequences x 4008 tokens (7.79 GB on cpu)") &&
                 Contains("to fit, lower [bench] batch or prompt_tokens + decode_tokens"));
  CHECK_THAT(run.output, !Contains("Exception raised from"));  // no libtorch backtrace
  const std::string error = run.output.substr(run.output.find("error: "));
  CHECK(std::count(error.begin(), error.end(), '\n') == 1);  // one line
#endif
}
