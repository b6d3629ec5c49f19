// The memory table of a cache for a model geometry and a list of sequence lengths, computed
// both ways: the research write-up's (the codes of the tokens outside the residual window plus
// the window's residual_length tokens at 16 bits, no scales or minima) and honestly (everything
// the cache holds: codes, scales and minima, the full-precision residual windows as
// preallocated), from the cache's own CacheSpec.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kivi/cache/cache_types.h"

namespace kivi {

// The write-up's accounting of one sequence of `tokens` tokens: `code_bits` per element for the
// tokens outside a window of `residual_length` tokens, 16 bits for the window, nothing else.
// code_bits = 0 (a full-precision cache) counts every token at 16 bits.
double writeup_bits(int64_t tokens, double code_bits, int64_t residual_length);

struct MemoryTableRow {
  int64_t tokens = 0;
  int64_t fp16_bytes = 0;  // a 16-bit cache of one sequence, all layers
  double code_bits = 0;    // bits per element of the codes alone (CacheSpec::code_bits)
  double writeup = 0;      // the write-up's bits per element (writeup_bits)
  int64_t bytes = 0;       // honest: CacheSpec::bytes_per_sequence(tokens)
  double bits = 0;         // honest bits per element
  // The honest bytes by component (codes, scales and minima, residual), when known.
  std::optional<MemoryStats> parts;
  double code_compression() const { return code_bits > 0 ? 16.0 / code_bits : 0; }
  double writeup_compression() const { return writeup > 0 ? 16.0 / writeup : 0; }
  double compression() const { return bytes > 0 ? static_cast<double>(fp16_bytes) / bytes : 0; }
  double bytes_per_token() const { return tokens > 0 ? static_cast<double>(bytes) / tokens : 0; }
};

// residual_length: the cache's full-precision window (CacheSpec::residual_length), for the
// write-up's column; 0 makes that column the codes alone.
std::vector<MemoryTableRow> memory_table(const CacheGeometry& geometry, const CacheSpec& spec,
                                         std::span<const int64_t> lengths,
                                         int64_t residual_length = 0);

// A plain-text table: per length, the write-up's bits and compression, then the honest bytes,
// bits (by component when known) and compression, each against a 16-bit cache.
std::string format_memory_table(const std::string& description,
                                std::span<const MemoryTableRow> rows);

}  // namespace kivi
