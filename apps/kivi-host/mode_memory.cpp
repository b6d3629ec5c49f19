// `kivi-host memory`: for the [memory] model geometry and lengths, the configured cache's memory
// table both ways: the research write-up's (codes plus a 16-bit residual window, no scales or
// minima) beside the honest one from the cache's CacheSpec (by component: the cache's own
// allocation, made on the meta device, which allocates nothing), then what the write-up leaves
// out. With live_check, a live cache per length (CPU, max_batch 1, preallocated) whose held
// bytes must equal the spec's.
#include <iomanip>
#include <optional>
#include <ostream>

#include "host_context.h"
#include "kivi/cache/memory_table.h"

namespace kivi::host {
namespace {

// The packing parameters a kivi view carries (kivi_view.h), from a cache grown on demand (only
// its windows exist); nullopt for dense caches.
std::optional<KiviParts> kivi_parameters(const KVCacheFactory& factory, CacheGeometry g) {
  g.max_tokens = 0;
  const CacheView view = factory.create(g)->view(0);
  if (view.kind != CacheViewKind::kKivi) return std::nullopt;
  KiviParts p;
  p.k_bits = view.kivi.k_bits;
  p.v_bits = view.kivi.v_bits;
  p.group_size = view.kivi.group_size;
  p.residual_length = view.kivi.residual_length;
  return p;
}

// The bytes of a cache sized for `tokens`, by component, without allocating them; nullopt for
// a plugin that cannot build on the meta device.
std::optional<MemoryStats> parts_of(const KVCacheFactory& factory, CacheGeometry g, int64_t tokens) {
  g.max_tokens = tokens;
  g.device = at::kMeta;
  try {
    return factory.create(g)->memory();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void print_left_out(std::ostream& out, const KiviParts& p, const std::string& dtype, int64_t element_bits) {
  const double code_bits = 0.5 * static_cast<double>(p.k_bits + p.v_bits);
  const int64_t r = p.residual_length;
  out << "What the write-up leaves out: it counts " << code_bits << "-bit codes for the tokens outside a window of "
      << r << " tokens and the window at 16 bits. A cache also holds\n"
      << "  - a scale and a minimum (" << dtype << ") for every group of " << p.group_size << " codes: "
      << std::fixed << std::setprecision(2) << 2.0 * static_cast<double>(element_bits) / p.group_size
      << " bits more per quantized element (the scales column);\n" << std::defaultfloat
      << "  - the windows as allocated, whatever the length: " << r << " key slots (keys are quantized " << r
      << " at a time, so 0 to " << (r > 0 ? r - 1 : 0) << " of them are in use) and " << r + 1
      << " value slots (a decode step adds its token before the oldest value leaves), in " << dtype << ".\n"
      << "So the honest bits per element tend to " << std::fixed << std::setprecision(2)
      << code_bits + 2.0 * static_cast<double>(element_bits) / p.group_size << " for long sequences, not "
      << code_bits << std::defaultfloat << ".\n";
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
  const std::optional<KiviParts> kivi = kivi_parameters(*factory, g);
  context.out << "model: " << g.num_layers << " layers, " << g.num_kv_heads << " kv heads, head_dim "
              << g.head_dim << ", " << plan.dtype << "\n";
  std::vector<MemoryTableRow> rows =
      memory_table(g, spec, plan.lengths, kivi ? kivi->residual_length : 0);
  for (MemoryTableRow& row : rows) row.parts = parts_of(*factory, g, row.tokens);
  context.out << format_memory_table(spec.description, rows);
  if (kivi) print_left_out(context.out, *kivi, plan.dtype, 8 * static_cast<int64_t>(c10::elementSize(g.dtype)));
  if (!plan.live_check) return 0;
  int status = 0;
  for (int64_t tokens : plan.lengths) {
    g.max_tokens = tokens;
    const MemoryStats held = factory->create(g)->memory();
    const int64_t planned = spec.bytes_per_sequence(tokens);
    context.out << "live " << tokens << " tokens: held " << held.total() << " bytes (codes "
                << held.payload_bytes << ", scales+minima " << held.scale_bytes << ", residual "
                << held.residual_bytes << ", workspace " << held.workspace_bytes << "), " << std::fixed
                << std::setprecision(1) << static_cast<double>(held.total()) / static_cast<double>(tokens)
                << std::defaultfloat << " bytes/token; spec " << planned
                << (held.total() == planned ? ": equal\n" : ": MISMATCH\n");
    if (held.total() != planned) status = 1;
  }
  return status;
}

}  // namespace kivi::host
