// `kivi-host memory`: for the [memory] model geometry and lengths, the configured cache's
// memory table both ways (the write-up's codes-only figures and the honest ones from its
// CacheSpec), then, with live_check, a live cache per length (CPU, max_batch 1, preallocated)
// whose held bytes must equal the spec's.
#include <ostream>

#include "host_context.h"
#include "kivi/cache/memory_table.h"

namespace kivi::host {

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
  context.out << format_memory_table(spec.description, memory_table(g, spec, plan.lengths));
  if (!plan.live_check) return 0;
  int status = 0;
  for (int64_t tokens : plan.lengths) {
    g.max_tokens = tokens;
    const MemoryStats held = factory->create(g)->memory();
    const int64_t planned = spec.bytes_per_sequence(tokens);
    context.out << "live " << tokens << " tokens: held " << held.total() << " bytes (codes "
                << held.payload_bytes << ", scales+minima " << held.scale_bytes << ", residual "
                << held.residual_bytes << ", workspace " << held.workspace_bytes << "), "
                << static_cast<double>(held.total()) / static_cast<double>(tokens)
                << " bytes/token; spec " << planned
                << (held.total() == planned ? ": equal\n" : ": MISMATCH\n");
    if (held.total() != planned) status = 1;
  }
  return status;
}

}  // namespace kivi::host
