// Decode attention alone, on the GPU: the fused KIVI kernel over the packed cache (tensor-core
// version, and the CUDA-core one for reference) against at::scaled_dot_product_attention over an
// fp16 cache holding the same tokens, one layer.
// Each case is timed with CUDA events after warm-up, with the L2 cache flushed before every
// timed launch; the median is reported with the bytes the kernel must read, the GB/s that
// implies, and that as a fraction of the device's copy bandwidth measured in the same run.
//
//   kivi_attention_bench [--batches 1,16] [--contexts 4096,32768] [--extra 1x131072]
//                        [--bits 2,4] [--q-heads 32] [--kv-heads 8] [--head-dim 128]
//                        [--reps 40] [--json out.json] [--chunk 256]
// Defaults: Llama-3.1-8B's attention shapes (32 query heads, 8 kv heads, head_dim 128).
// --chunk N times chunks instead: N new tokens per row over `context` stored tokens (batch 1 and
// contexts 8192,32768 unless given), the fused chunk kernel over the packed cache against flash
// attention (at::_scaled_dot_product_flash_attention, causal over the chunk) over an fp16 cache
// of the same tokens, whose causal alignment is checked once against an explicit mask.
// Built with FlashInfer's headers (flashinfer_peer.h), each case also times FlashInfer's batch
// decode over a paged fp16 cache and a paged fp8 (e4m3) cache of the same tokens, and checks its
// fp16 output against SDPA's; otherwise the table says the peer is absent.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_ops.h"
#include "flashinfer_peer.h"
#include "kivi_cache.h"

using namespace kivi;
using namespace kivi::kivi_cache;

namespace {

struct Settings {
  std::vector<int64_t> batches = {1, 16};
  std::vector<int64_t> contexts = {4096, 32768};
  std::vector<std::pair<int64_t, int64_t>> extra;  // (batch, context) cases beyond the grid
  std::vector<int64_t> bits = {2, 4};
  int64_t q_heads = 32, kv_heads = 8, head_dim = 128, reps = 40;
  std::string json;
  int64_t chunk = 0;  // > 0: time chunks of this many tokens instead of decode steps
  bool grid_given = false;
};

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

Settings parse_args(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--batches") {
      s.batches = parse_list(value);
      s.grid_given = true;
    } else if (arg == "--contexts") {
      s.contexts = parse_list(value);
      s.grid_given = true;
    } else if (arg == "--chunk")
      s.chunk = std::stoll(value);
    else if (arg == "--bits")
      s.bits = parse_list(value);
    else if (arg == "--q-heads")
      s.q_heads = std::stoll(value);
    else if (arg == "--kv-heads")
      s.kv_heads = std::stoll(value);
    else if (arg == "--head-dim")
      s.head_dim = std::stoll(value);
    else if (arg == "--reps")
      s.reps = std::stoll(value);
    else if (arg == "--json")
      s.json = value;
    else if (arg == "--extra") {
      std::stringstream in(value);
      for (std::string item; std::getline(in, item, ',');) {
        const size_t x = item.find('x');
        if (x == std::string::npos) throw std::runtime_error("--extra expects BxL items: " + item);
        s.extra.emplace_back(std::stoll(item.substr(0, x)), std::stoll(item.substr(x + 1)));
      }
    } else {
      throw std::runtime_error("unknown argument " + arg);
    }
  }
  return s;
}

// Median time in microseconds of fn(), each launch timed alone with the L2 flushed before it.
double median_us(const std::function<void()>& fn, int64_t reps, at::Tensor& scratch) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 5; ++i) fn();  // warm-up
  std::vector<double> times;
  for (int64_t i = 0; i < reps; ++i) {
    scratch.add_(1);  // evicts the L2 (scratch is larger than it)
    cudaEventRecord(start, stream);
    fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms * 1000.0);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Device-to-device copy bandwidth, counting bytes read and written (GB/s).
double copy_bandwidth(at::Tensor& scratch) {
  const int64_t bytes = int64_t{2} << 30;
  at::Tensor src =
      at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA)).fill_(1);
  at::Tensor dst = at::empty_like(src);
  const double us = median_us([&] { dst.copy_(src); }, 10, scratch);
  return 2.0 * static_cast<double>(bytes) / (us * 1e3);
}

// Bytes the fused kernel must read for one layer: the packed codes, scales and minima below
// each row's quantized counts, the residual tokens above them, the queries and the output.
double kivi_bytes(const KiviParts& p, const std::vector<int64_t>& lengths, int64_t kv_heads,
                  int64_t dim, int64_t q_heads) {
  double total = 0;
  const double half = 2.0,
               groups_per_token = static_cast<double>(dim) / static_cast<double>(p.group_size);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const double kq = static_cast<double>(p.key_quantized[b]),
                 vq = static_cast<double>(p.value_quantized[b]);
    const double length = static_cast<double>(lengths[b]);
    double per_head = 0;
    if (p.k_bits < 16) per_head += kq * dim * p.k_bits / 8.0 + kq / p.group_size * dim * 2 * half;
    per_head += (length - kq) * dim * half;
    if (p.v_bits < 16) per_head += vq * dim * p.v_bits / 8.0 + vq * groups_per_token * 2 * half;
    per_head += (length - vq) * dim * half;
    total += per_head * kv_heads + 2.0 * q_heads * dim * half;
  }
  return total;
}

struct Row {
  int64_t batch = 0, context = 0;
  double fp16_cache_mb = 0, sdpa_us = 0, sdpa_gbs = 0;
  std::vector<double> kivi_us, kivi_gbs, kivi_fraction, speedup, kivi_mb, cores_us;
  // FlashInfer's decode over fp16 [0] and fp8 e4m3 [1] pages (empty when the peer is absent):
  // time, cache MB, ||out - SDPA|| / ||SDPA||.
  std::vector<double> peer_us, peer_mb, peer_error;
};

// Times FlashInfer's decode over fp16 and fp8 pages of k, v into the row (the peer's output
// checked against SDPA's: an fp16 peer far from it means the peer is set up wrong).
void time_flashinfer(Row& row, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& reference, double scale, int64_t reps, at::Tensor& scratch) {
  for (const bool fp8 : {false, true}) {
    bench::FlashInferDecode peer(k, v, q.size(1), scale, fp8);
    at::Tensor out = at::empty_like(q);
    peer.run(q, out);
    const double error = (out.to(at::kFloat) - reference.to(at::kFloat)).norm().item<double>() /
                         reference.to(at::kFloat).norm().item<double>();
    if (!fp8 && error > 1e-2)
      std::fprintf(stderr,
                   "warning: FlashInfer's fp16 decode is %.3g off SDPA at batch %lld x "
                   "context %lld: the peer is set up wrong\n",
                   error, (long long)row.batch, (long long)row.context);
    row.peer_us.push_back(median_us([&] { peer.run(q, out); }, reps, scratch));
    row.peer_mb.push_back(peer.cache_mb());
    row.peer_error.push_back(error);
  }
}

// ---- chunks ---------------------------------------------------------------------------------

// A KIVI-`bits` cache of one layer (fp16, Llama shapes of `s`) on the GPU holding k, v, room
// for `capacity` tokens per row.
std::unique_ptr<KiviCache> filled_cache(const Settings& s, int64_t batch, int64_t capacity,
                                        int64_t bits, const at::Tensor& k, const at::Tensor& v) {
  CacheGeometry g;
  g.num_layers = 1;
  g.num_kv_heads = s.kv_heads;
  g.head_dim = s.head_dim;
  g.max_batch = batch;
  g.max_tokens = capacity;
  g.dtype = at::kHalf;
  g.device = at::Device(at::kCUDA, 0);
  KiviOptions o;
  o.k_bits = bits;
  o.v_bits = bits;
  auto cache = std::make_unique<KiviCache>(g, o);
  cache->append(0, k, v);
  return cache;
}

struct ChunkRow {
  int64_t batch = 0, context = 0, chunk = 0;
  double fp16_cache_mb = 0, flash_us = 0, flash_tflops = 0, flash_mask_error = 0;
  std::vector<double> kivi_us, kivi_tflops, speedup, kivi_mb;
};

// Multiply-adds of causal chunk attention, as FLOPs: QK^T and PV over each query's visible keys.
double chunk_flops(const Settings& s, int64_t batch, int64_t context) {
  const double visible = static_cast<double>(s.chunk) * (context + (s.chunk + 1) / 2.0);
  return 4.0 * batch * s.q_heads * s.head_dim * visible;
}

// Times flash attention over fp16 K/V of `context` + chunk tokens (causal over the chunk) and
// the fused chunk kernel over a KIVI cache of the context, for each bit width.
ChunkRow time_chunk(const Settings& s, int64_t batch, int64_t context, at::Tensor& scratch) {
  ChunkRow row;
  row.batch = batch;
  row.context = context;
  row.chunk = s.chunk;
  const auto half = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
  const at::Tensor k = at::randn({batch, s.kv_heads, context, s.head_dim}, half);
  const at::Tensor v = at::randn({batch, s.kv_heads, context, s.head_dim}, half);
  const at::Tensor q = at::randn({batch, s.q_heads, s.chunk, s.head_dim}, half);
  const at::Tensor k_new = at::randn({batch, s.kv_heads, s.chunk, s.head_dim}, half);
  const at::Tensor v_new = at::randn({batch, s.kv_heads, s.chunk, s.head_dim}, half);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  const double flops = chunk_flops(s, batch, context);
  // Flash attention takes as many kv heads as query heads: the fp16 cache with its heads
  // repeated (made once, outside the timing).
  const int64_t rep = s.q_heads / s.kv_heads;
  const at::Tensor k_all = at::cat({k, k_new}, 2).repeat_interleave(rep, 1);
  const at::Tensor v_all = at::cat({v, v_new}, 2).repeat_interleave(rep, 1);
  row.fp16_cache_mb = 2.0 * static_cast<double>(k.nbytes()) / 1e6;
  auto flash = [&] {
    return std::get<0>(at::_scaled_dot_product_flash_attention(q, k_all, v_all, 0.0,
                                                               /*is_causal=*/true, false, scale));
  };
  {
    // Query t sits at position context + t: a bottom-right causal mask.
    const at::Tensor positions = at::arange(context + s.chunk, half.dtype(at::kLong));
    const at::Tensor visible = positions.unsqueeze(0) <=
                               (at::arange(s.chunk, half.dtype(at::kLong)) + context).unsqueeze(1);
    const at::Tensor masked = at::scaled_dot_product_attention(
        q.narrow(1, 0, 1).to(at::kFloat), k_all.narrow(1, 0, 1).to(at::kFloat),
        v_all.narrow(1, 0, 1).to(at::kFloat), visible, 0.0, false, scale);
    const at::Tensor out = flash().narrow(1, 0, 1).to(at::kFloat);
    row.flash_mask_error = (out - masked).norm().item<double>() / masked.norm().item<double>();
    if (row.flash_mask_error > 1e-2)
      std::fprintf(stderr,
                   "warning: flash attention's causal mask is not bottom-right aligned here "
                   "(%.3g off the explicit mask): its times are not comparable\n",
                   row.flash_mask_error);
  }
  row.flash_us = median_us([&] { flash(); }, s.reps, scratch);
  row.flash_tflops = flops / (row.flash_us * 1e6);
  for (int64_t bits : s.bits) {
    const auto cache = filled_cache(s, batch, context + s.chunk, bits, k, v);
    const CacheView view = cache->view(0);
    AttentionParams params;
    params.scale = scale;
    std::string why;
    if (!cuda_chunk_attention(q, k_new, v_new, kivi_parts(view), view.lengths, {}, params, &why))
      throw std::runtime_error("the fused chunk kernel cannot serve this case: " + why);
    const double us = median_us(
        [&] { cuda_chunk_attention(q, k_new, v_new, kivi_parts(view), view.lengths, {}, params); },
        s.reps, scratch);
    row.kivi_us.push_back(us);
    row.kivi_tflops.push_back(flops / (us * 1e6));
    row.speedup.push_back(row.flash_us / us);
    row.kivi_mb.push_back(static_cast<double>(cache->memory().total()) / 1e6);
  }
  return row;
}

int run_chunks(Settings s, const cudaDeviceProp* props, at::Tensor& scratch) {
  if (!s.grid_given) {
    s.batches = {1};
    s.contexts = {8192, 32768};
  }
  std::vector<std::pair<int64_t, int64_t>> cases;
  for (int64_t b : s.batches)
    for (int64_t l : s.contexts) cases.emplace_back(b, l);
  cases.insert(cases.end(), s.extra.begin(), s.extra.end());
  std::vector<ChunkRow> rows;
  for (const auto& [batch, context] : cases) {
    rows.push_back(time_chunk(s, batch, context, scratch));
    std::fprintf(stderr, "measured a %lld-token chunk at batch %lld x context %lld\n",
                 (long long)s.chunk, (long long)batch, (long long)context);
  }
  std::printf("\n| batch | stored | chunk | fp16 cache MB | flash fp16 us | TFLOP/s |");
  for (int64_t bits : s.bits)
    std::printf(" KIVI-%lld MB | KIVI-%lld chunk us | TFLOP/s | vs flash |", (long long)bits,
                (long long)bits);
  std::printf("\n|---|---|---|---|---|---|");
  for (size_t i = 0; i < s.bits.size(); ++i) std::printf("---|---|---|---|");
  std::printf("\n");
  for (const ChunkRow& r : rows) {
    std::printf("| %lld | %lld | %lld | %.0f | %.1f | %.0f |", (long long)r.batch,
                (long long)r.context, (long long)r.chunk, r.fp16_cache_mb, r.flash_us,
                r.flash_tflops);
    for (size_t i = 0; i < s.bits.size(); ++i)
      std::printf(" %.0f | %.1f | %.0f | %.2fx |", r.kivi_mb[i], r.kivi_us[i], r.kivi_tflops[i],
                  r.speedup[i]);
    std::printf("\n");
  }
  if (!s.json.empty()) {
    std::ofstream out(s.json);
    out << "{\n  \"device\": \"" << props->name << "\",\n  \"q_heads\": " << s.q_heads
        << ", \"kv_heads\": " << s.kv_heads << ", \"head_dim\": " << s.head_dim
        << ",\n  \"chunk_cases\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const ChunkRow& r = rows[i];
      out << "    {\"batch\": " << r.batch << ", \"context\": " << r.context
          << ", \"chunk\": " << r.chunk << ", \"fp16_cache_mb\": " << r.fp16_cache_mb
          << ", \"flash_us\": " << r.flash_us << ", \"flash_tflops\": " << r.flash_tflops
          << ", \"flash_vs_explicit_mask\": " << r.flash_mask_error << ", \"kivi\": [";
      for (size_t j = 0; j < s.bits.size(); ++j)
        out << (j ? ", " : "") << "{\"bits\": " << s.bits[j] << ", \"cache_mb\": " << r.kivi_mb[j]
            << ", \"us\": " << r.kivi_us[j] << ", \"tflops\": " << r.kivi_tflops[j]
            << ", \"speedup_vs_flash\": " << r.speedup[j] << "}";
      out << "]}" << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    out << "  ]\n}\n";
    std::printf("\nwrote %s\n", s.json.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const Settings s = parse_args(argc, argv);
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  const auto* props = at::cuda::getCurrentDeviceProperties();
  at::Tensor scratch =
      at::zeros({int64_t{256} << 20}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  const double copy_gbs = copy_bandwidth(scratch);
  std::printf("device: %s, %d SMs; copy bandwidth (read + write) %.0f GB/s\n", props->name,
              props->multiProcessorCount, copy_gbs);
  std::printf(
      "shapes: %lld query heads, %lld kv heads, head_dim %lld, one layer; fp16 storage; "
      "KIVI group 32, residual 128\n",
      (long long)s.q_heads, (long long)s.kv_heads, (long long)s.head_dim);
  if (s.chunk > 0) return run_chunks(s, props, scratch);

  std::vector<std::pair<int64_t, int64_t>> cases;
  for (int64_t b : s.batches)
    for (int64_t l : s.contexts) cases.emplace_back(b, l);
  cases.insert(cases.end(), s.extra.begin(), s.extra.end());

  std::vector<Row> rows;
  const auto half = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
  for (const auto& [batch, context] : cases) {
    Row row;
    row.batch = batch;
    row.context = context;
    at::Tensor k = at::randn({batch, s.kv_heads, context, s.head_dim}, half);
    at::Tensor v = at::randn({batch, s.kv_heads, context, s.head_dim}, half);
    const at::Tensor q = at::randn({batch, s.q_heads, 1, s.head_dim}, half);
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
    const double fp16_bytes = 2.0 * static_cast<double>(k.nbytes()) + 2.0 * q.nbytes();
    row.fp16_cache_mb = 2.0 * static_cast<double>(k.nbytes()) / 1e6;
    row.sdpa_us = median_us(
        [&] {
          at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale, /*enable_gqa=*/true);
        },
        s.reps, scratch);
    row.sdpa_gbs = fp16_bytes / (row.sdpa_us * 1e3);
    if (bench::flashinfer_absent_reason().empty()) {
      const at::Tensor reference =
          at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale, /*enable_gqa=*/true);
      time_flashinfer(row, q, k, v, reference, scale, s.reps, scratch);
    }

    for (int64_t bits : s.bits) {
      const auto cache = filled_cache(s, batch, context, bits, k, v);
      const CacheView view = cache->view(0);
      AttentionParams params;
      params.scale = scale;
      std::string why;
      if (!cuda_decode_attention(q, kivi_parts(view), view.lengths, {}, params, &why))
        throw std::runtime_error("the fused kernel cannot serve this case: " + why);
      const double us =
          median_us([&] { cuda_decode_attention(q, kivi_parts(view), view.lengths, {}, params); },
                    s.reps, scratch);
      const double cores_us = median_us(
          [&] {
            cuda_decode_attention(q, kivi_parts(view), view.lengths, {}, params, nullptr, {}, true);
          },
          s.reps, scratch);
      const double bytes =
          kivi_bytes(kivi_parts(view), view.lengths, s.kv_heads, s.head_dim, s.q_heads);
      row.cores_us.push_back(cores_us);
      row.kivi_us.push_back(us);
      row.kivi_gbs.push_back(bytes / (us * 1e3));
      row.kivi_fraction.push_back(bytes / (us * 1e3) / copy_gbs);
      row.speedup.push_back(row.sdpa_us / us);
      row.kivi_mb.push_back(static_cast<double>(cache->memory().total()) / 1e6);
    }
    rows.push_back(row);
    std::fprintf(stderr, "measured batch %lld x context %lld\n", (long long)batch,
                 (long long)context);
  }

  std::printf("\n| batch | context | fp16 cache MB | SDPA fp16 us | SDPA GB/s |");
  for (int64_t bits : s.bits)
    std::printf(" KIVI-%lld MB | KIVI-%lld us | GB/s | of copy bw | vs SDPA | CUDA-core us |",
                (long long)bits, (long long)bits);
  const bool peer = bench::flashinfer_absent_reason().empty();
  if (peer)
    std::printf(
        " FlashInfer fp16 us | vs SDPA | FlashInfer fp8 us | fp8 MB | vs SDPA | KIVI-%lld vs fp8 |",
        (long long)s.bits[0]);
  std::printf("\n|---|---|---|---|---|");
  for (size_t i = 0; i < s.bits.size(); ++i) std::printf("---|---|---|---|---|---|");
  if (peer) std::printf("---|---|---|---|---|---|");
  std::printf("\n");
  for (const Row& r : rows) {
    std::printf("| %lld | %lld | %.0f | %.1f | %.0f |", (long long)r.batch, (long long)r.context,
                r.fp16_cache_mb, r.sdpa_us, r.sdpa_gbs);
    for (size_t i = 0; i < s.bits.size(); ++i)
      std::printf(" %.0f | %.1f | %.0f | %.0f%% | %.2fx | %.1f |", r.kivi_mb[i], r.kivi_us[i],
                  r.kivi_gbs[i], 100.0 * r.kivi_fraction[i], r.speedup[i], r.cores_us[i]);
    if (peer)
      std::printf(" %.1f | %.2fx | %.1f | %.0f | %.2fx | %.2fx |", r.peer_us[0],
                  r.sdpa_us / r.peer_us[0], r.peer_us[1], r.peer_mb[1], r.sdpa_us / r.peer_us[1],
                  r.peer_us[1] / r.kivi_us[0]);
    std::printf("\n");
  }
  if (peer) {
    double worst16 = 0, worst8 = 0;
    for (const Row& r : rows) {
      worst16 = std::max(worst16, r.peer_error[0]);
      worst8 = std::max(worst8, r.peer_error[1]);
    }
    std::printf(
        "\nFlashInfer against SDPA: largest ||out - ref|| / ||ref|| %.2g (fp16 pages), %.2g "
        "(fp8 e4m3 pages)\n",
        worst16, worst8);
  } else {
    std::printf("\nFlashInfer peer absent: %s\n", bench::flashinfer_absent_reason().c_str());
  }

  if (!s.json.empty()) {
    std::ofstream out(s.json);
    out << "{\n  \"device\": \"" << props->name << "\",\n  \"copy_bandwidth_gbs\": " << copy_gbs
        << ",\n  \"q_heads\": " << s.q_heads << ", \"kv_heads\": " << s.kv_heads
        << ", \"head_dim\": " << s.head_dim << ",\n  \"cases\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out << "    {\"batch\": " << r.batch << ", \"context\": " << r.context
          << ", \"fp16_cache_mb\": " << r.fp16_cache_mb << ", \"sdpa_us\": " << r.sdpa_us
          << ", \"sdpa_gbs\": " << r.sdpa_gbs << ", \"kivi\": [";
      for (size_t j = 0; j < s.bits.size(); ++j)
        out << (j ? ", " : "") << "{\"bits\": " << s.bits[j] << ", \"cache_mb\": " << r.kivi_mb[j]
            << ", \"us\": " << r.kivi_us[j] << ", \"gbs\": " << r.kivi_gbs[j]
            << ", \"fraction_of_copy\": " << r.kivi_fraction[j]
            << ", \"speedup_vs_sdpa\": " << r.speedup[j] << ", \"cuda_cores_us\": " << r.cores_us[j]
            << "}";
      out << "]";
      if (!r.peer_us.empty())
        out << ", \"flashinfer\": [{\"kv\": \"fp16\", \"us\": " << r.peer_us[0]
            << ", \"cache_mb\": " << r.peer_mb[0] << ", \"error_vs_sdpa\": " << r.peer_error[0]
            << "}, {\"kv\": \"fp8_e4m3\", \"us\": " << r.peer_us[1]
            << ", \"cache_mb\": " << r.peer_mb[1] << ", \"error_vs_sdpa\": " << r.peer_error[1]
            << "}]";
      out << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    out << "  ],\n  \"flashinfer\": \"" << (peer ? "present" : "absent") << "\"\n}\n";
    std::printf("\nwrote %s\n", s.json.c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kivi_attention_bench: %s\n", e.what());
  return 1;
}
