// Piecewise CUDA graphs for one-token decode steps.
//
// At batch 1 a decode step of an 8B model is ~1,400 small kernels (norms, projections, rotary,
// MLP), and launching them from the host costs more than running them. A whole step cannot be
// one graph: the cache append and the attention read lengths that change every step (their
// kernels take them as arguments, and the kivi cache decides on the host when to flush). So a
// step is cut at the attention: everything from one layer's attention output to the next
// layer's q/k/v is one captured graph (L + 1 graphs in all), and the cache append + attention
// run eagerly in between, on the same stream. What the graphs read is copied into fixed
// buffers first (token ids, positions or cos/sin); each layer's attention writes its output
// into the graphs' buffer where the backend can (AttentionParams::out), else it is copied.
//
// Captured once per batch size, after one uncaptured warm-up pass on the capture stream; all
// graphs share one memory pool and replay in capture order, as CUDA graph pools require.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include <ATen/Tensor.h>

namespace kivi {

// The residual stream between layers, kept as a sum not yet taken: h = base + delta (delta
// undefined: h = base). A layer's last residual add is left to the next norm, which adds and
// normalises in one kernel (layers.h add_rms_norm).
struct Residual {
  at::Tensor base;   // [B, T, hidden]
  at::Tensor delta;  // [B, T, hidden] or undefined
};

struct AttentionInputs {
  at::Tensor q;         // [B, q_heads, T, head_dim], rotated
  at::Tensor k, v;      // [B, kv_heads, T, head_dim], k rotated
  at::Tensor residual;  // [B, T, hidden]: h entering the layer, the sum taken
};

// The model's parts between attentions; each must only launch device work (no host reads,
// no host-to-device copies), since it runs under stream capture.
struct DecodeStages {
  std::function<at::Tensor(const at::Tensor& ids)> embed;  // [B, 1] -> h [B, 1, hidden]
  // Layer l's residual add and input norm, q/k/v projection and rotary.
  std::function<AttentionInputs(int64_t layer, const Residual& h, const at::Tensor& cos,
                                const at::Tensor& sin)>
      attention_inputs;
  // Layer l from its attention output [B, q_heads, 1, head_dim] on: o-projection, residual,
  // MLP; returns the next h with the MLP's output not yet added. h: the layer's input.
  std::function<Residual(int64_t layer, const at::Tensor& h, const at::Tensor& attn)>
      after_attention;
  std::function<at::Tensor(const Residual& h)> logits;  // h -> [B, 1, vocab] float32
  // Optional: positions [B, 1] int64 -> cos, sin [B, 1, head_dim]. When set, the graphs take
  // positions and compute the rotary inside the first piece: at the step's start the device
  // waits for the host, and these were 7 launches there. When not set (a rotary that reads
  // positions on the host), the graphs take cos/sin.
  std::function<std::pair<at::Tensor, at::Tensor>(const at::Tensor& positions)> rotary;
};

struct DecodeShapes {
  int64_t layers = 0, batch = 0, q_heads = 0, head_dim = 0;
  at::ScalarType dtype = at::kFloat;
  int64_t device_index = 0;
};

// Layer l's eager part: append k/v to the cache and attend; returns [B, q_heads, 1, head_dim].
// `out`: the graphs' buffer for that result, which the attention may write into directly
// (AttentionParams::out).
using AttendFn =
    std::function<at::Tensor(int64_t layer, const AttentionInputs& inputs, const at::Tensor& out)>;

class DecodeGraphs {
 public:
  // Captures the graphs (throws kivi::Error where CUDA graphs are not built in).
  DecodeGraphs(const DecodeShapes& shapes, DecodeStages stages);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  const DecodeShapes& shapes() const;

  // One step: ids [B, 1] int64 and, as DecodeStages::rotary asks, positions [B, 1] int64 or
  // cos/sin [B, 1, head_dim] (the others undefined), on the device. Returns the logits
  // [B, 1, vocab] float32 (a fresh tensor: the graphs' own buffer is overwritten next step).
  at::Tensor run(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& cos,
                 const at::Tensor& sin, const AttendFn& attend);
  // Whether run() takes positions (else cos/sin).
  bool takes_positions() const;

  // Whether this build can capture CUDA graphs at all.
  static bool available();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kivi
