#include "kivi/cache/memory_table.h"

#include <cstdio>
#include <sstream>

namespace kivi {

double writeup_bits(int64_t tokens, double code_bits, int64_t residual_length) {
  if (tokens <= 0) return 0;
  if (code_bits <= 0 || tokens <= residual_length) return 16.0;
  const double n = static_cast<double>(tokens), r = static_cast<double>(residual_length);
  return ((n - r) * code_bits + r * 16.0) / n;
}

std::vector<MemoryTableRow> memory_table(const CacheGeometry& g, const CacheSpec& spec,
                                         std::span<const int64_t> lengths,
                                         int64_t residual_length) {
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
    row.writeup = writeup_bits(tokens, spec.code_bits, residual_length);
    rows.push_back(row);
  }
  return rows;
}

std::string format_memory_table(const std::string& description,
                                std::span<const MemoryTableRow> rows) {
  std::ostringstream out;
  char line[320];
  out << "cache " << description << ", one sequence:\n";
  std::snprintf(line, sizeof line, "%8s | %-23s | %s\n", "", "the write-up's table",
                "honest: what the cache holds");
  out << line;
  std::snprintf(line, sizeof line, "%8s | %6s %7s %8s | %14s %11s %30s %7s %8s\n", "tokens", "bits",
                "x fp16", "of fp16", "bytes", "bytes/token", "bits = codes + scales + resid.",
                "x fp16", "of fp16");
  out << line;
  for (const MemoryTableRow& r : rows) {
    char parts[64] = "";
    if (r.parts) {
      const double per_byte = r.bytes > 0 ? r.bits / static_cast<double>(r.bytes) : 0;
      std::snprintf(parts, sizeof parts, " = %5.2f + %5.2f + %5.2f",
                    per_byte * r.parts->payload_bytes, per_byte * r.parts->scale_bytes,
                    per_byte * (r.parts->residual_bytes + r.parts->workspace_bytes));
    }
    char bits[96];
    std::snprintf(bits, sizeof bits, "%6.2f%s", r.bits, parts);
    std::snprintf(line, sizeof line,
                  "%8lld | %6.2f %6.2fx %7.2f%% | %14lld %11.1f %30s %6.2fx %7.2f%%\n",
                  static_cast<long long>(r.tokens), r.writeup, r.writeup_compression(),
                  100.0 * r.writeup / 16.0, static_cast<long long>(r.bytes), r.bytes_per_token(),
                  bits, r.compression(), r.bytes > 0 ? 100.0 / r.compression() : 0.0);
    out << line;
  }
  return out.str();
}

}  // namespace kivi
