// kivi_tokenizer_bench: encode and decode throughput (MB/s) of kivi's tokenizers and of the
// reference `tokenizers` library on the same text, single-threaded, side by side.
//
//   kivi_tokenizer_bench [--shared DIR] [--mb N] [--repeats N] [--python PATH] [names...]
//
// The text is the first N/number-of-files MB of every corpus in DIR/corpora, cut into ~4 KiB
// chunks at line ends (prompt-sized documents); each chunk is encoded without special tokens
// and its ids decoded back. Both sides get the same chunks (written to a temporary JSON file
// for reference_bench.py); the best of --repeats runs counts.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kivi/text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

struct Options {
  fs::path shared = KIVI_BENCH_SHARED_DATA;
  double megabytes = 2.0;
  int repeats = 3;
  std::string python = KIVI_BENCH_PYTHON;
  std::vector<std::string> names;
};

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--shared")
      o.shared = value();
    else if (arg == "--mb")
      o.megabytes = std::stod(value());
    else if (arg == "--repeats")
      o.repeats = std::stoi(value());
    else if (arg == "--python")
      o.python = value();
    else if (arg.starts_with("--"))
      throw std::runtime_error("unknown option " + arg);
    else
      o.names.push_back(arg);
  }
  if (o.names.empty()) o.names = {"llama2", "llama3", "qwen2.5"};
  return o;
}

std::vector<std::string> make_chunks(const fs::path& corpora, double megabytes) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(corpora))
    if (entry.path().extension() == ".txt") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw std::runtime_error("no corpora in " + corpora.string());
  const auto per_file = static_cast<std::size_t>(megabytes * 1e6 / files.size());
  std::vector<std::string> chunks;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::string line, chunk;
    std::size_t taken = 0;
    while (taken < per_file && std::getline(in, line)) {
      chunk += line + "\n";
      taken += line.size() + 1;
      if (chunk.size() >= 4096) chunks.push_back(std::move(chunk)), chunk.clear();
    }
    if (!chunk.empty()) chunks.push_back(std::move(chunk));
  }
  return chunks;
}

template <typename F>
double best_seconds(int repeats, F&& f) {
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

nlohmann::json run_reference(const Options& o, const fs::path& tokenizer_json,
                             const fs::path& chunks_file) {
  const std::string command = "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false '" + o.python +
                              "' '" KIVI_BENCH_DIR "/reference_bench.py' '" +
                              tokenizer_json.string() + "' '" + chunks_file.string() + "' " +
                              std::to_string(o.repeats);
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string output;
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) throw std::runtime_error("the reference benchmark failed: " + command);
  return nlohmann::json::parse(output);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse_options(argc, argv);
  const auto chunks = make_chunks(o.shared / "corpora", o.megabytes);
  std::size_t bytes = 0;
  for (const auto& c : chunks) bytes += c.size();
  const fs::path chunks_file =
      fs::temp_directory_path() / ("kivi_tokenizer_bench_" + std::to_string(getpid()) + ".json");
  std::ofstream(chunks_file) << nlohmann::json(chunks).dump();

  std::printf("%zu chunks, %.2f MB of text, best of %d runs, single-threaded\n", chunks.size(),
              bytes / 1e6, o.repeats);
  std::printf("%-10s %10s %10s %7s   %10s %10s %7s   %s\n", "tokenizer", "enc kivi", "enc ref",
              "ratio", "dec kivi", "dec ref", "ratio", "tokens (kivi/ref)");
  for (const auto& name : o.names) {
    const fs::path json = o.shared / "tokenizers" / name / "tokenizer.json";
    const auto tokenizer = kivi::text::Tokenizer::from_file(json);
    std::vector<std::vector<int32_t>> ids(chunks.size());
    const double encode = best_seconds(o.repeats, [&] {
      for (std::size_t i = 0; i < chunks.size(); ++i) ids[i] = tokenizer.encode(chunks[i], false);
    });
    std::size_t tokens = 0, decoded_bytes = 0;
    for (const auto& v : ids) tokens += v.size();
    const double decode = best_seconds(o.repeats, [&] {
      decoded_bytes = 0;
      for (const auto& v : ids) decoded_bytes += tokenizer.decode(v, false).size();
    });
    const auto ref = run_reference(o, json, chunks_file);
    const double mb = bytes / 1e6;
    const double enc_kivi = mb / encode, enc_ref = mb / ref["encode_seconds"].get<double>();
    const double dec_kivi = mb / decode, dec_ref = mb / ref["decode_seconds"].get<double>();
    std::printf("%-10s %7.2f MB/s %7.2f MB/s %6.2fx   %7.2f MB/s %7.2f MB/s %6.2fx   %zu/%zu\n",
                name.c_str(), enc_kivi, enc_ref, enc_kivi / enc_ref, dec_kivi, dec_ref,
                dec_kivi / dec_ref, tokens, ref["tokens"].get<std::size_t>());
    std::fflush(stdout);
  }
  fs::remove(chunks_file);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kivi_tokenizer_bench: %s\n", e.what());
  return 1;
}
