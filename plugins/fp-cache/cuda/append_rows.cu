#include "append_rows.h"

#include <algorithm>
#include <cstdint>

namespace kivi::fp_cache::cuda {
namespace {

// Item = (b, side, h, t, unit); kUnit bytes per unit (16 when every row start allows).
template <class Unit>
__global__ void append_rows_kernel(AppendRows a, int units_per_token) {
  const int64_t items = int64_t{a.batch} * 2 * a.heads * a.tokens * units_per_token;
  const int unit_elements = static_cast<int>(sizeof(Unit)) / a.element_bytes;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < items;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int u = static_cast<int>(idx % units_per_token);
    int64_t rest = idx / units_per_token;
    const int t = static_cast<int>(rest % a.tokens);
    rest /= a.tokens;
    const int h = static_cast<int>(rest % a.heads);
    rest /= a.heads;
    const int side = static_cast<int>(rest % 2);
    const int b = static_cast<int>(rest / 2);
    if (t >= a.count[b]) continue;
    const int64_t* src_stride = side == 0 ? a.k_stride : a.v_stride;
    const int64_t* dst_stride = side == 0 ? a.keys_stride : a.values_stride;
    const char* src =
        static_cast<const char*>(side == 0 ? a.k : a.v) +
        (b * src_stride[0] + h * src_stride[1] + t * src_stride[2] + int64_t{u} * unit_elements) *
            a.element_bytes;
    char* dst = static_cast<char*>(side == 0 ? a.keys : a.values) +
                (b * dst_stride[0] + h * dst_stride[1] + (a.position[b] + t) * dst_stride[2] +
                 int64_t{u} * unit_elements) *
                    a.element_bytes;
    *reinterpret_cast<Unit*>(dst) = *reinterpret_cast<const Unit*>(src);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

std::string append_rows(const AppendRows& a, cudaStream_t stream) {
  if (a.batch <= 0 || a.tokens <= 0) return {};
  if (a.batch > kAppendMaxRows) return "fp cache append: more than 64 rows";
  // 16-byte units when the rows and every stride keep 16-byte alignment.
  const int per16 = 16 / a.element_bytes;
  bool wide = a.dim % per16 == 0 && aligned16(a.k) && aligned16(a.v) && aligned16(a.keys) &&
              aligned16(a.values);
  for (int i = 0; i < 3 && wide; ++i)
    wide = a.k_stride[i] % per16 == 0 && a.v_stride[i] % per16 == 0 &&
           a.keys_stride[i] % per16 == 0 && a.values_stride[i] % per16 == 0;
  const int units = wide ? a.dim / per16 : a.dim;
  const int64_t items = int64_t{a.batch} * 2 * a.heads * a.tokens * units;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((items + 255) / 256, 65535));
  if (wide)
    append_rows_kernel<uint4><<<blocks, 256, 0, stream>>>(a, units);
  else if (a.element_bytes == 2)
    append_rows_kernel<uint16_t><<<blocks, 256, 0, stream>>>(a, units);
  else
    append_rows_kernel<uint32_t><<<blocks, 256, 0, stream>>>(a, units);
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess
             ? std::string()
             : std::string("fp cache append: launch failed: ") + cudaGetErrorString(status);
}

}  // namespace kivi::fp_cache::cuda
