// The Qwen3 plugin against transformers (fixture/qwen3-tiny, from
// tools/fixtures/make_qwen3_fixture.py): CPU float32, the fp32 cache and the sdpa attention of
// the installed kivi. Per prompt: the prompt's logits, then decode steps one token at a time,
// then a 32-token greedy continuation. Bounds: max |logit diff| <= 1e-4, greedy identical.
// usage: qwen3_golden <plugin folder> <fixture folder>  (the folder the plugin was dropped into)
#include <iostream>

#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/cache/kv_cache.h"
#include "kivi/model/safetensors.h"
#include "kivi/model_loader.h"
#include "kivi/registry.h"

namespace {

at::Tensor forward(kivi::CausalLM& model, kivi::KVCache& cache,
                   const at::Tensor& ids /* [1, T] */) {
  const at::Tensor positions = (at::arange(ids.size(1), at::kLong) + cache.length(0)).unsqueeze(0);
  return model.forward(ids, positions, {}, cache)[0];  // [T, V]
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: qwen3_golden <plugin folder> <fixture folder>\n";
    return 2;
  }
  kivi::Registry registry;
  registry.load_dir(argv[1]);
  for (const auto& r : registry.refused())
    std::cerr << "refused: " << r.file << ": " << r.reason << "\n";
  kivi::ModelOptions options;
  options.attention = registry.create<kivi::Attention>("sdpa");
  const kivi::LoadedModel loaded = kivi::load_model(registry, argv[2], options);
  std::cout << "family " << loaded.family_name << "\n";
  const kivi::SafetensorsFile ref(std::filesystem::path(argv[2]) / "reference.safetensors");
  const at::Tensor prompts = ref.tensor("prompt_ids"), lengths = ref.tensor("prompt_lengths");
  const at::Tensor decode_ids = ref.tensor("decode_ids"), greedy_ref = ref.tensor("greedy_ids");
  auto factory = registry.create<kivi::KVCacheFactory>("fp32");
  double worst = 0;
  bool greedy_same = true;
  for (int64_t b = 0; b < prompts.size(0); ++b) {
    const int64_t n = lengths[b].item<int64_t>();
    const at::Tensor ids = prompts[b].narrow(0, 0, n).unsqueeze(0);
    auto cache = factory->create(loaded.model->cache_geometry(1));
    worst = std::max(worst, (forward(*loaded.model, *cache, ids) -
                             ref.tensor("prefill_logits")[b].narrow(0, 0, n))
                                .abs()
                                .max()
                                .item<double>());
    for (int64_t s = 0; s < decode_ids.size(1); ++s) {
      const at::Tensor logits =
          forward(*loaded.model, *cache, decode_ids[b].narrow(0, s, 1).unsqueeze(0));
      worst = std::max(worst,
                       (logits[0] - ref.tensor("decode_logits")[b][s]).abs().max().item<double>());
    }
    auto greedy_cache = factory->create(loaded.model->cache_geometry(1));
    at::Tensor next = forward(*loaded.model, *greedy_cache, ids)[n - 1].argmax().view({1, 1});
    for (int64_t i = 0; i < greedy_ref.size(1); ++i) {
      greedy_same = greedy_same && next.item<int64_t>() == greedy_ref[b][i].item<int64_t>();
      next = forward(*loaded.model, *greedy_cache, next)[0].argmax().view({1, 1});
    }
  }
  std::cout << "max |logit diff| " << worst << " (bound 1e-4); greedy "
            << (greedy_same ? "identical" : "DIFFERS") << "\n";
  return worst <= 1e-4 && greedy_same ? 0 : 1;
}
