#include "kivi/model/gguf_file.h"

#include <cstring>
#include <string_view>

#include <ATen/ATen.h>

#include "kivi/model/gguf_dequantize.h"
#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"

namespace kivi {
namespace {

// GGUF value types (gguf.h numbering).
enum : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

const char* value_type_name(uint32_t t) {
  static const char* names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                "int32",  "float32", "bool",   "string", "array",
                                "uint64", "int64",   "float64"};
  return t <= kF64 ? names[t] : "unknown";
}

// Where `s` stops being well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF), or s.size() if it never does. (kivi::text::utf8 has the same rules, but kivi_core
// does not link kivi_text; the GGUF error also wants the offset, which is_valid() does not give.)
size_t utf8_error_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      return i;
    }
    if (s.size() - i <= n) return i;
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return i;
    }
    i += n + 1;
  }
  return s.size();
}

// Reads little-endian fields from the mapping; every read is bounds-checked and names what
// was being read when the file ends early.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, std::string file)
      : data_(data), size_(size), file_(std::move(file)) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  const uint8_t* take(uint64_t n, const std::string& what) {
    check(n <= left(), file_ + ": truncated GGUF file: " + what + " needs " + std::to_string(n) +
                           " bytes at offset " + std::to_string(pos_) + ", but only " +
                           std::to_string(left()) + " remain");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  // GGUF strings are UTF-8; anything else is a damaged file (and would break whoever prints or
  // re-encodes it, e.g. the tokenizer.json built from the vocabulary).
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " (length)");
    const uint64_t start = pos_;
    const uint8_t* p = take(n, what);
    std::string s(reinterpret_cast<const char*>(p), n);
    const size_t bad = utf8_error_at(s);
    const std::string named = what.rfind(file_, 0) == 0 ? what : file_ + ": " + what;
    check(bad == s.size(), named + " is not valid UTF-8 (byte " + std::to_string(bad) +
                               " of the string, at offset " + std::to_string(start + bad) +
                               "); GGUF strings are UTF-8");
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string file_;
};

// The smallest stored size of one element of value type `t` (bounds array counts before any
// memory is reserved for them).
uint64_t min_value_bytes(uint32_t t) {
  switch (t) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    default:
      return 8;  // u64, i64, f64, and a string's length
  }
}

// A scalar of integer, float or bool type into `v` (kind and the matching field).
void read_scalar(Cursor& in, uint32_t t, GgufValue& v, const std::string& what) {
  switch (t) {
    case kU8:
      v.kind = GgufValue::Kind::kUInt;
      v.u = in.read<uint8_t>(what);
      break;
    case kU16:
      v.kind = GgufValue::Kind::kUInt;
      v.u = in.read<uint16_t>(what);
      break;
    case kU32:
      v.kind = GgufValue::Kind::kUInt;
      v.u = in.read<uint32_t>(what);
      break;
    case kU64:
      v.kind = GgufValue::Kind::kUInt;
      v.u = in.read<uint64_t>(what);
      break;
    case kI8:
      v.kind = GgufValue::Kind::kInt;
      v.i = in.read<int8_t>(what);
      break;
    case kI16:
      v.kind = GgufValue::Kind::kInt;
      v.i = in.read<int16_t>(what);
      break;
    case kI32:
      v.kind = GgufValue::Kind::kInt;
      v.i = in.read<int32_t>(what);
      break;
    case kI64:
      v.kind = GgufValue::Kind::kInt;
      v.i = in.read<int64_t>(what);
      break;
    case kF32:
      v.kind = GgufValue::Kind::kFloat;
      v.f = in.read<float>(what);
      break;
    case kF64:
      v.kind = GgufValue::Kind::kFloat;
      v.f = in.read<double>(what);
      break;
    case kBool: {
      const uint8_t b = in.read<uint8_t>(what);
      check(b <= 1, what + ": bool value " + std::to_string(b) + " (expected 0 or 1)");
      v.kind = GgufValue::Kind::kBool;
      v.b = b != 0;
      break;
    }
    default:
      throw Error(what + ": unknown GGUF value type " + std::to_string(t));
  }
}

GgufValue read_value(Cursor& in, uint32_t t, const std::string& what) {
  GgufValue v;
  v.gguf_type = t;
  if (t == kString) {
    v.kind = GgufValue::Kind::kString;
    v.s = in.string(what);
  } else if (t == kArray) {
    v.kind = GgufValue::Kind::kArray;
    const uint32_t et = in.read<uint32_t>(what + " (array element type)");
    const uint64_t n = in.read<uint64_t>(what + " (array length)");
    check(et <= kF64 && et != kArray, what + ": array of element type " + std::to_string(et) +
                                          " (" + value_type_name(et) + ") is not supported");
    check(n <= in.left() / min_value_bytes(et),
          what + ": array length " + std::to_string(n) + " cannot fit in the " +
              std::to_string(in.left()) + " bytes left in the file");
    if (et == kString) {
      std::vector<std::string> out(n);
      for (uint64_t k = 0; k < n; ++k) out[k] = in.string(what + "[" + std::to_string(k) + "]");
      v.array = std::move(out);
    } else if (et == kF32 || et == kF64) {
      std::vector<double> out(n);
      GgufValue e;
      for (uint64_t k = 0; k < n; ++k) {
        read_scalar(in, et, e, what);
        out[k] = e.f;
      }
      v.array = std::move(out);
    } else {
      std::vector<int64_t> out(n);
      GgufValue e;
      for (uint64_t k = 0; k < n; ++k) {
        read_scalar(in, et, e, what);
        out[k] = e.kind == GgufValue::Kind::kUInt   ? static_cast<int64_t>(e.u)
                 : e.kind == GgufValue::Kind::kBool ? e.b
                                                    : e.i;
      }
      v.array = std::move(out);
    }
  } else {
    read_scalar(in, t, v, what);
  }
  return v;
}

}  // namespace

std::string ggml_type_name(uint32_t type) {
  static const std::map<uint32_t, const char*> names = {
      {0, "F32"},     {1, "F16"},      {2, "Q4_0"},   {3, "Q4_1"},    {6, "Q5_0"},
      {7, "Q5_1"},    {8, "Q8_0"},     {9, "Q8_1"},   {10, "Q2_K"},   {11, "Q3_K"},
      {12, "Q4_K"},   {13, "Q5_K"},    {14, "Q6_K"},  {15, "Q8_K"},   {16, "IQ2_XXS"},
      {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"},
      {22, "IQ2_S"},  {23, "IQ4_XS"},  {24, "I8"},    {25, "I16"},    {26, "I32"},
      {27, "I64"},    {28, "F64"},     {29, "IQ1_M"}, {30, "BF16"},   {34, "TQ1_0"},
      {35, "TQ2_0"},  {39, "MXFP4"}};
  const auto it = names.find(type);
  return it != names.end() ? it->second : "type " + std::to_string(type);
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

GgufFile::GgufFile(const std::filesystem::path& file)
    : path_(file), file_(std::make_unique<MappedFile>(file)) {
  const std::string where = file.string();
  Cursor in(file_->data(), file_->size(), where);
  const uint8_t* magic = in.take(4, "the magic");
  check(std::memcmp(magic, "GGUF", 4) == 0,
        where + ": not a GGUF file (the first 4 bytes are not \"GGUF\")");
  version_ = in.read<uint32_t>("the version");
  check(version_ == 2 || version_ == 3,
        where + ": GGUF version " + std::to_string(version_) + " is not supported (2 and 3 are)");
  const uint64_t n_tensors = in.read<uint64_t>("the tensor count");
  const uint64_t n_kv = in.read<uint64_t>("the metadata count");
  // Each entry takes at least 12 (key/value) or 24 (tensor) bytes: reject absurd counts now.
  check(n_kv <= in.left() / 12, where + ": metadata count " + std::to_string(n_kv) +
                                    " cannot fit in a file of " + std::to_string(file_->size()) +
                                    " bytes");
  check(n_tensors <= in.left() / 24, where + ": tensor count " + std::to_string(n_tensors) +
                                         " cannot fit in a file of " +
                                         std::to_string(file_->size()) + " bytes");

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string entry = where + ": metadata entry " + std::to_string(k);
    const std::string key = in.string(entry + " key");
    const uint32_t t = in.read<uint32_t>(entry + " (\"" + key + "\") type");
    check(!metadata_.count(key), where + ": metadata key \"" + key + "\" appears twice");
    metadata_[key] = read_value(in, t, where + ": metadata \"" + key + "\"");
  }

  uint64_t alignment = 32;
  if (const auto a = get_int("general.alignment")) {
    check(*a > 0 && (*a & (*a - 1)) == 0, where + ": metadata \"general.alignment\" is " +
                                              std::to_string(*a) + ", expected a power of two");
    alignment = static_cast<uint64_t>(*a);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    const std::string entry = where + ": tensor entry " + std::to_string(k);
    t.name = in.string(entry + " name");
    const std::string tw = where + ": tensor \"" + t.name + "\"";
    const uint32_t n_dims = in.read<uint32_t>(tw + " dimension count");
    check(n_dims >= 1 && n_dims <= 4,
          tw + " has " + std::to_string(n_dims) + " dimensions (expected 1 to 4)");
    std::vector<int64_t> ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = in.read<uint64_t>(tw + " dimension " + std::to_string(d));
      check(n > 0 && n < (uint64_t{1} << 40), tw + " dimension " + std::to_string(d) + " is " +
                                                  std::to_string(n) + " (expected 1 to 2^40)");
      ne[d] = static_cast<int64_t>(n);
      check(numel <= (int64_t{1} << 48) / ne[d], tw + " has more than 2^48 elements");
      numel *= ne[d];
    }
    t.shape.assign(ne.rbegin(), ne.rend());  // GGUF lists the fastest-varying dimension first
    const uint32_t type = in.read<uint32_t>(tw + " type");
    const auto block = ggml_block(type);
    check(block.has_value(),
          tw + " has tensor type " + std::to_string(type) + ", which ggml does not define");
    t.type = static_cast<GgmlType>(type);
    check(ne[0] % block->elements == 0,
          tw + " has " + std::to_string(ne[0]) + " elements per row, not a multiple of " +
              ggml_type_name(type) + "'s block of " + std::to_string(block->elements));
    t.bytes = static_cast<uint64_t>(numel / block->elements * block->bytes);
    t.offset = in.read<uint64_t>(tw + " offset");
    check(t.offset % alignment == 0, tw + " offset " + std::to_string(t.offset) +
                                         " is not a multiple of the alignment " +
                                         std::to_string(alignment));
    check(!by_name_.count(t.name), where + ": tensor \"" + t.name + "\" appears twice");
    by_name_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  data_start_ = (in.pos() + alignment - 1) / alignment * alignment;
  const uint64_t size = file_->size();
  if (tensors_.empty()) return;  // metadata only (e.g. a vocabulary file): no data section
  check(data_start_ <= size, where + ": truncated GGUF file: the data section would start at " +
                                 std::to_string(data_start_) + ", past the end (" +
                                 std::to_string(size) + " bytes)");
  const uint64_t data_bytes = size - data_start_;
  std::multimap<uint64_t, const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) {
    check(t.offset <= data_bytes && t.bytes <= data_bytes - t.offset,
          where + ": tensor \"" + t.name + "\" (" + ggml_type_name(static_cast<uint32_t>(t.type)) +
              " " + shape_string(t.shape) + ", " + std::to_string(t.bytes) +
              " bytes at data offset " + std::to_string(t.offset) +
              ") extends past the end of the file (truncated? the data section holds " +
              std::to_string(data_bytes) + " bytes)");
    by_offset.emplace(t.offset, &t);
  }
  // Tensors must not overlap: sorted by offset, each ends before the next begins.
  const GgufTensorInfo* prev = nullptr;
  for (const auto& [offset, t] : by_offset) {
    if (prev && t->bytes > 0)
      check(prev->offset + prev->bytes <= offset, where + ": tensors \"" + prev->name +
                                                      "\" and \"" + t->name +
                                                      "\" overlap in the data section");
    prev = t;
  }
}

GgufFile::~GgufFile() = default;

const GgufTensorInfo& GgufFile::tensor_info(const std::string& tensor) const {
  const auto it = by_name_.find(tensor);
  check(it != by_name_.end(), path_.string() + ": no tensor \"" + tensor + "\"");
  return tensors_[it->second];
}

const GgufValue& GgufFile::value(const std::string& key) const {
  return metadata_.at(key);
}

namespace {
std::string type_error(const std::filesystem::path& path, const std::string& key, uint32_t t,
                       const char* expected) {
  return path.string() + ": metadata \"" + key + "\" is a " + value_type_name(t) + ", expected " +
         expected;
}
}  // namespace

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const GgufValue& v = value(key);
  check(v.kind == GgufValue::Kind::kString, type_error(path_, key, v.gguf_type, "a string"));
  return v.s;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const GgufValue& v = value(key);
  if (v.kind == GgufValue::Kind::kInt) return v.i;
  check(v.kind == GgufValue::Kind::kUInt, type_error(path_, key, v.gguf_type, "an integer"));
  check(v.u <= static_cast<uint64_t>(INT64_MAX),
        path_.string() + ": metadata \"" + key + "\" is " + std::to_string(v.u) + ", too large");
  return static_cast<int64_t>(v.u);
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const GgufValue& v = value(key);
  if (v.kind == GgufValue::Kind::kFloat) return v.f;
  check(v.kind == GgufValue::Kind::kInt || v.kind == GgufValue::Kind::kUInt,
        type_error(path_, key, v.gguf_type, "a number"));
  return static_cast<double>(*get_int(key));
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const GgufValue& v = value(key);
  check(v.kind == GgufValue::Kind::kBool, type_error(path_, key, v.gguf_type, "a bool"));
  return v.b;
}

const std::vector<std::string>* GgufFile::get_strings(const std::string& key) const {
  if (!has(key)) return nullptr;
  const GgufValue& v = value(key);
  const auto* a = std::get_if<std::vector<std::string>>(&v.array);
  check(v.kind == GgufValue::Kind::kArray && a != nullptr,
        type_error(path_, key, v.gguf_type, "an array of strings"));
  return a;
}

const std::vector<int64_t>* GgufFile::get_ints(const std::string& key) const {
  if (!has(key)) return nullptr;
  const GgufValue& v = value(key);
  const auto* a = std::get_if<std::vector<int64_t>>(&v.array);
  check(v.kind == GgufValue::Kind::kArray && a != nullptr,
        type_error(path_, key, v.gguf_type, "an array of integers"));
  return a;
}

at::Tensor GgufFile::dequantize(const std::string& tensor) const {
  const GgufTensorInfo& t = tensor_info(tensor);
  check(ggml_can_dequantize(t.type),
        path_.string() + ": tensor \"" + t.name + "\" is stored as " +
            ggml_type_name(static_cast<uint32_t>(t.type)) +
            ", which kivi cannot read (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)");
  const GgmlBlock block = *ggml_block(static_cast<uint32_t>(t.type));
  at::Tensor out = at::empty(t.shape, at::TensorOptions().dtype(at::kFloat));
  dequantize_blocks(t.type, file_->data() + data_start_ + t.offset, t.numel() / block.elements,
                    out.data_ptr<float>());
  return out;
}

}  // namespace kivi
