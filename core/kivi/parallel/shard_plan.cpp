#include "kivi/parallel/shard_plan.h"

#include "kivi/model/model_config.h"
#include "kivi/util/error.h"

namespace kivi {

std::string ShardPlan::describe() const {
  auto range = [](int64_t start, int64_t n) {
    return n == 1 ? std::to_string(start)
                  : std::to_string(start) + "-" + std::to_string(start + n - 1);
  };
  std::string s = "rank " + std::to_string(rank) + " of " + std::to_string(size) + ": q heads " +
                  range(q_head_start, q_heads) + ", kv heads " + range(kv_head_start, kv_heads);
  if (kv_replicas > 1) s += " (each on " + std::to_string(kv_replicas) + " ranks)";
  s += ", mlp columns " + range(intermediate_start, intermediate) + ", vocab rows " +
       range(vocab_start, vocab_rows);
  return s;
}

ShardPlan plan_shards(const ModelConfig& config, int64_t rank, int64_t size) {
  check(size >= 1 && rank >= 0 && rank < size, "tensor parallel: rank " + std::to_string(rank) +
                                                   " of " + std::to_string(size) +
                                                   " is not a rank of the group");
  const int64_t heads = config.num_attention_heads, kv = config.num_key_value_heads;
  const std::string setting = "[parallel] tensor = " + std::to_string(size);
  check(heads % size == 0, setting + ": the model's " + std::to_string(heads) +
                               " attention heads do not split evenly over " + std::to_string(size) +
                               " ranks; choose a tensor size that divides " +
                               std::to_string(heads));
  check(kv % size == 0 || size % kv == 0,
        setting + ": the model's " + std::to_string(kv) + " KV heads neither split evenly over " +
            std::to_string(size) +
            " ranks nor divide it (for replication); choose a tensor size that divides or is a "
            "multiple of " +
            std::to_string(kv));
  ShardPlan p;
  p.rank = rank;
  p.size = size;
  p.q_heads = heads / size;
  p.q_head_start = rank * p.q_heads;
  if (kv >= size) {
    p.kv_heads = kv / size;
    p.kv_head_start = rank * p.kv_heads;
  } else {
    // Fewer KV heads than ranks: size / kv consecutive ranks share one KV head, the head their
    // query heads belong to (query head h reads KV head h / (heads / kv)).
    p.kv_heads = 1;
    p.kv_replicas = size / kv;
    p.kv_head_start = rank / p.kv_replicas;
  }
  // Uneven is fine for the MLP: the row-parallel down projection takes the same columns.
  const int64_t inter = config.intermediate_size;
  p.intermediate_start = rank * inter / size;
  p.intermediate = (rank + 1) * inter / size - p.intermediate_start;
  p.vocab_rows = (config.vocab_size + size - 1) / size;
  p.vocab_padded = p.vocab_rows * size;
  p.vocab_start = rank * p.vocab_rows;
  return p;
}

}  // namespace kivi
