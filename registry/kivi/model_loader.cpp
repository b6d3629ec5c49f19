#include "kivi/model_loader.h"

#include "kivi/model/gguf_weights.h"
#include "kivi/model/weight_source.h"
#include "kivi/util/error.h"

namespace kivi {

std::string resolve_model_family(const Registry& registry, const ModelConfig& config) {
  const auto names = registry.names(ModelFamily::kPluginKind);
  std::string known;
  for (const std::string& wanted : config.architectures) {
    for (const std::string& name : names) {
      auto family = registry.create<ModelFamily>(name);
      for (const std::string& arch : family->architectures())
        if (arch == wanted) return name;
    }
  }
  for (const std::string& name : names) {
    auto family = registry.create<ModelFamily>(name);
    for (const std::string& arch : family->architectures())
      known += (known.empty() ? "" : ", ") + arch + " (" + name + ")";
  }
  std::string listed;
  for (const auto& a : config.architectures) listed += (listed.empty() ? "\"" : ", \"") + a + "\"";
  throw Error(config.source + ": field \"architectures\" is [" + listed +
              "], which no loaded model_family plugin builds; known: " +
              (known.empty() ? std::string("none (no model_family plugins are loaded)") : known));
}

GgufConvention resolve_gguf_convention(const Registry& registry, const GgufFile& file) {
  const std::string arch = gguf_architecture(file);
  std::string known;
  for (const std::string& name : registry.names(ModelFamily::kPluginKind)) {
    auto family = registry.create<ModelFamily>(name);
    if (auto convention = family->gguf(arch)) return *convention;
    known += (known.empty() ? "" : ", ") + name;
  }
  throw Error(file.path().string() + ": metadata \"general.architecture\" is \"" + arch +
              "\", which no loaded model_family plugin reads (families loaded: " +
              (known.empty() ? std::string("none") : known) + ")");
}

ModelConfig load_checkpoint_config(const Registry& registry,
                                   const std::filesystem::path& folder_or_gguf) {
  if (is_gguf_file(folder_or_gguf)) {
    const GgufFile file(folder_or_gguf);
    return gguf_model_config(file, resolve_gguf_convention(registry, file));
  }
  return load_model_config(folder_or_gguf);
}

LoadedModel load_model(const Registry& registry, const std::filesystem::path& folder,
                       const ModelOptions& options, const std::string& weight_format,
                       uint64_t seed) {
  std::shared_ptr<const GgufFile> gguf;
  if (is_gguf_file(folder)) gguf = std::make_shared<const GgufFile>(folder);
  std::optional<GgufConvention> convention;
  if (gguf) convention = resolve_gguf_convention(registry, *gguf);
  const ModelConfig config =
      gguf ? gguf_model_config(*gguf, *convention) : load_model_config(folder);
  LoadedModel loaded;
  loaded.family_name = resolve_model_family(registry, config);
  loaded.family = registry.create<ModelFamily>(loaded.family_name);
  std::unique_ptr<WeightSource> weights;
  if (gguf && weight_format == "safetensors")  // the default format: the file's own tensors
    weights = std::make_unique<GgufWeights>(gguf, config, *convention);
  else
    weights = make_weight_source(weight_format, folder, seed);
  loaded.model = loaded.family->build(config, *weights, options);
  return loaded;
}

}  // namespace kivi
