#include "kivi/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "kivi/util/error.h"
#include "kivi/util/json_limits.h"

namespace kivi {
namespace {

std::optional<at::ScalarType> dtype_of(const std::string& name) {
  static const std::map<std::string, at::ScalarType> table = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  auto it = table.find(name);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

}  // namespace

std::string shape_string(at::IntArrayRef shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

MappedFile::MappedFile(const std::filesystem::path& file) : path_(file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(file.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(file.string() + ": cannot stat: " + std::strerror(e));
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    // Private writable pages: a stray in-place op copies a page instead of faulting.
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(file.string() + ": cannot mmap " + std::to_string(size_) +
                  " bytes: " + std::strerror(e));
    }
    data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : file_(std::make_shared<MappedFile>(path)) {
  const std::string where = path.string();
  const uint64_t size = file_->size();
  check(size >= 8, where + ": truncated safetensors file: " + std::to_string(size) +
                       " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_->data()[i];  // little-endian
  check(header_len <= size - 8, where + ": truncated safetensors file: the header claims " +
                                    std::to_string(header_len) + " bytes but only " +
                                    std::to_string(size - 8) + " follow the length field");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size - data_start_;

  nlohmann::json header;
  try {
    header =
        parse_json_bounded({reinterpret_cast<const char*>(file_->data()) + 8, header_len}, where);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed safetensors header JSON: " + e.what());
  }
  check(header.is_object(), where + ": safetensors header is not a JSON object");

  std::vector<std::pair<uint64_t, std::string>> ranges;  // begin, name: for the overlap check
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (info.is_object())
        for (const auto& [k, v] : info.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    const std::string what = where + ": tensor \"" + name + "\"";
    check(info.is_object() && info.contains("dtype") && info.contains("shape") &&
              info.contains("data_offsets"),
          what + ": header entry must have dtype, shape and data_offsets, found " + info.dump());
    SafetensorsEntry e;
    const auto& dtype = info["dtype"];
    const auto parsed = dtype.is_string() ? dtype_of(dtype.get<std::string>()) : std::nullopt;
    check(parsed.has_value(),
          what + ": unsupported dtype " + dtype.dump() +
              ", expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    e.dtype = *parsed;
    check(info["shape"].is_array(), what + ": shape " + info["shape"].dump() + " is not a list");
    uint64_t numel = 1;
    for (const auto& d : info["shape"]) {
      check(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
            what + ": shape " + info["shape"].dump() +
                " has a dimension that is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      check(dim == 0 || numel <= (uint64_t{1} << 62) / dim,
            what + ": shape " + info["shape"].dump() + " is too large");
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = info["data_offsets"];
    check(
        off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
            off[1].is_number_unsigned(),
        what + ": data_offsets " + off.dump() + " must be two non-negative integers [begin, end]");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    check(e.begin <= e.end, what + ": data_offsets " + off.dump() + " has begin after end");
    check(e.end <= data_size,
          what + ": data_offsets " + off.dump() + " reach past the end of the data (" +
              std::to_string(data_size) +
              " bytes after the header; the file is truncated or the header lies)");
    // A shape whose byte size overflows 64 bits must not wrap around to the span it claims.
    uint64_t expected = 0;
    check(!__builtin_mul_overflow(numel, uint64_t{c10::elementSize(e.dtype)}, &expected),
          what + ": dtype " + dtype.get<std::string>() + " x shape " + shape_string(e.shape) +
              " needs more than 2^64 bytes");
    check(e.end - e.begin == expected,
          what + ": data_offsets " + off.dump() + " span " + std::to_string(e.end - e.begin) +
              " bytes, but dtype " + dtype.get<std::string>() + " x shape " +
              shape_string(e.shape) + " needs " + std::to_string(expected));
    if (e.end > e.begin) ranges.emplace_back(e.begin, name);
    entries_.emplace(name, std::move(e));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& prev = entries_.at(ranges[i - 1].second);
    check(ranges[i].first >= prev.end, where + ": tensors \"" + ranges[i - 1].second + "\" and \"" +
                                           ranges[i].second + "\" overlap in the data section");
  }
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  check(it != entries_.end(), path().string() + ": no tensor \"" + name + "\"");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto options = at::TensorOptions().dtype(e.dtype).device(at::kCPU);
  if (e.end == e.begin) return at::empty(e.shape, options);
  uint8_t* data = const_cast<uint8_t*>(file_->data()) + data_start_ + e.begin;
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(e.dtype) != 0) {
    at::Tensor copy = at::empty(e.shape, options);
    std::memcpy(copy.data_ptr(), data, e.end - e.begin);
    return copy;
  }
  auto keep_alive = file_;
  return at::from_blob(
      data, e.shape, [keep_alive](void*) {}, options);
}

}  // namespace kivi
