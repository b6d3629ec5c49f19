// The memory table of a cache for a model geometry and a list of sequence lengths, computed
// both ways: the write-up's (codes only: average bits per element, compression against 16
// bits, fraction of fp16) and honestly (everything the cache holds: codes, scales and minima,
// full-precision residual windows), from the cache's own CacheSpec.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kivi/cache/cache_types.h"

namespace kivi {

struct MemoryTableRow {
  int64_t tokens = 0;
  int64_t fp16_bytes = 0;  // a 16-bit cache of one sequence, all layers
  double code_bits = 0;    // write-up: bits per element of the codes alone
  int64_t bytes = 0;       // honest: CacheSpec::bytes_per_sequence(tokens)
  double bits = 0;         // honest bits per element
  double code_compression() const { return code_bits > 0 ? 16.0 / code_bits : 0; }
  double compression() const { return bytes > 0 ? static_cast<double>(fp16_bytes) / bytes : 0; }
  double bytes_per_token() const { return tokens > 0 ? static_cast<double>(bytes) / tokens : 0; }
};

std::vector<MemoryTableRow> memory_table(const CacheGeometry& geometry, const CacheSpec& spec,
                                         std::span<const int64_t> lengths);

// A plain-text table with both figures per length (and the fraction of fp16 each way).
std::string format_memory_table(const std::string& description,
                                std::span<const MemoryTableRow> rows);

}  // namespace kivi
