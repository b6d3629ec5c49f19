#include "kivi/model/fused_ops.h"

#include <ATen/ATen.h>

#include "kivi/util/error.h"

#ifdef KIVI_CORE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "kivi/model/cuda/fused_kernels.h"
#endif

namespace kivi::fused {

#ifdef KIVI_CORE_WITH_CUDA

namespace {

ElemType elem_type(at::ScalarType t) {
  return t == at::kHalf       ? ElemType::kHalf
         : t == at::kBFloat16 ? ElemType::kBFloat16
                              : ElemType::kFloat;
}

void check_launch(const std::string& error) {
  if (!error.empty()) throw Error(error);
}

}  // namespace

bool fused_ops_apply(const at::Tensor& x) {
  const auto t = x.scalar_type();
  return x.is_cuda() && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) && x.dim() >= 1 &&
         x.stride(-1) == 1;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t cols = x.size(-1);
  // Rows of x: a 2-d view when the leading dims collapse, else a contiguous copy.
  const at::Tensor rows = x.dim() == 2 ? x : x.reshape({-1, cols});
  const at::Tensor w = weight.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  check_launch(kivi::fused::rms_norm(elem_type(x.scalar_type()), rows.data_ptr(), rows.stride(0),
                                     w.data_ptr(), y.data_ptr(), rows.size(0), cols,
                                     static_cast<float>(eps), at::cuda::getCurrentCUDAStream()));
  return y;
}

at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const at::Tensor c = cos.contiguous(), s = sin.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());  // [B, H, T, D] contiguous
  Rotary args;
  args.type = elem_type(x.scalar_type());
  args.x = x.data_ptr();
  for (int i = 0; i < 3; ++i) args.x_stride[i] = x.stride(i);
  args.cos = c.data_ptr();
  args.sin = s.data_ptr();
  args.out = out.data_ptr();
  args.batch = x.size(0);
  args.heads = x.size(1);
  args.tokens = x.size(2);
  args.dim = x.size(3);
  check_launch(kivi::fused::rotary(args, at::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor silu_mul(const at::Tensor& gate_up) {
  const int64_t both = gate_up.size(-1), inter = both / 2;
  const at::Tensor rows = gate_up.dim() == 2 ? gate_up : gate_up.reshape({-1, both});
  std::vector<int64_t> shape(gate_up.sizes().begin(), gate_up.sizes().end());
  shape.back() = inter;
  at::Tensor out = at::empty(shape, gate_up.options());
  check_launch(kivi::fused::silu_mul(elem_type(gate_up.scalar_type()), rows.data_ptr(),
                                     rows.stride(0), out.data_ptr(), rows.size(0), inter,
                                     at::cuda::getCurrentCUDAStream()));
  return out;
}

#else

bool fused_ops_apply(const at::Tensor&) {
  return false;
}
at::Tensor rms_norm(const at::Tensor&, const at::Tensor&, double) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}
at::Tensor rotary(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}
at::Tensor silu_mul(const at::Tensor&) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}

#endif

}  // namespace kivi::fused
