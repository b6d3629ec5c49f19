#include "cuda_ops.h"

#ifdef KIVI_CACHE_WITH_CUDA
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/kivi_kernels.h"
#include "kivi/util/error.h"
#include "tile_order.h"
#endif

namespace kivi::kivi_cache {

#ifndef KIVI_CACHE_WITH_CUDA

bool cuda_store_keys(const at::Tensor&, int64_t, int64_t, at::Tensor, at::Tensor, at::Tensor) {
  return false;
}
bool cuda_store_values(const at::Tensor&, int64_t, int64_t, at::Tensor, at::Tensor, at::Tensor) {
  return false;
}
bool cuda_decode_append(const at::Tensor&, const at::Tensor&, KiviParts&, const DecodeAppendRows&) {
  return false;
}
std::optional<at::Tensor> cuda_decode_attention(const at::Tensor&, const KiviParts&,
                                                const std::vector<int64_t>&,
                                                std::span<const int64_t>, const AttentionParams&,
                                                std::string* why, const at::Tensor&, bool,
                                                const PackedPages&) {
  if (why) *why = "the kivi-cache plugin was built without CUDA";
  return std::nullopt;
}
std::optional<at::Tensor> cuda_chunk_attention(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const KiviParts&,
                                               const std::vector<int64_t>&,
                                               std::span<const int64_t>, const AttentionParams&,
                                               std::string* why, const PackedPages&) {
  if (why) *why = "the kivi-cache plugin was built without CUDA";
  return std::nullopt;
}

#else

namespace {

std::optional<cuda::DType> kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kHalf:
      return cuda::DType::kHalf;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    case at::kFloat:
      return cuda::DType::kFloat;
    default:
      return std::nullopt;
  }
}

bool on_gpu(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    if (!t->defined() || !t->is_cuda()) return false;
  return true;
}

template <size_t N>
void copy_strides(const at::Tensor& t, int64_t (&out)[N]) {
  for (size_t i = 0; i < N; ++i) out[i] = t.stride(static_cast<int64_t>(i));
}

void raise_if(const std::string& error) {
  check(error.empty(), error);
}

// The fused kernel reads 16-byte vectors from these.
bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

// The tensor-core kernel copies packed rows of every (sequence, head) with 16-byte copies.
bool rows_aligned16(const at::Tensor& t) {
  if (!t.defined()) return true;
  const int64_t size = static_cast<int64_t>(t.element_size());
  return aligned16(t) && t.stride(0) * size % 16 == 0 && t.stride(1) * size % 16 == 0;
}

// Element (b0, 0, ...) of t.
void* row_pointer(const at::Tensor& t, int64_t b0) {
  return static_cast<char*>(t.data_ptr()) +
         b0 * t.stride(0) * static_cast<int64_t>(t.element_size());
}

// A buffer of at least `count` elements of `dtype` kept per thread and device in `buffers` and
// grown as needed (zero-filled when made if `zeros`): launches on one stream are ordered, so a
// buffer can serve every layer and step.
at::Tensor& kept_buffer(std::vector<at::Tensor>& buffers, const at::Tensor& like, int64_t count,
                        int64_t least, at::ScalarType dtype, bool zeros) {
  const int64_t device = like.device().index();
  if (static_cast<int64_t>(buffers.size()) <= device) buffers.resize(device + 1);
  at::Tensor& buffer = buffers[device];
  if (!buffer.defined() || buffer.numel() < count) {
    const auto options = like.options().dtype(dtype);
    const int64_t n = std::max(count, least);
    buffer = zeros ? at::zeros({n}, options) : at::empty({n}, options);
  }
  return buffer;
}

// Scratch floats for the split partials.
float* workspace(const at::Tensor& like, int64_t floats) {
  thread_local std::vector<at::Tensor> buffers;
  return kept_buffer(buffers, like, floats, int64_t{1} << 20, at::kFloat, false).data_ptr<float>();
}

// Split counters of the tensor-core kernel: zeros when made, and left zero by every launch (its
// last block per (row, kv head) resets its counter).
int* split_counters(const at::Tensor& like, int64_t count) {
  thread_local std::vector<at::Tensor> buffers;
  return kept_buffer(buffers, like, count, 4096, at::kInt, true).data_ptr<int>();
}

// The table a launch reads: the one given (tests and benchmarks), else a paged cache's own.
PackedPages pages_of(const KiviParts& parts, const PackedPages& given) {
  if (given.table.defined() || !parts.paged()) return given;
  return PackedPages{parts.block_table, parts.page_tokens};
}

// A block table the kernels can read (none: the identity table), for `batch` rows of q.
bool table_fits(const PackedPages& pages, const at::Tensor& q, int64_t batch, int64_t group) {
  const at::Tensor& t = pages.table;
  const int64_t page = pages.page_tokens;
  return !t.defined() ||
         (t.is_cuda() && t.device() == q.device() && t.scalar_type() == at::kInt && t.dim() == 2 &&
          t.size(0) >= batch && t.stride(1) == 1 && page >= group && page % group == 0 &&
          (page & (page - 1)) == 0 && page <= cuda::kWholeRowPage);
}
constexpr const char* kTableExpected =
    "the block table is not an int32 [B, pages] tensor on the queries' GPU with pages of a power "
    "of two of tokens, whole groups";

// The cache parts of a launch over rows b0.. (cuda::DecodeAttention or cuda::ChunkAttention):
// the packed parts at page 0 with the rows' block table, or under the identity table (no
// `pages`: the contiguous cache) at row b0, so that page r of the launch is row b0 + r and the
// kernels load no page ids; the residual windows at row b0.
template <class Launch>
void fill_cache_parts(Launch& a, const KiviParts& parts, const PackedPages& pages, int64_t b0) {
  const bool paged = pages.table.defined();
  const int64_t page0 = paged ? 0 : b0;
  if (parts.k_bits < 16) {
    a.key_codes = static_cast<const int32_t*>(row_pointer(parts.key_codes, page0));
    a.key_scale = row_pointer(parts.key_scale, page0);
    a.key_min = row_pointer(parts.key_min, page0);
    copy_strides(parts.key_codes, a.key_codes_stride);
    copy_strides(parts.key_scale, a.key_scale_stride);
  }
  if (parts.v_bits < 16) {
    a.value_codes = static_cast<const int32_t*>(row_pointer(parts.value_codes, page0));
    a.value_scale = row_pointer(parts.value_scale, page0);
    a.value_min = row_pointer(parts.value_min, page0);
    copy_strides(parts.value_codes, a.value_codes_stride);
    copy_strides(parts.value_scale, a.value_scale_stride);
  }
  if (paged) {
    a.table.pages = pages.table.data_ptr<int32_t>() + b0 * pages.table.stride(0);
    a.table.stride = pages.table.stride(0);
    a.table.page_tokens = static_cast<int>(pages.page_tokens);
  } else {
    a.table.pages = nullptr;
    a.table.page_tokens = cuda::kWholeRowPage;
  }
  a.key_residual = row_pointer(parts.key_residual, b0);
  a.value_residual = row_pointer(parts.value_residual, b0);
  copy_strides(parts.key_residual, a.key_residual_stride);
  copy_strides(parts.value_residual, a.value_residual_stride);
  a.value_slots = static_cast<int>(parts.value_residual.size(2));
}

// KIVI_DECODE_CLUSTERS=0 (a benchmarking knob, read once): the splits always combine through the
// workspace, as before sm_90.
bool decode_clusters_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("KIVI_DECODE_CLUSTERS");
    return value == nullptr || std::string(value) != "0";
  }();
  return enabled;
}

// KIVI_DECODE_TIMING=1 (a profiling knob, read once): every tensor-core decode launch records
// when each block passes each phase, and prints when the blocks of each kind got there.
bool decode_timing_enabled() {
  static const bool enabled = [] {
    const char* value = std::getenv("KIVI_DECODE_TIMING");
    return value != nullptr && std::string(value) == "1";
  }();
  return enabled;
}

// Per kind of block (the last split of a row, which holds its tail, and the others), per
// phase: the median and the latest time since the first block started, in us.
void print_decode_timing(const at::Tensor& stamps, const cuda::DecodeAttention& a) {
  const at::Tensor host = stamps.cpu();
  const int64_t* t = host.data_ptr<int64_t>();
  const int64_t blocks = host.numel() / 8;
  int64_t first = INT64_MAX;
  for (int64_t i = 0; i < blocks; ++i)
    if (t[8 * i] > 0) first = std::min(first, t[8 * i]);
  const char* names[2] = {"main", "last"};
  std::string line = "decode timing (rows " + std::to_string(a.rows) + ", splits " +
                     std::to_string(a.splits) + ")";
  for (int kind = 0; kind < 2; ++kind) {
    std::string part;
    for (int phase = 0; phase < 6; ++phase) {
      std::vector<double> us;
      for (int64_t i = 0; i < blocks; ++i) {
        const int split = static_cast<int>(i % a.splits);
        const int k = split == a.splits - 1 ? 1 : 0;
        if (k == kind && t[8 * i + phase] > 0) us.push_back((t[8 * i + phase] - first) / 1000.0);
      }
      if (us.empty()) continue;
      std::sort(us.begin(), us.end());
      char buffer[64];
      std::snprintf(buffer, sizeof buffer, " p%d %.1f/%.1f", phase, us[us.size() / 2], us.back());
      part += buffer;
    }
    if (!part.empty()) line += std::string(" | ") + names[kind] + ":" + part;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

// What both flushes take: x [n, H, T, D] in the storage dtype and the destination views of the
// codes, scales and minima (cuda::KeyFlush or cuda::ValueFlush). False: they cannot serve it.
template <class Flush>
bool fill_flush(Flush& a, const at::Tensor& x, int64_t group_size, int64_t bits,
                const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& min) {
  const auto dtype = kernel_dtype(x.scalar_type());
  // Codes of a channel (keys) or a token (values), and a token's groups, must be contiguous.
  if (!dtype || !on_gpu({&x, &codes, &scale, &min}) || scale.scalar_type() != x.scalar_type() ||
      min.strides() != scale.strides() || codes.stride(-1) != 1 || scale.stride(-1) != 1)
    return false;
  a.dtype = *dtype;
  a.n = static_cast<int>(x.size(0));
  a.heads = static_cast<int>(x.size(1));
  a.dim = static_cast<int>(x.size(3));
  a.group_size = static_cast<int>(group_size);
  a.bits = static_cast<int>(bits);
  a.x.data = x.data_ptr();
  copy_strides(x, a.x.stride);
  a.codes = codes.data_ptr<int32_t>();
  copy_strides(codes, a.codes_stride);
  a.scale = scale.data_ptr();
  a.min = min.data_ptr();
  copy_strides(scale, a.scale_stride);
  return true;
}

}  // namespace

bool cuda_store_keys(const at::Tensor& x, int64_t group_size, int64_t bits, at::Tensor codes,
                     at::Tensor scale, at::Tensor min) {
  cuda::KeyFlush a;
  // A group's D * Wk words must be one contiguous block, staged whole in shared memory.
  if (codes.stride(3) != codes.size(4) ||
      !cuda::key_flush_supported(static_cast<int>(x.size(3)), static_cast<int>(group_size),
                                 static_cast<int>(bits)) ||
      !fill_flush(a, x, group_size, bits, codes, scale, min))
    return false;
  a.groups = static_cast<int>(x.size(2) / group_size);
  a.tile_order = keys_in_tile_order(x.size(3), group_size);
  raise_if(cuda::launch_key_flush(a, at::cuda::getCurrentCUDAStream()));
  return true;
}

bool cuda_store_values(const at::Tensor& x, int64_t group_size, int64_t bits, at::Tensor codes,
                       at::Tensor scale, at::Tensor min) {
  cuda::ValueFlush a;
  if (!fill_flush(a, x, group_size, bits, codes, scale, min)) return false;
  a.tokens = static_cast<int>(x.size(2));
  a.tile_order = values_in_tile_order(x.size(3));
  raise_if(cuda::launch_value_flush(a, at::cuda::getCurrentCUDAStream()));
  return true;
}

bool cuda_decode_append(const at::Tensor& k, const at::Tensor& v, KiviParts& parts,
                        const DecodeAppendRows& rows) {
  const auto dtype = kernel_dtype(k.scalar_type());
  const at::Tensor &kr = parts.key_residual, &vr = parts.value_residual;
  const bool values_packed = parts.v_bits < 16;
  const int64_t batch = k.size(0), dim = k.size(3);
  if (!dtype || !on_gpu({&k, &v, &kr, &vr}) || v.scalar_type() != k.scalar_type() ||
      kr.scalar_type() != k.scalar_type() || vr.scalar_type() != k.scalar_type() ||
      k.device() != kr.device() || v.device() != kr.device() || k.size(2) != 1 ||
      v.sizes() != k.sizes() || kr.size(0) != batch || kr.size(1) != k.size(1) ||
      !cuda::decode_append_supported(static_cast<int>(dim), static_cast<int>(parts.group_size),
                                     static_cast<int>(parts.v_bits)))
    return false;
  if (parts.paged() && (!values_packed || rows.flush_page.size() != static_cast<size_t>(batch)))
    return false;
  if (values_packed) {
    const at::Tensor &codes = parts.value_codes, &scale = parts.value_scale;
    if (!on_gpu({&codes, &scale, &parts.value_min}) || codes.stride(3) != 1 ||
        scale.stride(3) != 1 || parts.value_min.strides() != scale.strides())
      return false;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int64_t b0 = 0; b0 < batch; b0 += cuda::kMaxAppendRows) {
    const int n = static_cast<int>(std::min<int64_t>(cuda::kMaxAppendRows, batch - b0));
    cuda::DecodeAppend a;
    a.dtype = *dtype;
    a.rows = n;
    a.heads = static_cast<int>(k.size(1));
    a.dim = static_cast<int>(dim);
    a.group_size = static_cast<int>(parts.group_size);
    a.bits = static_cast<int>(parts.v_bits);
    a.tile_order = values_in_tile_order(dim);
    a.k.data = row_pointer(k, b0);
    copy_strides(k, a.k.stride);
    a.v.data = row_pointer(v, b0);
    copy_strides(v, a.v.stride);
    a.key_residual = row_pointer(kr, b0);
    copy_strides(kr, a.key_residual_stride);
    a.value_residual = row_pointer(vr, b0);
    copy_strides(vr, a.value_residual_stride);
    a.value_slots = static_cast<int>(vr.size(2));
    const bool paged = parts.paged();
    if (values_packed) {
      const int64_t first = paged ? 0 : b0;  // paged: flush_index is a page id
      a.value_codes = static_cast<int32_t*>(row_pointer(parts.value_codes, first));
      copy_strides(parts.value_codes, a.value_codes_stride);
      a.value_scale = row_pointer(parts.value_scale, first);
      a.value_min = row_pointer(parts.value_min, first);
      copy_strides(parts.value_scale, a.value_scale_stride);
    }
    for (int r = 0; r < n; ++r) {
      const int flush = values_packed ? rows.flush_position[b0 + r] : -1;
      a.key_slot[r] = rows.key_slot[b0 + r];
      a.value_slot[r] = rows.value_slot[b0 + r];
      a.flush_position[r] = flush;
      a.flush_index[r] = paged && flush >= 0 ? rows.flush_page[b0 + r] : r;
      a.flush_slot[r] = paged && flush >= 0 ? flush % static_cast<int>(parts.page_tokens) : flush;
    }
    raise_if(cuda::launch_decode_append(a, stream));
  }
  return true;
}

std::optional<at::Tensor> cuda_decode_attention(const at::Tensor& q, const KiviParts& parts,
                                                const std::vector<int64_t>& lengths,
                                                std::span<const int64_t> counts,
                                                const AttentionParams& params, std::string* why,
                                                const at::Tensor& into, bool cuda_cores_only,
                                                const PackedPages& given_pages) {
  const PackedPages pages = pages_of(parts, given_pages);
  auto refuse = [&](const std::string& reason) -> std::optional<at::Tensor> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const auto dtype = kernel_dtype(q.scalar_type());
  if (!q.is_cuda() || !dtype) return refuse("queries are not fp16/bf16/fp32 on a GPU");
  if (q.size(2) != 1) return refuse("more than one new token per row (a chunk)");
  if (params.sliding_window > 0) return refuse("a sliding window");
  if (q.stride(3) != 1) return refuse("queries are not contiguous along head_dim");
  const at::Tensor& kr = parts.key_residual;
  const at::Tensor& vr = parts.value_residual;
  if (!on_gpu({&kr, &vr}) || kr.scalar_type() != q.scalar_type() || !aligned16(kr) ||
      !aligned16(vr))
    return refuse("the cache is not on the GPU in the queries' dtype");
  const bool keys_packed = parts.k_bits < 16, values_packed = parts.v_bits < 16;
  if ((keys_packed && !on_gpu({&parts.key_codes, &parts.key_scale, &parts.key_min})) ||
      (values_packed && !on_gpu({&parts.value_codes, &parts.value_scale, &parts.value_min})))
    return refuse("the packed cache is not on the GPU");
  const int batch = static_cast<int>(q.size(0)), q_heads = static_cast<int>(q.size(1)),
            dim = static_cast<int>(q.size(3)), kv_heads = static_cast<int>(kr.size(1));
  if (!table_fits(pages, q, batch, parts.group_size)) return refuse(kTableExpected);
  std::string reason;
  if (!cuda::decode_supported(*dtype, dim, q_heads, kv_heads, static_cast<int>(parts.group_size),
                              static_cast<int>(parts.k_bits), static_cast<int>(parts.v_bits),
                              &reason))
    return refuse(reason);

  at::Tensor out = into.defined() ? into : at::empty({batch, q_heads, 1, dim}, q.options());
  check(out.sizes() == q.sizes() && out.is_contiguous() && out.scalar_type() == q.scalar_type() &&
            out.device() == q.device(),
        "kivi decode attention: the output buffer must be a contiguous tensor like q");
  // The tensor-core kernel copies rows with 16-byte copies; unaligned storage takes the other.
  bool cores_only = cuda_cores_only;
  for (const at::Tensor* t : {&parts.key_codes, &parts.key_scale, &parts.key_min,
                              &parts.value_codes, &parts.value_scale, &parts.value_min, &kr, &vr})
    cores_only = cores_only || !rows_aligned16(*t);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cudaDeviceProp* device = at::cuda::getCurrentDeviceProperties();
  const int sm_count = device->multiProcessorCount;
  const bool cluster_capable = device->major >= 9 && decode_clusters_enabled();
  const int blocks_per_sm = cuda::decode_blocks_per_sm(*dtype, dim, static_cast<int>(parts.k_bits),
                                                       static_cast<int>(parts.v_bits), cores_only);
  for (int b0 = 0; b0 < batch; b0 += cuda::kMaxDecodeRows) {
    const int rows = std::min(cuda::kMaxDecodeRows, batch - b0);
    cuda::DecodeAttention a;
    a.dtype = *dtype;
    a.rows = rows;
    a.q_heads = q_heads;
    a.kv_heads = kv_heads;
    a.dim = dim;
    a.group_size = static_cast<int>(parts.group_size);
    a.k_bits = static_cast<int>(parts.k_bits);
    a.v_bits = static_cast<int>(parts.v_bits);
    a.scale = static_cast<float>(params.scale);
    a.cuda_cores_only = cores_only;
    // Raw pointers at row b0 (no narrow(): a decode step is short and host time shows in it).
    a.q = row_pointer(q, b0);
    copy_strides(q, a.q_stride);
    a.out = row_pointer(out, b0);
    fill_cache_parts(a, parts, pages, b0);
    int max_length = 0;
    for (int r = 0; r < rows; ++r) {
      const int64_t b = b0 + r;
      const bool active = counts.empty() || counts[b] > 0;
      check(lengths[b] < (int64_t{1} << 30), "kivi decode attention: sequence too long");
      a.length[r] = active ? static_cast<int>(lengths[b]) : 0;
      a.key_quantized[r] = static_cast<int>(parts.key_quantized[b]);
      a.value_quantized[r] = static_cast<int>(parts.value_quantized[b]);
      max_length = std::max(max_length, a.length[r]);
    }
    const bool tensor_cores = !cores_only && *dtype != cuda::DType::kFloat;
    a.splits = cuda::decode_splits(rows, kv_heads, max_length, sm_count, blocks_per_sm);
    // On sm_90 a few splits combine inside a thread-block cluster (decode_merge.cuh).
    a.cluster_splits =
        tensor_cores && cluster_capable && a.splits > 1 && a.splits <= cuda::kClusterSplits;
    a.workspace = workspace(q, cuda::decode_workspace_floats(rows, q_heads, dim, a.splits));
    a.counters = split_counters(q, int64_t{rows} * kv_heads);
    at::Tensor stamps;
    if (decode_timing_enabled() && tensor_cores) {
      stamps = at::zeros({int64_t{rows} * kv_heads * a.splits * 8}, q.options().dtype(at::kLong));
      a.timing = reinterpret_cast<unsigned long long*>(stamps.data_ptr<int64_t>());
    }
    raise_if(cuda::launch_decode_attention(a, stream));
    if (stamps.defined()) print_decode_timing(stamps, a);
  }
  return out;
}

namespace {

// Rows of 16-byte chunks: D contiguous, the tensor and every [b, h, t] row 16-byte aligned.
bool chunk_rows_aligned16(const at::Tensor& t) {
  const int64_t size = static_cast<int64_t>(t.element_size());
  bool ok = t.stride(t.dim() - 1) == 1 && aligned16(t);
  for (int64_t i = 0; i + 1 < t.dim(); ++i) ok = ok && t.stride(i) * size % 16 == 0;
  return ok;
}

// The packed parts within a head as chunk_attention.cuh reads them: key codes [groups, D, Wk],
// scales [groups, D]; value codes [tokens, Wv], scales [tokens, D / G], contiguous; pages and
// heads 16-byte aligned.
bool chunk_packed_layout(const KiviParts& p, bool keys, bool values) {
  const int64_t dim = p.key_residual.size(3);
  if (keys) {
    const at::Tensor &codes = p.key_codes, &scale = p.key_scale;
    const int64_t wk = codes.size(4);
    if (codes.stride(4) != 1 || codes.stride(3) != wk || codes.stride(2) != dim * wk ||
        scale.stride(3) != 1 || scale.stride(2) != dim || p.key_min.strides() != scale.strides() ||
        !rows_aligned16(codes) || !rows_aligned16(scale) || !rows_aligned16(p.key_min))
      return false;
  }
  if (values) {
    const at::Tensor &codes = p.value_codes, &scale = p.value_scale;
    if (codes.stride(3) != 1 || codes.stride(2) != codes.size(3) || scale.stride(3) != 1 ||
        scale.stride(2) != scale.size(3) || p.value_min.strides() != scale.strides() ||
        !rows_aligned16(codes) || !rows_aligned16(scale) || !rows_aligned16(p.value_min))
      return false;
  }
  return true;
}

}  // namespace

std::optional<at::Tensor> cuda_chunk_attention(const at::Tensor& q_in, const at::Tensor& k_in,
                                               const at::Tensor& v_in, const KiviParts& parts,
                                               const std::vector<int64_t>& lengths,
                                               std::span<const int64_t> counts,
                                               const AttentionParams& params, std::string* why,
                                               const PackedPages& given_pages) {
  const PackedPages pages = pages_of(parts, given_pages);
  auto refuse = [&](const std::string& reason) -> std::optional<at::Tensor> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const auto dtype = kernel_dtype(q_in.scalar_type());
  if (!q_in.is_cuda() || !dtype || *dtype == cuda::DType::kFloat)
    return refuse("queries are not fp16/bf16 on a GPU (fp32 takes the blocked path)");
  if (params.sliding_window > 0) return refuse("a sliding window");
  if (q_in.dim() != 4 || k_in.dim() != 4 || k_in.sizes() != v_in.sizes() ||
      k_in.size(0) != q_in.size(0) || k_in.size(2) != q_in.size(2) ||
      k_in.size(3) != q_in.size(3) || k_in.scalar_type() != q_in.scalar_type() ||
      v_in.scalar_type() != q_in.scalar_type() || !on_gpu({&k_in, &v_in}) ||
      k_in.device() != q_in.device() || v_in.device() != q_in.device())
    return refuse("q, k, v are not [B, heads, T, D] tensors of one dtype on one GPU");
  const at::Tensor& kr = parts.key_residual;
  const at::Tensor& vr = parts.value_residual;
  if (!on_gpu({&kr, &vr}) || kr.device() != q_in.device() ||
      kr.scalar_type() != q_in.scalar_type() || vr.scalar_type() != q_in.scalar_type())
    return refuse("the cache is not on the queries' GPU in their dtype");
  const int batch = static_cast<int>(q_in.size(0)), q_heads = static_cast<int>(q_in.size(1)),
            tokens = static_cast<int>(q_in.size(2)), dim = static_cast<int>(q_in.size(3)),
            kv_heads = static_cast<int>(kr.size(1));
  if (k_in.size(1) != kv_heads) return refuse("k/v heads differ from the cache's");
  std::string reason;
  if (!cuda::chunk_supported(*dtype, dim, q_heads, kv_heads, static_cast<int>(parts.group_size),
                             static_cast<int>(parts.k_bits), static_cast<int>(parts.v_bits),
                             &reason))
    return refuse(reason);
  if (!chunk_rows_aligned16(kr) || !chunk_rows_aligned16(vr))
    return refuse("the residual windows are not rows of 16-byte chunks");
  const bool keys_packed = parts.k_bits < 16, values_packed = parts.v_bits < 16;
  if ((keys_packed && !on_gpu({&parts.key_codes, &parts.key_scale, &parts.key_min})) ||
      (values_packed && !on_gpu({&parts.value_codes, &parts.value_scale, &parts.value_min})))
    return refuse("the packed cache is not on the GPU");
  if (!chunk_packed_layout(parts, keys_packed, values_packed))
    return refuse("the packed parts are not contiguous within a head, 16-byte aligned");
  if (!table_fits(pages, q_in, batch, parts.group_size)) return refuse(kTableExpected);
  for (int64_t b = 0; b < batch; ++b)
    if (lengths[b] + tokens >= (int64_t{1} << 30))
      return refuse("a sequence beyond 2^30 positions");
  // The kernel copies 16-byte chunks of rows: other layouts of the new tokens are copied once
  // (small next to the attention over the cache).
  const at::Tensor q = chunk_rows_aligned16(q_in) ? q_in : q_in.contiguous();
  const at::Tensor k = chunk_rows_aligned16(k_in) ? k_in : k_in.contiguous();
  const at::Tensor v = chunk_rows_aligned16(v_in) ? v_in : v_in.contiguous();

  at::Tensor out = at::empty({batch, q_heads, tokens, dim}, q.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int blocks_per_sm = cuda::chunk_blocks_per_sm(*dtype, dim, static_cast<int>(parts.k_bits),
                                                      static_cast<int>(parts.v_bits));
  for (int b0 = 0; b0 < batch; b0 += cuda::kMaxChunkRows) {
    const int rows = std::min(cuda::kMaxChunkRows, batch - b0);
    cuda::ChunkAttention a;
    a.dtype = *dtype;
    a.rows = rows;
    a.q_heads = q_heads;
    a.kv_heads = kv_heads;
    a.dim = dim;
    a.tokens = tokens;
    a.group_size = static_cast<int>(parts.group_size);
    a.k_bits = static_cast<int>(parts.k_bits);
    a.v_bits = static_cast<int>(parts.v_bits);
    a.scale = static_cast<float>(params.scale);
    a.q = row_pointer(q, b0);
    a.k = row_pointer(k, b0);
    a.v = row_pointer(v, b0);
    copy_strides(q, a.q_stride);
    copy_strides(k, a.k_stride);
    copy_strides(v, a.v_stride);
    a.out = row_pointer(out, b0);
    fill_cache_parts(a, parts, pages, b0);
    for (int r = 0; r < rows; ++r) {
      const int64_t b = b0 + r;
      const int64_t count = counts.empty() ? tokens : counts[b];
      check(count >= 0 && count <= tokens,
            "kivi chunk attention: row " + std::to_string(b) + " has " + std::to_string(count) +
                " new tokens, expected 0 to " + std::to_string(tokens));
      a.first[r] = static_cast<int>(lengths[b]);
      a.count[r] = static_cast<int>(count);
      a.key_quantized[r] = static_cast<int>(parts.key_quantized[b]);
      a.value_quantized[r] = static_cast<int>(parts.value_quantized[b]);
    }
    cuda::choose_chunk_splits(a, sm_count, blocks_per_sm);
    if (a.splits > 1) a.workspace = workspace(q, cuda::chunk_workspace_floats(a));
    raise_if(cuda::launch_chunk_attention(a, stream));
  }
  return out;
}

#endif

}  // namespace kivi::kivi_cache
