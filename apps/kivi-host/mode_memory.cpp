// `kivi-host memory`: for the [memory] model geometry and lengths, the configured cache's memory
// table both ways: the research write-up's (codes plus a 16-bit residual window, no scales or
// minima) beside the honest one from the cache's CacheSpec (by component: the cache's own
// allocation, made on the meta device, which allocates nothing), then what the write-up leaves
// out (the cache's CacheSpec::accounting_notes). With live_check, a live cache per length (CPU,
// max_batch 1, preallocated) whose held bytes must equal the spec's.
#include <iomanip>
#include <optional>
#include <ostream>

#include "host_context.h"
#include "kivi/cache/memory_table.h"

namespace kivi::host {
namespace {

// The bytes of a cache sized for `tokens`, by component, without allocating them; nullopt for
// a plugin that cannot build on the meta device.
std::optional<MemoryStats> parts_of(const KVCacheFactory& factory, CacheGeometry g,
                                    int64_t tokens) {
  g.max_tokens = tokens;
  g.device = at::kMeta;
  try {
    return factory.create(g)->memory();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

int run_memory_mode(HostContext& context) {
  const MemoryPlan& plan = context.config.memory;
  auto factory = make_cache_factory(context);
  CacheGeometry g;
  g.num_layers = plan.num_layers;
  g.num_kv_heads = plan.num_kv_heads;
  g.head_dim = plan.head_dim;
  g.max_batch = 1;
  g.dtype = plan.dtype == "float16"    ? at::kHalf
            : plan.dtype == "bfloat16" ? at::kBFloat16
                                       : at::kFloat;
  const CacheSpec spec = factory->spec(g);
  context.out << "model: " << g.num_layers << " layers, " << g.num_kv_heads
              << " kv heads, head_dim " << g.head_dim << ", " << plan.dtype << "\n";
  std::vector<MemoryTableRow> rows = memory_table(g, spec, plan.lengths, spec.residual_length);
  for (MemoryTableRow& row : rows) row.parts = parts_of(*factory, g, row.tokens);
  context.out << format_memory_table(spec.description, rows);
  context.out << spec.accounting_notes;  // what the write-up leaves out, in the cache's words
  if (!plan.live_check) return 0;
  int status = 0;
  for (int64_t tokens : plan.lengths) {
    g.max_tokens = tokens;
    const MemoryStats held = factory->create(g)->memory();
    const int64_t planned = spec.bytes_per_sequence(tokens);
    context.out << "live " << tokens << " tokens: held " << held.total() << " bytes (codes "
                << held.payload_bytes << ", scales+minima " << held.scale_bytes << ", residual "
                << held.residual_bytes << ", workspace " << held.workspace_bytes << "), "
                << std::fixed << std::setprecision(1)
                << static_cast<double>(held.total()) / static_cast<double>(tokens)
                << std::defaultfloat << " bytes/token; spec " << planned
                << (held.total() == planned ? ": equal\n" : ": MISMATCH\n");
    if (held.total() != planned) status = 1;
  }
  return status;
}

}  // namespace kivi::host
