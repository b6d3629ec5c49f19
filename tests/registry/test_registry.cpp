// The registry: a good plugin loads and works; every kind of bad library is refused with a
// message saying why, and the others still load; loading many times is harmless.
#include "kivi_catch.h"

#include <ATen/ATen.h>

#include "kivi/cache/kv_cache.h"
#include "kivi/plugin/fingerprint.h"
#include "kivi/plugin/plugin.h"
#include "kivi/registry.h"

KIVI_DECLARE_PLUGIN(kivi_fp_cache);

namespace {

const std::filesystem::path kGood = KIVI_TEST_GOOD_PLUGIN_DIR;
const std::filesystem::path kBad = KIVI_TEST_BAD_PLUGIN_DIR;

std::string refusal_for(const kivi::Registry& registry, const std::string& file_part) {
  for (const auto& r : registry.refused())
    if (r.file.find(file_part) != std::string::npos) return r.reason;
  return "";
}

// A short round trip through a cache made by the registry.
void use_fp16_cache(const kivi::Registry& registry) {
  auto factory = registry.create<kivi::KVCacheFactory>("fp16");
  kivi::CacheGeometry geometry{2, 2, 4, 1, 0, at::kFloat, at::kCPU};
  auto cache = factory->create(geometry);
  at::Tensor k = at::randn({1, 2, 3, 4});
  at::Tensor v = at::randn({1, 2, 3, 4});
  cache->append(0, k, v);
  CHECK(cache->length(0) == 3);
  auto dense = cache->view(0).dense;
  CHECK(at::allclose(dense.k.narrow(2, 0, 3).to(at::kFloat), k.to(at::kHalf).to(at::kFloat)));
}

}  // namespace

TEST_CASE("a good plugin folder loads and its factories work", "[registry]") {
  kivi::Registry registry;
  registry.load_dir(kGood);
  CHECK(registry.refused().empty());
  for (const char* name : {"fp16", "bf16", "fp32"}) CHECK(registry.contains("kv_cache", name));
  const auto list = registry.list();
  const auto fp16 =
      std::find_if(list.begin(), list.end(), [](auto& p) { return p.name == "fp16"; });
  REQUIRE(fp16 != list.end());
  CHECK(fp16->library == "kivi-fp-cache");
  CHECK(fp16->file.find("libkivi-fp-cache.so") != std::string::npos);
  use_fp16_cache(registry);
}

TEST_CASE("bad libraries are refused with a reason and the rest still load", "[registry]") {
  kivi::Registry registry;
  registry.load_dir(kGood);
  registry.load_dir(kBad);

  const std::string abi = refusal_for(registry, "kivi-test-bad_abi");
  CHECK_THAT(abi, Catch::Contains("plugin ABI version 42") && Catch::Contains("ABI version 1"));

  const std::string fingerprint = refusal_for(registry, "kivi-test-bad_fingerprint");
  CHECK_THAT(fingerprint, Catch::Contains("fingerprint differs"));
  CHECK_THAT(fingerprint, Catch::Contains("torch=1.0.0"));              // theirs
  CHECK_THAT(fingerprint, Catch::Contains(kivi::build_fingerprint()));  // ours
  CHECK_FALSE(registry.contains("kv_cache", "mismatched"));

  CHECK_THAT(refusal_for(registry, "kivi-test-no_entry"),
             Catch::Contains("does not export 'kivi_plugin_entry'"));
  // Loaded RTLD_NOW: an unresolved symbol refuses the library at load, naming the symbol.
  CHECK_THAT(refusal_for(registry, "kivi-test-unresolved"),
             Catch::Contains("not a loadable shared library") &&
                 Catch::Contains("kivi_test_symbol_defined_nowhere"));
  // A text file named .so: said so, not dlopen's "Bad file descriptor".
  CHECK_THAT(refusal_for(registry, "libkivi-not-a-library.so"),
             Catch::Contains("not a shared library") && Catch::Contains("ELF"));

  // Only the clashing factory of the drop-in is refused, naming the file that stays in use.
  const std::string duplicate = refusal_for(registry, "kivi-test-duplicate");
  CHECK_THAT(duplicate, Catch::Contains("duplicate plugin kv_cache/fp16 skipped") &&
                            Catch::Contains("libkivi-fp-cache.so") &&
                            Catch::Contains("that one is used"));
  CHECK(registry.contains("kv_cache", "fp16-dropin"));

  // Everything good still works, including the library whose create() throws.
  CHECK(registry.contains("kv_cache", "throwing"));
  CHECK(registry.refused().size() == 6);
  use_fp16_cache(registry);
  CHECK_THROWS_WITH(registry.create<kivi::KVCacheFactory>("throwing"),
                    Catch::Contains("this plugin always fails to create"));
}

TEST_CASE(
    "a drop-in folder loaded first keeps its duplicate, and the built-in library loses only that "
    "name",
    "[registry]") {
  kivi::Registry registry;
  registry.load_dir(kBad);  // as kivi-host loads [plugins] dirs before the default folder
  registry.load_dir(kGood);
  const auto list = registry.list();
  const auto fp16 =
      std::find_if(list.begin(), list.end(), [](auto& p) { return p.name == "fp16"; });
  REQUIRE(fp16 != list.end());
  CHECK(fp16->library == "kivi-test-duplicate");
  // The built-in library's other caches are still there, and they work.
  for (const char* name : {"bf16", "fp32", "fp16-dropin"})
    CHECK(registry.contains("kv_cache", name));
  CHECK_NOTHROW(registry.create<kivi::KVCacheFactory>("fp32"));
  CHECK_THAT(refusal_for(registry, "libkivi-fp-cache.so"),
             Catch::Contains("duplicate plugin kv_cache/fp16 skipped") &&
                 Catch::Contains("kivi-test-duplicate") && Catch::Contains("that one is used"));
}

TEST_CASE("plugin option errors come back as text naming the key", "[registry]") {
  kivi::Registry registry;
  registry.load_dir(kGood);
  CHECK_THROWS_WITH(registry.create<kivi::KVCacheFactory>("fp16", "chunk_tokens = 0"),
                    Catch::Contains("chunk_tokens") && Catch::Contains("out of range"));
  CHECK_THROWS_WITH(registry.create<kivi::KVCacheFactory>("fp16", "chunk_size = 8"),
                    Catch::Contains("chunk_size: unknown key") && Catch::Contains("chunk_tokens"));
  CHECK_THROWS_WITH(registry.create<kivi::KVCacheFactory>("fp16", "chunk_tokens = "),
                    Catch::Contains("malformed TOML"));
  CHECK_THROWS_WITH(
      registry.create<kivi::KVCacheFactory>("fp8"),
      Catch::Contains("no kv_cache plugin named \"fp8\"") && Catch::Contains("bf16, fp16, fp32"));
}

TEST_CASE("a missing plugin folder is an error", "[registry]") {
  kivi::Registry registry;
  CHECK_THROWS_WITH(registry.load_dir(kGood / "no-such-folder"), Catch::Contains("not found"));
}

TEST_CASE("loading and using plugins many times is harmless", "[registry]") {
  for (int round = 0; round < 25; ++round) {
    kivi::Registry registry;
    registry.load_dir(kGood);
    registry.load_dir(kBad);
    REQUIRE(registry.refused().size() == 6);
    use_fp16_cache(registry);
  }
}

TEST_CASE("the same plugin code links statically into a test", "[registry]") {
  kivi::Registry registry;
  REQUIRE(registry.add_static(kivi_plugin_descriptor_kivi_fp_cache()));
  CHECK(registry.list().front().file == "<static>");
  use_fp16_cache(registry);
  // Adding it twice is a duplicate.
  CHECK_FALSE(registry.add_static(kivi_plugin_descriptor_kivi_fp_cache(), "second"));
  CHECK_THAT(registry.refused().back().reason, Catch::Contains("duplicate plugin"));
}
