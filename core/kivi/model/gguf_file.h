// A memory-mapped GGUF file (llama.cpp's format, versions 2 and 3): the "GGUF" magic, the
// version, a metadata key/value table and a tensor table, then the aligned tensor data.
// Everything is checked before any tensor is handed out: every read stays inside the file,
// counts and lengths are bounded by the bytes left, tensor types are known, each tensor's
// data (type size x shape) lies inside the data section. A truncated or lying file is a
// kivi::Error naming the file and the field or tensor, never a read past the end.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <ATen/Tensor.h>

namespace kivi {

class MappedFile;

// ggml's tensor types (ggml.h numbering). Only those in gguf_dequantize.h can be read.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};
// "Q4_1", or "type 77" for a number ggml does not define.
std::string ggml_type_name(uint32_t type);

// One metadata value. Arrays hold scalars or strings of one type (GGUF has no nested arrays
// in practice; a nested one is an error).
struct GgufValue {
  enum class Kind { kUInt, kInt, kFloat, kBool, kString, kArray };
  using Array = std::variant<std::vector<int64_t>, std::vector<double>, std::vector<std::string>>;
  Kind kind = Kind::kUInt;
  uint32_t gguf_type = 0;  // the stored GGUF value type (4 = uint32, 8 = string, 9 = array, ...)
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  Array array;  // int64 for every integer and bool element type, double for floats
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> shape;  // PyTorch order: outermost first (GGUF's ne reversed)
  uint64_t offset = 0;         // from the start of the data section
  uint64_t bytes = 0;          // type size x elements
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and validates the file; throws kivi::Error on any inconsistency.
  explicit GgufFile(const std::filesystem::path& file);
  ~GgufFile();

  const std::filesystem::path& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& tensor) const { return by_name_.count(tensor) > 0; }
  const GgufTensorInfo& tensor_info(const std::string& tensor) const;

  // Typed metadata lookups; a present key of another type is an error naming it.
  bool has(const std::string& key) const { return metadata_.count(key) > 0; }
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;   // any integer type
  std::optional<double> get_float(const std::string& key) const;  // float or integer
  std::optional<bool> get_bool(const std::string& key) const;
  const std::vector<std::string>* get_strings(const std::string& key) const;
  const std::vector<int64_t>* get_ints(const std::string& key) const;

  // The tensor dequantized to float32 on the CPU, in PyTorch layout (shape()).
  at::Tensor dequantize(const std::string& tensor) const;

 private:
  const GgufValue& value(const std::string& key) const;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t data_start_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace kivi
