// Deeply nested JSON in config.json and safetensors headers: a clear error naming the file,
// not a stack overflow while printing the offending value. The inputs are built here.

#include <string>

#include "kivi/model/model_config.h"
#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"
#include "model_test_support.h"

#include "kivi_catch.h"  // last: keeps Catch's CHECK over c10's

using namespace kivi;
using Catch::Matchers::Contains;

namespace {

std::string nested(int depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

}  // namespace

TEST_CASE("model config: JSON nested past the bound is an error naming the file",
          "[model][config][bad]") {
  CHECK_THROWS_WITH(
      parse_model_config(R"({"eos_token_id": )" + nested(200000) + "}", "deep/config.json"),
      Contains("deep/config.json") && Contains("nested more than 512 levels"));
  // Just inside the bound: the usual field error, which prints the value.
  CHECK_THROWS_WITH(parse_model_config(R"({"vocab_size": )" + nested(500) + "}", "m/config.json"),
                    Contains("vocab_size"));
  // A number too large for a double: nlohmann's out_of_range, now the file's JSON error.
  CHECK_THROWS_WITH(parse_model_config(R"({"rms_norm_eps": 2e599})", "m/config.json"),
                    Contains("m/config.json: malformed JSON") && Contains("number overflow"));
}

TEST_CASE("safetensors: a header nested past the bound is an error naming the file",
          "[model][safetensors][bad]") {
  test::TempDir dir("st-deep");
  const auto file = dir.path / "model.safetensors";
  test::write_raw_safetensors(
      file,
      R"({"w": {"dtype": "F32", "shape": )" + nested(100000) + R"(, "data_offsets": [0, 0]}})", 0);
  CHECK_THROWS_WITH(SafetensorsFile(file),
                    Contains(file.string()) && Contains("nested more than 512 levels"));
  // Strings may hold brackets: only real nesting counts.
  test::write_raw_safetensors(
      file,
      R"({"__metadata__": {"note": ")" + std::string(5000, '[') +
          R"("}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
      4);
  CHECK(SafetensorsFile(file).contains("w"));
}
