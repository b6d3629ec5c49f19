// Bad checkpoints end in a kivi::Error that names the file and the tensor or field, never a
// crash: no weights, a truncated file, a missing tensor, a wrong-shaped tensor, an unknown
// architecture, an unsupported rope type.

#include <fstream>

#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"
#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = "llama2-mha";

// A copy of the fixture's config and weights, with the weights passed through `edit`.
void copy_fixture(
    const fs::path& to,
    const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
  fs::copy_file(test::model_fixture(kFixture) / "config.json", to / "config.json");
  const SafetensorsFile file(test::model_fixture(kFixture) / "model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : file.names()) tensors.emplace_back(name, file.tensor(name).clone());
  edit(tensors);
  test::write_safetensors(to / "model.safetensors", tensors);
}

// Replaces the first `from` in <folder>/config.json with `to`.
void edit_config(const fs::path& folder, const std::string& from, const std::string& to) {
  std::ifstream in(folder / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find(from), from.size(), to);
  std::ofstream(folder / "config.json") << text;
}

LoadedModel load(const fs::path& folder) {
  ModelOptions options;
  options.attention = test::model_registry().create<Attention>("eager");
  return load_model(test::model_registry(), folder, options);
}

}  // namespace

TEST_CASE("bad checkpoint: no weights in the folder", "[model][bad]") {
  test::TempDir dir("ckpt-none");
  fs::copy_file(test::model_fixture(kFixture) / "config.json", dir.path / "config.json");
  CHECK_THROWS_WITH(load(dir.path),
                    Contains(dir.path.string()) && Contains("no model.safetensors"));
}

TEST_CASE("bad checkpoint: a truncated safetensors file", "[model][bad]") {
  test::TempDir dir("ckpt-truncated");
  copy_fixture(dir.path, [](auto&) {});
  fs::resize_file(dir.path / "model.safetensors",
                  fs::file_size(dir.path / "model.safetensors") - 100);
  CHECK_THROWS_WITH(load(dir.path), Contains((dir.path / "model.safetensors").string()) &&
                                        Contains("past the end") && Contains("tensor \""));
}

TEST_CASE("bad checkpoint: a missing tensor", "[model][bad]") {
  test::TempDir dir("ckpt-missing");
  copy_fixture(dir.path, [](auto& tensors) {
    std::erase_if(tensors,
                  [](const auto& t) { return t.first == "model.layers.1.mlp.down_proj.weight"; });
  });
  CHECK_THROWS_WITH(load(dir.path),
                    Contains(dir.path.string()) &&
                        Contains("\"model.layers.1.mlp.down_proj.weight\" is missing"));
}

TEST_CASE("bad checkpoint: a tensor of the wrong shape", "[model][bad]") {
  test::TempDir dir("ckpt-shape");
  copy_fixture(dir.path, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "model.layers.0.self_attn.k_proj.weight") t = t.narrow(0, 0, 32).contiguous();
  });
  CHECK_THROWS_WITH(load(dir.path), Contains((dir.path / "model.safetensors").string()) &&
                                        Contains("\"model.layers.0.self_attn.k_proj.weight\"") &&
                                        Contains("[32, 64]") && Contains("expected [64, 64]"));
}

TEST_CASE("bad checkpoint: an architecture no family builds", "[model][bad]") {
  test::TempDir dir("ckpt-arch");
  copy_fixture(dir.path, [](auto&) {});
  edit_config(dir.path, "LlamaForCausalLM", "FooForCausalLM");
  CHECK_THROWS_WITH(load(dir.path), Contains((dir.path / "config.json").string()) &&
                                        Contains("\"FooForCausalLM\"") &&
                                        Contains("LlamaForCausalLM (llama)") &&
                                        Contains("Qwen2ForCausalLM (qwen2)"));
}

TEST_CASE("bad checkpoint: an unsupported rope type", "[model][bad]") {
  test::TempDir dir("ckpt-rope");
  copy_fixture(dir.path, [](auto&) {});
  edit_config(dir.path, "\"linear\"", "\"longrope\"");
  CHECK_THROWS_WITH(load(dir.path), Contains((dir.path / "config.json").string()) &&
                                        Contains("rope_scaling.type") && Contains("longrope"));
}
