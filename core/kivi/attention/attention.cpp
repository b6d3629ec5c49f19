#include "kivi/attention/attention.h"

#include "kivi/util/error.h"

namespace kivi {

at::Tensor Attention::chunk(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const CacheView&, std::span<const int64_t>,
                            const AttentionParams&) const {
  throw Error(
      "attention: this backend appends before it attends (attends_chunks_before_append() "
      "is false); chunk() is not for it");
}

}  // namespace kivi
