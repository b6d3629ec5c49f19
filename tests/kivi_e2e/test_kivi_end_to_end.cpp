// KIVI end to end on the bundled trained models (CPU, float32): a prompt longer than the
// residual window, then teacher-forced decode token by token. Against the fp32 cache with
// eager attention: the kivi cache at 16 bits gives the same logits; at 8/4/2 bits the
// divergence of next-token distributions (KL, top-1 agreement) is measured, printed and bounded.
#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/generate/perplexity.h"
#include "kivi/model_loader.h"
#include "kivi/plugin/plugin.h"
#include "kivi/text/tokenizer.h"
#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's
#include "test_paths.h"

KIVI_DECLARE_PLUGIN(kivi_llama);
KIVI_DECLARE_PLUGIN(kivi_qwen2);
KIVI_DECLARE_PLUGIN(kivi_attention);
KIVI_DECLARE_PLUGIN(kivi_fp_cache);
KIVI_DECLARE_PLUGIN(kivi_kivi_cache);

namespace {

constexpr int64_t kPromptTokens = 300;  // > residual_length 128: keys and values get quantized
constexpr int64_t kDecodeTokens = 260;  // crosses two more key flushes (every 128 tokens)

const kivi::Registry& registry() {
  static kivi::Registry* r = [] {
    auto* reg = new kivi::Registry();
    for (const kivi_plugin_v1* d :
         {kivi_plugin_descriptor_kivi_llama(), kivi_plugin_descriptor_kivi_qwen2(),
          kivi_plugin_descriptor_kivi_attention(), kivi_plugin_descriptor_kivi_fp_cache(),
          kivi_plugin_descriptor_kivi_kivi_cache()})
      REQUIRE(reg->add_static(d));
    return reg;
  }();
  return *r;
}

// Held-out text (never trained on) tokenized with the model's own tokenizer.
std::vector<int64_t> held_out_tokens(const std::filesystem::path& model_dir) {
  std::ifstream in(kivi::test::data_dir() / "persuasion-ch1-6.txt");
  std::stringstream text;
  text << in.rdbuf();
  const std::string slice = text.str().substr(20000, 12000);
  const auto tokenizer = kivi::text::Tokenizer::from_file(model_dir / "tokenizer.json",
                                                          model_dir / "tokenizer_config.json");
  const auto ids = tokenizer.encode(slice, true);
  REQUIRE(static_cast<int64_t>(ids.size()) >= kPromptTokens + kDecodeTokens);
  return {ids.begin(), ids.begin() + kPromptTokens + kDecodeTokens};
}

// Log-probabilities [steps, vocab]: the prompt's last position, then each teacher-forced step.
at::Tensor run(kivi::CausalLM& model, const std::vector<int64_t>& tokens,
               const std::string& cache_name, const std::string& cache_options,
               at::Tensor* prefill_logits) {
  auto cache = registry()
                   .create<kivi::KVCacheFactory>(cache_name, cache_options)
                   ->create(model.cache_geometry(1));
  const at::Tensor ids = at::tensor(tokens, at::kLong).view({1, -1});
  const at::Tensor prompt = ids.narrow(1, 0, kPromptTokens);
  const at::Tensor prompt_pos = at::arange(kPromptTokens, at::kLong).view({1, -1});
  const at::Tensor prefill = model.forward(prompt, prompt_pos, {}, *cache);  // [1, P, V]
  *prefill_logits = prefill[0];
  std::vector<at::Tensor> steps = {prefill[0][kPromptTokens - 1]};
  for (int64_t t = kPromptTokens; t < kPromptTokens + kDecodeTokens - 1; ++t) {
    const at::Tensor step =
        model.forward(ids.narrow(1, t, 1), at::full({1, 1}, t, at::kLong), {}, *cache);
    steps.push_back(step[0][0]);
  }
  return at::log_softmax(at::stack(steps), -1);  // [steps, V]
}

struct Divergence {
  double max_abs = 0;  // max |logprob difference|
  double kl = 0;       // mean KL(reference || variant)
  double top1 = 0;     // fraction of steps with the same argmax
};

Divergence compare(const at::Tensor& ref, const at::Tensor& other) {
  Divergence d;
  d.max_abs = (ref - other).abs().max().item<double>();
  d.kl = (ref.exp() * (ref - other)).sum(-1).mean().item<double>();
  d.top1 = ref.argmax(-1).eq(other.argmax(-1)).to(at::kDouble).mean().item<double>();
  return d;
}

}  // namespace

TEST_CASE("kivi on a trained model: 16 bits equals fp32, 8/4/2 bits diverge boundedly",
          "[kivi][e2e]") {
  for (const std::string name : {"kivi-llama-tiny", "kivi-qwen2-tiny"}) {
    const auto dir = kivi::test::source_dir() / "models" / name;
    const auto tokens = held_out_tokens(dir);
    kivi::ModelOptions options;
    options.attention = registry().create<kivi::Attention>("eager");
    auto reference_model = kivi::load_model(registry(), dir, options);
    at::Tensor reference_prefill;
    const at::Tensor reference =
        run(*reference_model.model, tokens, "fp32", "", &reference_prefill);

    options.attention = registry().create<kivi::Attention>("kivi");
    auto kivi_model = kivi::load_model(registry(), dir, options);
    struct Expect {
      int bits;
      double max_kl;
      double min_top1;
    };
    // Measured on both models (2-core x86-64 CPU, float32): KL 9e-9 / 6e-7 / 1.6e-4 / 5.4e-3 and
    // top-1 1 / 1 / >= 0.992 / >= 0.942 at 16 / 8 / 4 / 2 bits. The bounds sit a few times above
    // that, so a regression in quantization or in attention over packed codes shows.
    for (const Expect e : {Expect{16, 1e-6, 1.0}, Expect{8, 1e-5, 0.98}, Expect{4, 1e-3, 0.95},
                           Expect{2, 0.03, 0.85}}) {
      const std::string options_toml =
          "k_bits = " + std::to_string(e.bits) + "\nv_bits = " + std::to_string(e.bits) + "\n";
      at::Tensor prefill;
      const at::Tensor logprobs = run(*kivi_model.model, tokens, "kivi", options_toml, &prefill);
      const Divergence d = compare(reference, logprobs);
      WARN(name << " kivi " << e.bits << "/" << e.bits << " bits over " << kDecodeTokens
                << " steps after a " << kPromptTokens << "-token prompt: KL " << d.kl << ", top-1 "
                << d.top1 << ", max |dlogp| " << d.max_abs);
      INFO(name << " bits " << e.bits);
      // Prefill attends over the prompt's own full-precision K/V at every bit width.
      CHECK((prefill - reference_prefill).abs().max().item<double>() < 1e-4);
      CHECK(d.kl <= e.max_kl);
      CHECK(d.top1 >= e.min_top1);
      if (e.bits == 16) CHECK(d.max_abs < 1e-4);
    }
  }
}

// Chunked evaluation (perplexity in chunks, prompts in pieces) reads the cache the way the
// research code's prefill does: a chunk attends to the cache as stored and to its own K/V in full
// precision, then is stored. So its perplexity is the token-by-token one up to the few tokens
// per chunk that token-by-token decoding sees quantized (measured: see WARN; bound 1%). Before,
// a chunk was stored (and partly quantized) first and read its own tokens back: +42% on SmolLM2.
TEST_CASE("chunked perplexity equals token-by-token perplexity for KIVI-2", "[kivi][e2e]") {
  for (const std::string name : {"kivi-llama-tiny", "kivi-qwen2-tiny"}) {
    const auto dir = kivi::test::source_dir() / "models" / name;
    std::vector<int64_t> tokens = held_out_tokens(dir);
    kivi::ModelOptions options;
    options.attention = registry().create<kivi::Attention>("kivi");
    auto model = kivi::load_model(registry(), dir, options);
    kivi::generate::TextWindow window;
    window.ids = tokens;  // starts with the tokenizer's <bos>
    auto perplexity = [&](int64_t chunk) {
      auto cache = registry()
                       .create<kivi::KVCacheFactory>("kivi", "k_bits = 2\nv_bits = 2\n")
                       ->create(model.model->cache_geometry(1));
      double nll = 0;
      int64_t scored = 0;
      kivi::generate::score_window(*model.model, *cache, window, chunk,
                                   [&](const at::Tensor& log_probs, const at::Tensor& targets) {
                                     nll += kivi::generate::nll_sum(log_probs, targets);
                                     scored += targets.size(0);
                                   });
      return std::exp(nll / static_cast<double>(scored));
    };
    const double token_by_token = perplexity(1);
    for (int64_t chunk : {32, 128}) {
      const double chunked = perplexity(chunk);
      WARN(name << " KIVI-2 perplexity over " << tokens.size() << " tokens: chunks of " << chunk
                << " " << chunked << ", token by token " << token_by_token << " ("
                << 100.0 * (chunked / token_by_token - 1.0) << "%)");
      CHECK(std::abs(chunked / token_by_token - 1.0) < 0.01);
    }
  }
}
