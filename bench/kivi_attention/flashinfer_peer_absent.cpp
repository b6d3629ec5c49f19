// The FlashInfer peer when the bench is built without FlashInfer's headers (flashinfer_peer.h).
#include <stdexcept>

#include "flashinfer_peer.h"

namespace kivi::bench {

std::string flashinfer_absent_reason() {
  return "built without FlashInfer's headers (configure with -DKIVI_FLASHINFER_INCLUDE=<folder "
         "gathered by tools/gpu/gather-flashinfer.sh>)";
}

struct FlashInferDecode::State {};

FlashInferDecode::FlashInferDecode(const at::Tensor&, const at::Tensor&, int64_t, double, bool) {
  throw std::runtime_error("FlashInfer peer: " + flashinfer_absent_reason());
}
FlashInferDecode::~FlashInferDecode() = default;
void FlashInferDecode::run(const at::Tensor&, at::Tensor&) {}
double FlashInferDecode::cache_mb() const {
  return 0.0;
}

}  // namespace kivi::bench
