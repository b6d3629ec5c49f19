#include "kivi/model/fused_ops.h"

#include <algorithm>
#include <cstdint>
#include <vector>

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

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& delta,
                                               const at::Tensor& weight, double eps) {
  const int64_t cols = x.size(-1);
  const at::Tensor rows = x.dim() == 2 ? x : x.reshape({-1, cols});
  const at::Tensor delta_rows = delta.dim() == 2 ? delta : delta.reshape({-1, cols});
  const at::Tensor w = weight.contiguous();
  at::Tensor sum = at::empty(x.sizes(), x.options()), y = at::empty(x.sizes(), x.options());
  NormRows a;
  a.x = rows.data_ptr();
  a.x_stride = rows.stride(0);
  a.delta = delta_rows.data_ptr();
  a.delta_stride = delta_rows.stride(0);
  a.sum = sum.data_ptr();
  a.w = w.data_ptr();
  a.y = y.data_ptr();
  a.rows = rows.size(0);
  a.cols = cols;
  a.eps = static_cast<float>(eps);
  check_launch(
      kivi::fused::add_rms_norm(elem_type(x.scalar_type()), a, at::cuda::getCurrentCUDAStream()));
  return {sum, y};
}

std::optional<at::Tensor> small_linear(const at::Tensor& x, const at::Tensor& weight,
                                       const at::Tensor& bias) {
  const auto type = x.scalar_type();
  if (!fused_ops_apply(x) || (type != at::kHalf && type != at::kBFloat16) || weight.dim() != 2 ||
      weight.scalar_type() != type || !weight.is_contiguous() || weight.device() != x.device())
    return std::nullopt;
  const int64_t k = x.size(-1), n = weight.size(0);
  if (weight.size(1) != k || k % 8 != 0 || x.numel() / std::max<int64_t>(k, 1) > kGemvMaxRows)
    return std::nullopt;
  if (bias.defined() && (bias.scalar_type() != type || !bias.is_contiguous() || bias.numel() != n ||
                         bias.device() != x.device()))
    return std::nullopt;
  at::Tensor rows = x.reshape({-1, k});
  auto aligned = [](const at::Tensor& t) {
    return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  };
  if (rows.stride(1) != 1 || rows.stride(0) % 8 != 0 || !aligned(rows)) rows = rows.contiguous();
  if (!aligned(rows) || !aligned(weight)) return std::nullopt;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  at::Tensor y = at::empty(shape, x.options());
  Gemv a;
  a.x = rows.data_ptr();
  a.x_stride = rows.stride(0);
  a.w = weight.data_ptr();
  a.bias = bias.defined() ? bias.data_ptr() : nullptr;
  a.y = y.data_ptr();
  a.rows = rows.size(0);
  a.n = n;
  a.k = k;
  check_launch(kivi::fused::gemv(elem_type(type), a, at::cuda::getCurrentCUDAStream()));
  return y;
}

namespace {

// The kernel's arguments for x [B, H, T, D] and cos/sin [B, T, D] (contiguous); out is made.
Rotary rotary_args(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                   at::Tensor& out) {
  out = at::empty(x.sizes(), x.options());  // [B, H, T, D] contiguous
  Rotary args;
  args.type = elem_type(x.scalar_type());
  args.x = x.data_ptr();
  for (int i = 0; i < 3; ++i) args.x_stride[i] = x.stride(i);
  args.cos = cos.data_ptr();
  args.sin = sin.data_ptr();
  args.out = out.data_ptr();
  args.batch = x.size(0);
  args.heads = x.size(1);
  args.tokens = x.size(2);
  args.dim = x.size(3);
  return args;
}

}  // namespace

at::Tensor rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const at::Tensor c = cos.contiguous(), s = sin.contiguous();
  at::Tensor out;
  check_launch(kivi::fused::rotary(rotary_args(x, c, s, out), at::cuda::getCurrentCUDAStream()));
  return out;
}

std::pair<at::Tensor, at::Tensor> rotary_pair(const at::Tensor& a, const at::Tensor& b,
                                              const at::Tensor& cos, const at::Tensor& sin) {
  const at::Tensor c = cos.contiguous(), s = sin.contiguous();
  at::Tensor out_a, out_b;
  const Rotary args_a = rotary_args(a, c, s, out_a), args_b = rotary_args(b, c, s, out_b);
  check_launch(kivi::fused::rotary_pair(args_a, args_b, at::cuda::getCurrentCUDAStream()));
  return {out_a, out_b};
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
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, double) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}
std::optional<at::Tensor> small_linear(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  return std::nullopt;
}
at::Tensor rotary(const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}
std::pair<at::Tensor, at::Tensor> rotary_pair(const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const at::Tensor&) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}
at::Tensor silu_mul(const at::Tensor&) {
  throw Error("fused ops: this build of kivi has no CUDA support");
}

#endif

}  // namespace kivi::fused
