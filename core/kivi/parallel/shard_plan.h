// Which part of a Llama-like decoder one tensor-parallel rank holds (Megatron's split, as vLLM
// and TensorRT-LLM do it):
//   - attention: query heads split evenly; q/k/v are column-parallel (each rank computes its
//     heads), o is row-parallel (each rank's partial sum, then an all-reduce);
//   - KV heads split evenly when there are at least as many as ranks; with fewer (GQA, e.g. 8
//     KV heads on 16 ranks, or 2 on 4) each KV head is replicated on size / kv_heads ranks, so
//     that every rank holds the one KV head its query heads read;
//   - MLP: gate/up column-parallel, down row-parallel (then an all-reduce); the intermediate
//     size may split unevenly;
//   - vocabulary: the embedding and the LM head split by rows (padded to a multiple of the
//     ranks); a lookup is zero outside the rank's rows and summed by an all-reduce, the logits
//     are gathered.
#pragma once

#include <cstdint>
#include <string>

namespace kivi {

struct ModelConfig;

struct ShardPlan {
  int64_t rank = 0, size = 1;
  int64_t q_heads = 0, q_head_start = 0;    // this rank's query heads
  int64_t kv_heads = 0, kv_head_start = 0;  // this rank's KV heads (global index of the first)
  int64_t kv_replicas = 1;                  // ranks holding each KV head (> 1: replicated)
  int64_t intermediate = 0, intermediate_start = 0;
  int64_t vocab_rows = 0, vocab_start = 0;  // rows of the (padded) vocabulary held
  int64_t vocab_padded = 0;                 // vocab_rows * size >= vocab_size

  bool sharded() const { return size > 1; }
  // For logs and docs: "rank 1 of 4: q heads 8-15, kv head 2 (replicated on 2 ranks), ...".
  std::string describe() const;
};

// The plan for `rank` of `size`. Throws kivi::Error when the model does not split over `size`
// ranks (query heads not divisible by it; KV heads neither divisible by it nor dividing it),
// naming the counts and the [parallel] tensor setting.
ShardPlan plan_shards(const ModelConfig& config, int64_t rank, int64_t size);

}  // namespace kivi
