#include "model_test_support.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/safetensors.h"
#include "kivi/plugin/plugin.h"
#include "test_paths.h"

KIVI_DECLARE_PLUGIN(kivi_llama);
KIVI_DECLARE_PLUGIN(kivi_qwen2);
KIVI_DECLARE_PLUGIN(kivi_attention);
KIVI_DECLARE_PLUGIN(kivi_fp_cache);
KIVI_DECLARE_PLUGIN(kivi_kivi_cache);

namespace kivi::test {

const std::vector<std::string>& model_fixture_names() {
  static const std::vector<std::string> names = {"llama-gqa-llama3", "llama-tied-hd64",
                                                 "llama2-mha", "qwen2-bias-gqa7", "qwen2-tied"};
  return names;
}

std::filesystem::path model_fixture(const std::string& name) {
  return fixtures_dir() / "models" / name;
}

const Registry& model_registry() {
  static Registry* registry = [] {
    auto* r = new Registry();
    r->add_static(kivi_plugin_descriptor_kivi_llama());
    r->add_static(kivi_plugin_descriptor_kivi_qwen2());
    r->add_static(kivi_plugin_descriptor_kivi_attention());
    r->add_static(kivi_plugin_descriptor_kivi_fp_cache());
    r->add_static(kivi_plugin_descriptor_kivi_kivi_cache());
    return r;
  }();
  return *registry;
}

std::map<std::string, at::Tensor> load_reference(const std::string& fixture) {
  const SafetensorsFile file(model_fixture(fixture) / "reference.safetensors");
  std::map<std::string, at::Tensor> out;
  for (const auto& name : file.names()) out[name] = file.tensor(name).clone();
  return out;
}

LoadedModel load_fixture_model(const std::string& fixture, const std::string& attention,
                               at::ScalarType dtype, at::Device device) {
  ModelOptions options;
  options.dtype = dtype;
  options.device = device;
  options.attention = model_registry().create<Attention>(attention);
  return load_model(model_registry(), model_fixture(fixture), options);
}

namespace {

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

// One decode step: token[b] at position cache.length(b) for every row.
at::Tensor step(CausalLM& model, KVCache& cache, const at::Tensor& tokens /* [B, 1] */) {
  const int64_t batch = tokens.size(0);
  std::vector<int64_t> pos(batch);
  for (int64_t b = 0; b < batch; ++b) pos[b] = cache.length(b);
  const at::Tensor positions = at::tensor(pos, at::kLong).view({batch, 1});
  return model.forward(tokens, positions, {}, cache);  // [B, 1, V]
}

}  // namespace

double half_precision_bound(at::ScalarType dtype) {
  return dtype == at::kHalf ? 0.05 : 0.4;
}

std::string greedy_agreement(const GoldenResult& r) {
  size_t agree = 0, total = 0;
  for (size_t b = 0; b < r.greedy.size(); ++b) {
    size_t i = 0;
    while (i < r.greedy[b].size() && r.greedy[b][i] == r.greedy_reference[b][i]) ++i;
    agree += i;
    total += r.greedy[b].size();
  }
  return std::to_string(agree) + "/" + std::to_string(total);
}

GoldenResult run_golden(CausalLM& model, const std::string& fixture, const std::string& cache_name,
                        const std::string& cache_options) {
  const auto ref = load_reference(fixture);
  const at::Tensor prompt_ids = ref.at("prompt_ids");  // [B, Tmax]
  const std::vector<int64_t> lengths = to_vector(ref.at("prompt_lengths"));
  const at::Tensor decode_ids = ref.at("decode_ids");  // [B, S]
  const int64_t batch = prompt_ids.size(0), tmax = prompt_ids.size(1), steps = decode_ids.size(1);
  const at::Tensor positions =
      at::arange(tmax, at::kLong).unsqueeze(0).expand({batch, tmax}).contiguous();
  auto factory = model_registry().create<KVCacheFactory>(cache_name, cache_options);
  auto diff = [](const at::Tensor& a, const at::Tensor& b) {
    return (a.to(at::kCPU, at::kFloat) - b).abs().max().item<double>();
  };
  GoldenResult result;

  // Prefill of the padded batch, then token-by-token decode.
  auto cache = factory->create(model.cache_geometry(batch));
  const at::Tensor prefill = model.forward(prompt_ids, positions, lengths, *cache);  // [B, Tmax, V]
  for (int64_t b = 0; b < batch; ++b)
    result.prefill_max_diff = std::max(result.prefill_max_diff,
                                       diff(prefill[b].narrow(0, 0, lengths[b]),
                                            ref.at("prefill_logits")[b].narrow(0, 0, lengths[b])));
  for (int64_t s = 0; s < steps; ++s) {
    const at::Tensor logits = step(model, *cache, decode_ids.narrow(1, s, 1).contiguous());
    result.decode_max_diff = std::max(
        result.decode_max_diff, diff(logits.squeeze(1), ref.at("decode_logits").select(1, s)));
  }

  // The same decode tokens as one chunk of S after the prompt (decode with T > 1).
  auto chunk_cache = factory->create(model.cache_geometry(batch));
  model.forward(prompt_ids, positions, lengths, *chunk_cache);
  at::Tensor chunk_positions =
      at::tensor(lengths, at::kLong).view({batch, 1}) + at::arange(steps, at::kLong);
  const at::Tensor chunk =
      model.forward(decode_ids, chunk_positions, {}, *chunk_cache);  // [B, S, V]
  result.chunk_max_diff = diff(chunk, ref.at("decode_logits"));

  // Greedy: the argmax after the prompt, then each chosen token fed back.
  auto greedy_cache = factory->create(model.cache_geometry(batch));
  const at::Tensor first = model.forward(prompt_ids, positions, lengths, *greedy_cache);
  std::vector<at::Tensor> last;
  for (int64_t b = 0; b < batch; ++b) last.push_back(first[b][lengths[b] - 1]);
  at::Tensor next = at::stack(last).argmax(-1).view({batch, 1}).to(at::kCPU);  // [B, 1]
  const int64_t greedy_tokens = ref.at("greedy_ids").size(1);
  std::vector<at::Tensor> chosen = {next};
  for (int64_t i = 1; i < greedy_tokens; ++i) {
    next = step(model, *greedy_cache, next).argmax(-1).to(at::kCPU);
    chosen.push_back(next);
  }
  const at::Tensor greedy = at::cat(chosen, 1);  // [B, 32]
  for (int64_t b = 0; b < batch; ++b) {
    result.greedy.push_back(to_vector(greedy[b]));
    result.greedy_reference.push_back(to_vector(ref.at("greedy_ids")[b]));
  }
  return result;
}

}  // namespace kivi::test

#include <ftw.h>
#include <unistd.h>

#include <fstream>

#include <nlohmann/json.hpp>

namespace kivi::test {

void write_safetensors(const std::filesystem::path& file,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  static const std::map<at::ScalarType, std::string> names = {
      {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kLong, "I64"}};
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::string data;
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor t = tensor.to(at::kCPU).contiguous();
    const size_t begin = data.size();
    data.append(static_cast<const char*>(t.data_ptr()), t.nbytes());
    header[name] = {{"dtype", names.at(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // 8-byte aligned data, as the format advises
  std::ofstream out(file, std::ios::binary);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << text << data;
}

void write_raw_safetensors(const std::filesystem::path& file, const std::string& header,
                           size_t data_bytes) {
  std::ofstream out(file, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}

void remove_tree(const std::filesystem::path& dir) {
  // Not std::filesystem::remove_all: the torch wheel's libtorch.so exports its own broken
  // copy of that symbol, which crashes when it wins symbol resolution.
  ::nftw(
      dir.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

TempDir::TempDir(const std::string& tag)
    : path(std::filesystem::temp_directory_path() /
           ("kivi-" + tag + "-" + std::to_string(::getpid()))) {
  remove_tree(path);
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  remove_tree(path);
}

}  // namespace kivi::test
