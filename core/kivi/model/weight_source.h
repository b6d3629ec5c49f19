// Where a model's weights come from. A family asks for each tensor by its checkpoint name and
// the shape the config implies; the source checks the shape and hands it over converted to the
// requested dtype and device. Implementations: safetensors checkpoints (one file or sharded,
// memory-mapped) and `dummy` (random weights of the right shapes, for benchmarking real
// configurations without their weights).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace kivi {

class SafetensorsFile;

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // For messages, e.g. the checkpoint folder.
  virtual std::string describe() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  // The tensor `name`, which must have exactly `shape`, as a fresh tensor (never aliasing a
  // file mapping) of `options`' dtype on its device. Throws kivi::Error naming the file and
  // tensor when it is missing or has another shape.
  virtual at::Tensor load(const std::string& name, at::IntArrayRef shape,
                          const at::TensorOptions& options) = 0;
  // Entries [start, start + length) along dimension `dim` of the tensor `name` (which must have
  // `shape`): a tensor-parallel rank's shard. The default loads the whole tensor and slices it;
  // safetensors converts and copies only the slice.
  virtual at::Tensor load_slice(const std::string& name, at::IntArrayRef shape, int64_t dim,
                                int64_t start, int64_t length, const at::TensorOptions& options);
};

// A Hugging Face checkpoint folder: model.safetensors, or model.safetensors.index.json with
// its shards. Every file is mapped and validated when the source is made.
class SafetensorsWeights final : public WeightSource {
 public:
  explicit SafetensorsWeights(const std::filesystem::path& folder);
  ~SafetensorsWeights() override;
  std::string describe() const override { return folder_.string(); }
  bool contains(const std::string& name) const override;
  at::Tensor load(const std::string& name, at::IntArrayRef shape,
                  const at::TensorOptions& options) override;
  at::Tensor load_slice(const std::string& name, at::IntArrayRef shape, int64_t dim, int64_t start,
                        int64_t length, const at::TensorOptions& options) override;

 private:
  // The mapped tensor `name` (no copy), after checking that it exists, has `shape` and a
  // floating-point dtype.
  at::Tensor mapped(const std::string& name, at::IntArrayRef shape) const;

  std::filesystem::path folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;  // tensor name -> its file
};

// Random weights from a config alone: normal(0, 1/sqrt(fan_in)) for matrices, around 1 for
// norm weights, small for biases. Each tensor's values depend only on (seed, name), not on
// the order of requests.
class DummyWeights final : public WeightSource {
 public:
  explicit DummyWeights(uint64_t seed) : seed_(seed) {}
  std::string describe() const override {
    return "dummy weights (seed " + std::to_string(seed_) + ")";
  }
  bool contains(const std::string&) const override { return true; }
  at::Tensor load(const std::string& name, at::IntArrayRef shape,
                  const at::TensorOptions& options) override;

 private:
  uint64_t seed_;
};

// "safetensors" reads `folder`; "dummy" makes random weights with `seed`.
std::unique_ptr<WeightSource> make_weight_source(const std::string& format,
                                                 const std::filesystem::path& folder,
                                                 uint64_t seed = 0);

}  // namespace kivi
