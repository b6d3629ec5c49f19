#include "kivi/model/weight_source.h"

#include <fstream>
#include <functional>
#include <mutex>
#include <set>

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"
#include "kivi/util/json_limits.h"

namespace kivi {
namespace fs = std::filesystem;

SafetensorsWeights::SafetensorsWeights(const fs::path& folder) : folder_(folder) {
  const fs::path index = folder / "model.safetensors.index.json";
  const fs::path single = folder / "model.safetensors";
  if (fs::exists(index)) {
    // Sharded: the index maps every tensor name to its shard file.
    std::ifstream in(index);
    check(static_cast<bool>(in), index.string() + ": cannot open");
    nlohmann::json root;
    try {
      root =
          parse_json_bounded(std::string(std::istreambuf_iterator<char>(in), {}), index.string());
    } catch (const nlohmann::json::exception& e) {
      throw Error(index.string() + ": malformed JSON: " + e.what());
    }
    check(root.is_object() && root.contains("weight_map") && root["weight_map"].is_object(),
          index.string() + ": expected an object with a \"weight_map\" object");
    std::map<std::string, const SafetensorsFile*> by_file;
    for (const auto& [name, file] : root["weight_map"].items()) {
      check(file.is_string(), index.string() + ": weight_map[\"" + name + "\"] is " + file.dump() +
                                  ", expected a file name");
      const std::string shard = file.get<std::string>();
      check(fs::path(shard).filename() == shard, index.string() + ": weight_map[\"" + name +
                                                     "\"] = \"" + shard +
                                                     "\" is not a file in the folder");
      if (!by_file.count(shard)) {
        files_.push_back(std::make_unique<SafetensorsFile>(folder / shard));
        by_file[shard] = files_.back().get();
      }
      const SafetensorsFile* f = by_file[shard];
      check(f->contains(name), f->path().string() + ": no tensor \"" + name + "\", which " +
                                   index.string() + " says is there");
      where_[name] = f;
    }
  } else if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& name : files_.back()->names()) where_[name] = files_.back().get();
  } else {
    throw Error(folder.string() +
                ": no model.safetensors or model.safetensors.index.json (expected a "
                "Hugging Face checkpoint folder)");
  }
}

SafetensorsWeights::~SafetensorsWeights() = default;

bool SafetensorsWeights::contains(const std::string& name) const {
  return where_.count(name) > 0;
}

at::Tensor SafetensorsWeights::mapped(const std::string& name, at::IntArrayRef shape) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::string files;
    for (const auto& f : files_)
      files += (files.empty() ? "" : ", ") + f->path().filename().string();
    throw Error(folder_.string() + ": tensor \"" + name + "\" is missing from the checkpoint (" +
                files + ")");
  }
  const SafetensorsFile& file = *it->second;
  const SafetensorsEntry& e = file.entry(name);
  check(at::IntArrayRef(e.shape) == shape,
        file.path().string() + ": tensor \"" + name + "\" has shape " + shape_string(e.shape) +
            ", expected " + shape_string(shape) + " from config.json");
  const at::ScalarType stored = e.dtype;
  check(stored == at::kFloat || stored == at::kHalf || stored == at::kBFloat16,
        file.path().string() + ": tensor \"" + name + "\" is stored as " + c10::toString(stored) +
            ", expected a float32, float16 or bfloat16 weight");
  return file.tensor(name);
}

at::Tensor SafetensorsWeights::load(const std::string& name, at::IntArrayRef shape,
                                    const at::TensorOptions& options) {
  // copy = true: the result never aliases the mapping, even when dtype and device match.
  return mapped(name, shape).to(options, /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor SafetensorsWeights::load_slice(const std::string& name, at::IntArrayRef shape,
                                          int64_t dim, int64_t start, int64_t length,
                                          const at::TensorOptions& options) {
  // Only the slice is read from the mapping, converted and copied (contiguous in the result).
  return mapped(name, shape)
      .narrow(dim, start, length)
      .to(options, /*non_blocking=*/false, /*copy=*/true)
      .contiguous();
}

at::Tensor WeightSource::load_slice(const std::string& name, at::IntArrayRef shape, int64_t dim,
                                    int64_t start, int64_t length,
                                    const at::TensorOptions& options) {
  // clone: the shard must not keep the whole tensor alive as a view of it.
  return load(name, shape, options).narrow(dim, start, length).clone(at::MemoryFormat::Contiguous);
}

at::Tensor DummyWeights::load(const std::string& name, at::IntArrayRef shape,
                              const at::TensorOptions& options) {
  // The default generator of the target device, re-seeded per tensor under its lock, so the
  // values are made where they live (no host round trip for an 8B model on a GPU).
  at::Generator gen = at::globalContext().defaultGenerator(options.device());
  const uint64_t seed = seed_ * 1000003u + std::hash<std::string>{}(name);
  at::Tensor out = at::empty(shape, options.dtype(at::kFloat));
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  const bool is_norm = name.find("norm") != std::string::npos;
  const bool is_bias = name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0;
  if (shape.size() == 1 && is_norm)
    out.uniform_(0.8, 1.2, gen);
  else if (shape.size() == 1 || is_bias)
    out.normal_(0.0, 0.02, gen);
  else
    out.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(shape.back())), gen);
  return out.to(options.dtype());
}

std::unique_ptr<WeightSource> make_weight_source(const std::string& format, const fs::path& folder,
                                                 uint64_t seed) {
  if (format == "safetensors") return std::make_unique<SafetensorsWeights>(folder);
  if (format == "dummy") return std::make_unique<DummyWeights>(seed);
  throw Error("weight format \"" + format +
              "\" is not known; expected \"safetensors\" or \"dummy\"");
}

}  // namespace kivi
