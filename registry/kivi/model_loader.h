// Loading a model through the registry: config.json's `architectures` picks the
// "model_family" plugin that declares it, and that family builds the CausalLM.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "kivi/model/causal_lm.h"
#include "kivi/model/gguf_file.h"
#include "kivi/model/model_family.h"
#include "kivi/registry.h"

namespace kivi {

// The family plugin name whose architectures() include one of config.architectures (in the
// config's order). Throws kivi::Error naming config.json, the architectures it lists and the
// ones the loaded families accept.
std::string resolve_model_family(const Registry& registry, const ModelConfig& config);

struct LoadedModel {
  std::shared_ptr<ModelFamily> family;  // kept alive: it made the model
  std::string family_name;
  std::unique_ptr<CausalLM> model;
};

// The convention of a GGUF file: asked of each loaded family (ModelFamily::gguf) for the file's
// general.architecture. Throws naming the file, its architecture and those the families read.
GgufConvention resolve_gguf_convention(const Registry& registry, const GgufFile& file);

// A checkpoint's config: <folder>/config.json, or the metadata of a .gguf file (through the
// family that reads its architecture).
ModelConfig load_checkpoint_config(const Registry& registry,
                                   const std::filesystem::path& folder_or_gguf);

// Reads <folder>/config.json, resolves the family and builds the model from `weight_format`
// ("safetensors" from the folder, or "dummy" random weights with `seed`). `folder` may also be
// a GGUF file: its metadata is the config and its tensors the weights (unless "dummy").
LoadedModel load_model(const Registry& registry, const std::filesystem::path& folder,
                       const ModelOptions& options,
                       const std::string& weight_format = "safetensors", uint64_t seed = 0);

}  // namespace kivi
