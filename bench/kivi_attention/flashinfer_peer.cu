// The FlashInfer peer (flashinfer_peer.h), built with FlashInfer's headers: its CUDA-core batch
// decode kernel (the one FlashInfer runs for decode with fp16 or fp8 KV) over a paged cache in
// the HND layout, 16 tokens per page, each sequence's pages contiguous; planned once by
// FlashInfer's own split-KV scheduler for the batch's lengths, as its Python API would.
#include <ATen/cuda/CUDAContext.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variants.cuh>
#include <flashinfer/page.cuh>

#include <stdexcept>
#include <vector>

#include "flashinfer_peer.h"

namespace kivi::bench {
namespace {

namespace fi = flashinfer;
constexpr int64_t kPageSize = 16;
constexpr auto kNoRope = fi::PosEncodingMode::kNone;
using Variant = fi::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false,
                                     /*soft_cap=*/false, /*alibi=*/false>;
template <class KV>
using Params = fi::BatchDecodeParams<half, KV, half, int32_t>;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("FlashInfer peer: ") + what + ": " +
                             cudaGetErrorString(status));
}

// [batch, heads, context, dim] -> pages [batch * context / 16, heads, 16, dim] (HND).
at::Tensor to_pages(const at::Tensor& x) {
  const int64_t b = x.size(0), h = x.size(1), l = x.size(2), d = x.size(3);
  return x.view({b, h, l / kPageSize, kPageSize, d})
      .permute({0, 2, 1, 3, 4})
      .contiguous()
      .view({b * l / kPageSize, h, kPageSize, d});
}

}  // namespace

std::string flashinfer_absent_reason() {
  return {};
}

struct FlashInferDecode::State {
  at::Tensor k_pages, v_pages;                // [pages, kv_heads, 16, dim], fp16 or fp8
  at::Tensor indptr, indices, last_page_len;  // int32 on the GPU
  std::vector<int32_t> indptr_host;
  at::Tensor float_workspace, int_workspace, int_workspace_host;  // the last one pinned
  fi::DecodePlanInfo plan;
  int64_t batch = 0, kv_heads = 0, q_heads = 0, dim = 0;
  float scale = 1.0f;
  bool fp8 = false;
};

namespace {

template <int DIM, class KV>
void plan(FlashInferDecode::State& s) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  DISPATCH_GQA_GROUP_SIZE(s.q_heads / s.kv_heads, GROUP_SIZE, {
    auto estimate =
        fi::BatchDecodeWithPagedKVCacheWorkEstimationDispatched<GROUP_SIZE, DIM, kNoRope, Variant,
                                                                Params<KV>>;
    check(
        fi::DecodePlan<DIM, kNoRope, Variant, Params<KV>>(
            s.float_workspace.data_ptr(), s.float_workspace.nbytes(), s.int_workspace.data_ptr(),
            s.int_workspace_host.data_ptr(), s.int_workspace.nbytes(), s.plan, s.indptr_host.data(),
            static_cast<uint32_t>(s.batch), static_cast<uint32_t>(s.q_heads), kPageSize,
            /*enable_cuda_graph=*/false, stream, estimate),
        "plan");
  });
}

template <int DIM, class KV>
void run(FlashInferDecode::State& s, const at::Tensor& q, at::Tensor& out) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  fi::paged_kv_t<KV, int32_t> kv(
      static_cast<uint32_t>(s.kv_heads), kPageSize, DIM, static_cast<uint32_t>(s.batch),
      fi::QKVLayout::kHND, static_cast<KV*>(s.k_pages.data_ptr()),
      static_cast<KV*>(s.v_pages.data_ptr()), s.indices.data_ptr<int32_t>(),
      s.indptr.data_ptr<int32_t>(), s.last_page_len.data_ptr<int32_t>());
  Params<KV> params;
  params.q = static_cast<half*>(q.data_ptr());
  params.paged_kv = kv;
  params.o = static_cast<half*>(out.data_ptr());
  params.num_qo_heads = static_cast<uint32_t>(s.q_heads);
  params.q_stride_n = static_cast<int32_t>(q.stride(0));
  params.q_stride_h = static_cast<int32_t>(q.stride(1));
  params.window_left = -1;
  params.sm_scale = s.scale;
  params.rope_rcp_scale = 1.0f;
  params.rope_rcp_theta = 1.0f;
  params.padded_batch_size = static_cast<uint32_t>(s.plan.padded_batch_size);
  void* ints = s.int_workspace.data_ptr();
  params.request_indices = fi::GetPtrFromBaseOffset<int32_t>(ints, s.plan.request_indices_offset);
  params.kv_tile_indices = fi::GetPtrFromBaseOffset<int32_t>(ints, s.plan.kv_tile_indices_offset);
  params.o_indptr = fi::GetPtrFromBaseOffset<int32_t>(ints, s.plan.o_indptr_offset);
  params.kv_chunk_size_ptr =
      fi::GetPtrFromBaseOffset<int32_t>(ints, s.plan.kv_chunk_size_ptr_offset);
  half* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (s.plan.split_kv) {
    void* floats = s.float_workspace.data_ptr();
    tmp_v = fi::GetPtrFromBaseOffset<half>(floats, s.plan.v_offset);
    tmp_s = fi::GetPtrFromBaseOffset<float>(floats, s.plan.s_offset);
    params.block_valid_mask = fi::GetPtrFromBaseOffset<bool>(ints, s.plan.block_valid_mask_offset);
  }
  check(fi::BatchDecodeWithPagedKVCacheDispatched<DIM, kNoRope, Variant>(params, tmp_v, tmp_s,
                                                                         /*enable_pdl=*/false,
                                                                         stream),
        "decode");
}

// The state's head_dim and cache type as template arguments.
void plan_any(FlashInferDecode::State& s) {
  if (s.dim == 64)
    s.fp8 ? plan<64, __nv_fp8_e4m3>(s) : plan<64, half>(s);
  else
    s.fp8 ? plan<128, __nv_fp8_e4m3>(s) : plan<128, half>(s);
}
void run_any(FlashInferDecode::State& s, const at::Tensor& q, at::Tensor& out) {
  if (s.dim == 64)
    s.fp8 ? run<64, __nv_fp8_e4m3>(s, q, out) : run<64, half>(s, q, out);
  else
    s.fp8 ? run<128, __nv_fp8_e4m3>(s, q, out) : run<128, half>(s, q, out);
}

}  // namespace

FlashInferDecode::FlashInferDecode(const at::Tensor& k, const at::Tensor& v, int64_t q_heads,
                                   double scale, bool fp8)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.batch = k.size(0);
  s.kv_heads = k.size(1);
  s.q_heads = q_heads;
  s.dim = k.size(3);
  s.scale = static_cast<float>(scale);
  s.fp8 = fp8;
  const int64_t context = k.size(2);
  if (k.scalar_type() != at::kHalf || !k.is_cuda() || context % kPageSize != 0 ||
      (s.dim != 64 && s.dim != 128))
    throw std::runtime_error(
        "FlashInfer peer: expected fp16 K/V on the GPU, context a multiple of "
        "16 and head_dim 64 or 128");
  s.k_pages = to_pages(fp8 ? k.to(at::kFloat8_e4m3fn) : k);
  s.v_pages = to_pages(fp8 ? v.to(at::kFloat8_e4m3fn) : v);
  const int64_t pages_per_row = context / kPageSize;
  const auto ints = k.options().dtype(at::kInt);
  s.indices = at::arange(s.batch * pages_per_row, ints);
  s.indptr = at::arange(s.batch + 1, ints) * pages_per_row;
  s.last_page_len = at::full({s.batch}, kPageSize, ints);
  s.indptr_host.resize(s.batch + 1);
  for (int64_t b = 0; b <= s.batch; ++b) s.indptr_host[b] = static_cast<int32_t>(b * pages_per_row);
  // FlashInfer's default workspace sizes (128 MB of floats, 8 MB of ints).
  s.float_workspace = at::empty({int64_t{128} << 20}, k.options().dtype(at::kByte));
  s.int_workspace = at::empty({int64_t{8} << 20}, k.options().dtype(at::kByte));
  s.int_workspace_host =
      at::empty({int64_t{8} << 20}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  plan_any(s);
  check(cudaStreamSynchronize(at::cuda::getCurrentCUDAStream()), "plan copy");
}

FlashInferDecode::~FlashInferDecode() = default;

void FlashInferDecode::run(const at::Tensor& q, at::Tensor& out) {
  run_any(*state_, q, out);
}

double FlashInferDecode::cache_mb() const {
  return static_cast<double>(state_->k_pages.nbytes() + state_->v_pages.nbytes()) / 1e6;
}

}  // namespace kivi::bench
