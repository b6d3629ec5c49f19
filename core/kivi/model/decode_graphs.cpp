#include "kivi/model/decode_graphs.h"

#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/InferenceMode.h>

#include "kivi/model/safetensors.h"
#include "kivi/util/error.h"

#ifdef KIVI_CORE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace kivi {

#ifdef KIVI_CORE_WITH_CUDA

namespace {

// One cudaMemcpyAsync where both sides are dense and alike, rather than ATen's copy_ (dispatch,
// TensorIterator): at batch 1 the host's work between the graph replays is what the device
// waits for. End to end the two measured the same within noise (docs/gpu.md, 2026-12-04).
void copy_into(at::Tensor& dst, const at::Tensor& src, cudaStream_t stream) {
  if (src.is_cuda() && src.scalar_type() == dst.scalar_type() && src.sizes() == dst.sizes() &&
      src.is_contiguous() && dst.is_contiguous() && src.device() == dst.device()) {
    const cudaError_t status = cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), dst.nbytes(),
                                               cudaMemcpyDeviceToDevice, stream);
    check(status == cudaSuccess,
          std::string("decode graphs: copying into a graph's input failed: ") +
              cudaGetErrorString(status));
    return;
  }
  dst.copy_(src);
}

}  // namespace

struct DecodeGraphs::Impl {
  DecodeShapes shapes;
  DecodeStages stages;
  // Fixed inputs, written before each replay.
  at::Tensor ids;                // [B, 1] int64
  at::Tensor positions;          // [B, 1] int64, when stages.rotary
  at::Tensor cos, sin;           // [B, 1, head_dim]: inputs, or piece 0's output (rotary)
  std::vector<at::Tensor> attn;  // per layer: [B, q_heads, 1, head_dim]
  // What the graphs leave behind, in the graphs' pool.
  std::vector<AttentionInputs> inputs;  // per layer
  std::vector<at::Tensor> residual;     // per layer: h entering the layer, [B, 1, hidden]
  at::Tensor logits;                    // [B, 1, vocab] float32
  std::vector<std::unique_ptr<at::cuda::CUDAGraph>> graphs;  // layers + 1

  void replay(int64_t g) {
    RECORD_FUNCTION("kivi::graph_replay", std::vector<c10::IValue>());
    graphs[g]->replay();
  }

  // Piece g: g == 0 embeds; g > 0 finishes layer g - 1; g < layers prepares layer g's
  // attention, g == layers makes the logits.
  void piece(int64_t g) {
    if (g == 0 && stages.rotary) std::tie(cos, sin) = stages.rotary(positions);
    const Residual h = g == 0 ? Residual{stages.embed(ids), {}}
                              : stages.after_attention(g - 1, residual[g - 1], attn[g - 1]);
    if (g < shapes.layers) {
      inputs[g] = stages.attention_inputs(g, h, cos, sin);
      residual[g] = inputs[g].residual;
    } else {
      logits = stages.logits(h);
    }
  }
};

DecodeGraphs::DecodeGraphs(const DecodeShapes& shapes, DecodeStages stages)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.shapes = shapes;
  m.stages = std::move(stages);
  c10::InferenceMode inference;
  const c10::DeviceIndex index = static_cast<c10::DeviceIndex>(shapes.device_index);
  c10::cuda::CUDAGuard device_guard(index);
  const auto on_device = at::TensorOptions().device(at::Device(at::kCUDA, index));
  const auto act = on_device.dtype(shapes.dtype);
  m.ids = at::zeros({shapes.batch, 1}, on_device.dtype(at::kLong));
  if (m.stages.rotary) {
    m.positions = at::zeros({shapes.batch, 1}, on_device.dtype(at::kLong));
  } else {
    m.cos = at::ones({shapes.batch, 1, shapes.head_dim}, act);
    m.sin = at::zeros({shapes.batch, 1, shapes.head_dim}, act);
  }
  for (int64_t l = 0; l < shapes.layers; ++l)
    m.attn.push_back(at::zeros({shapes.batch, shapes.q_heads, 1, shapes.head_dim}, act));
  m.inputs.resize(shapes.layers);
  m.residual.resize(shapes.layers);

  // Capture needs a stream other than the legacy default one. The fixed inputs must be
  // written before that stream reads them in the warm-up.
  at::cuda::device_synchronize();
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index);
  {
    c10::cuda::CUDAStreamGuard stream_guard(side);
    // Warm-up, uncaptured: creates cuBLAS handles and workspaces and anything else made lazily
    // on first use, which must not happen inside a capture.
    for (int64_t g = 0; g <= shapes.layers; ++g) m.piece(g);
    side.synchronize();
    const at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
    for (int64_t g = 0; g <= shapes.layers; ++g) {
      auto graph = std::make_unique<at::cuda::CUDAGraph>();
      // Thread-local: another thread's unrelated CUDA calls (a server's) do not break it.
      graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      try {
        m.piece(g);
      } catch (...) {
        graph->capture_end();
        throw;
      }
      graph->capture_end();
      m.graphs.push_back(std::move(graph));
    }
  }
  at::cuda::device_synchronize();
}

DecodeGraphs::~DecodeGraphs() = default;

const DecodeShapes& DecodeGraphs::shapes() const {
  return impl_->shapes;
}

bool DecodeGraphs::takes_positions() const {
  return static_cast<bool>(impl_->stages.rotary);
}

at::Tensor DecodeGraphs::run(const at::Tensor& ids, const at::Tensor& positions,
                             const at::Tensor& cos, const at::Tensor& sin, const AttendFn& attend) {
  Impl& m = *impl_;
  const bool by_position = takes_positions();
  // What the graphs were captured for: ids and positions, or ids and cos/sin.
  const at::Tensor& want = by_position ? m.positions : m.cos;
  const at::Tensor& given = by_position ? positions : cos;
  const bool fits = ids.sizes() == m.ids.sizes() && given.defined() &&
                    given.sizes() == want.sizes() &&
                    (by_position || (sin.defined() && sin.sizes() == m.sin.sizes()));
  const std::string what = by_position ? " and positions " : " and cos/sin ";
  check(fits, "decode graphs: captured for ids " + shape_string(m.ids.sizes()) + what +
                  shape_string(want.sizes()) + ", called with ids " + shape_string(ids.sizes()) +
                  what + (given.defined() ? shape_string(given.sizes()) : "(none)"));
  c10::InferenceMode inference;
  c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(m.shapes.device_index));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  {
    RECORD_FUNCTION("kivi::graph_inputs", std::vector<c10::IValue>());
    copy_into(m.ids, ids, stream);
    if (by_position) {
      copy_into(m.positions, positions, stream);
    } else {
      copy_into(m.cos, cos, stream);
      copy_into(m.sin, sin, stream);
    }
  }
  m.replay(0);
  for (int64_t l = 0; l < m.shapes.layers; ++l) {
    {
      RECORD_FUNCTION("kivi::attend", std::vector<c10::IValue>());
      const at::Tensor out = attend(l, m.inputs[l], m.attn[l]);
      if (!out.is_same(m.attn[l])) copy_into(m.attn[l], out, stream);
    }
    m.replay(l + 1);
  }
  return m.logits.clone();
}

bool DecodeGraphs::available() {
  return true;
}

#else  // no CUDA in this build

struct DecodeGraphs::Impl {
  DecodeShapes shapes;
};

DecodeGraphs::DecodeGraphs(const DecodeShapes&, DecodeStages) {
  throw Error("decode graphs: this build of kivi has no CUDA support");
}
DecodeGraphs::~DecodeGraphs() = default;
const DecodeShapes& DecodeGraphs::shapes() const {
  return impl_->shapes;
}
at::Tensor DecodeGraphs::run(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const AttendFn&) {
  throw Error("decode graphs: this build of kivi has no CUDA support");
}
bool DecodeGraphs::takes_positions() const {
  return false;
}
bool DecodeGraphs::available() {
  return false;
}

#endif

}  // namespace kivi
