#include "kivi/cache/memory_table.h"

#include <cstdio>
#include <sstream>

namespace kivi {

std::vector<MemoryTableRow> memory_table(const CacheGeometry& g, const CacheSpec& spec,
                                         std::span<const int64_t> lengths) {
  std::vector<MemoryTableRow> rows;
  for (int64_t tokens : lengths) {
    MemoryTableRow row;
    row.tokens = tokens;
    const int64_t elements = 2 * g.num_layers * g.num_kv_heads * g.head_dim * tokens;  // K and V
    row.fp16_bytes = 2 * elements;
    row.bytes = spec.bytes_per_sequence(tokens);
    row.bits =
        elements > 0 ? 8.0 * static_cast<double>(row.bytes) / static_cast<double>(elements) : 0;
    row.code_bits = spec.code_bits > 0 ? spec.code_bits : row.bits;
    rows.push_back(row);
  }
  return rows;
}

std::string format_memory_table(const std::string& description,
                                std::span<const MemoryTableRow> rows) {
  std::ostringstream out;
  char line[256];
  out << "cache " << description << "\n";
  std::snprintf(line, sizeof line, "%8s %14s | %9s %7s %7s | %14s %12s %9s %7s %7s\n", "tokens",
                "fp16 bytes", "code bits", "x fp16", "of fp16", "bytes", "bytes/token", "bits",
                "x fp16", "of fp16");
  out << line;
  for (const MemoryTableRow& r : rows) {
    std::snprintf(line, sizeof line,
                  "%8lld %14lld | %9.3f %7.2f %6.2f%% | %14lld %12.1f %9.3f %7.2f %6.2f%%\n",
                  static_cast<long long>(r.tokens), static_cast<long long>(r.fp16_bytes),
                  r.code_bits, r.code_compression(), 100.0 * r.code_bits / 16.0,
                  static_cast<long long>(r.bytes), r.bytes_per_token(), r.bits, r.compression(),
                  r.bytes > 0 ? 100.0 / r.compression() : 0.0);
    out << line;
  }
  return out.str();
}

}  // namespace kivi
