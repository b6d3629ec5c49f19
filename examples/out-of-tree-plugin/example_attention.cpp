// An "attention" plugin written against the installed kivi headers only: plain softmax
// attention over dense cache views, with a `scale_multiplier` option to show plugin options.
#include <ATen/ATen.h>

#include "kivi/attention/attention.h"
#include "kivi/plugin/plugin.h"
#include "kivi/util/error.h"

namespace {

class ExampleAttention final : public kivi::Attention {
 public:
  explicit ExampleAttention(double scale_multiplier) : scale_multiplier_(scale_multiplier) {}

  bool supports(std::string_view format) const override { return format == kivi::kDenseFormat; }

  at::Tensor prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     std::span<const int64_t> counts,
                     const kivi::AttentionParams& params) const override {
    const int64_t T = q.size(2);
    std::vector<int64_t> lengths(q.size(0), T);
    if (!counts.empty()) lengths.assign(counts.begin(), counts.end());
    return attend(q, k, v, lengths, lengths, params);
  }

  at::Tensor decode(const at::Tensor& q, const kivi::CacheView& view,
                    std::span<const int64_t> counts,
                    const kivi::AttentionParams& params) const override {
    kivi::check(view.is_dense(),
                "example attention reads dense views only, got \"" + view.format + "\"");
    std::vector<int64_t> new_counts(q.size(0), q.size(2));
    if (!counts.empty()) new_counts.assign(counts.begin(), counts.end());
    return attend(q, view.dense.k, view.dense.v, view.lengths, new_counts, params);
  }

 private:
  // q: [B, Hq, T, D]; k, v: [B, Hkv, S, D]; row b has kv_lengths[b] keys, and its T queries
  // are the last q_counts[b] positions of them (the rest are padding).
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::vector<int64_t>& kv_lengths, const std::vector<int64_t>& q_counts,
                    const kivi::AttentionParams& params) const {
    at::Tensor out = at::zeros_like(q);
    const int64_t group = q.size(1) / k.size(1);
    for (int64_t b = 0; b < q.size(0); ++b) {
      const int64_t n = kv_lengths[b], t = q_counts[b];
      if (t == 0) continue;
      at::Tensor kb =
          k[b].narrow(1, 0, n).repeat_interleave(group, 0).to(at::kFloat);  // [Hq, n, D]
      at::Tensor vb =
          v[b].narrow(1, 0, n).repeat_interleave(group, 0).to(at::kFloat);  // [Hq, n, D]
      at::Tensor qb = q[b].narrow(1, 0, t).to(at::kFloat);                  // [Hq, t, D]
      at::Tensor scores = at::matmul(qb, kb.transpose(1, 2)) * (params.scale * scale_multiplier_);
      // Query i sits at position n - t + i and sees keys 0..n-t+i.
      at::Tensor pos_q = at::arange(n - t, n).unsqueeze(1);
      at::Tensor pos_k = at::arange(n).unsqueeze(0);
      scores.masked_fill_(pos_k > pos_q, -std::numeric_limits<float>::infinity());
      out[b].narrow(1, 0, t).copy_(at::matmul(at::softmax(scores, -1), vb));
    }
    return out;
  }

  double scale_multiplier_;
};

std::unique_ptr<kivi::Attention> make(kivi::ConfigTable& options) {
  return std::make_unique<ExampleAttention>(options.get_double("scale_multiplier", 1.0));
}

}  // namespace

KIVI_PLUGIN(example_attention, "example-attention", "1.0.0",
            kivi::plugin::factory<kivi::Attention, &make>(
                "example", "plain softmax attention (out-of-tree example)"))
