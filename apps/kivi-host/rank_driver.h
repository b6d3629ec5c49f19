// Tensor parallelism in kivi-host (docs/parallel.md): rank 0 runs the mode, ranks 1..N-1 follow.
// Every call rank 0 makes on its model or on a cache (a forward pass, a cache made, reordered,
// truncated, shared, asked for its memory) is first broadcast to the other ranks on the group's
// control channel, and each of them makes the same call on its own shard of the model and its
// own cache. The modes see an ordinary CausalLM and ordinary KVCaches: generate, chat,
// perplexity, compare, bench and serve run unchanged. Rank 0 alone owns the tokenizer, sampling
// and the HTTP server; the others never see a token's text.
#pragma once

#include <memory>
#include <mutex>

#include "host_context.h"
#include "kivi/model/causal_lm.h"
#include "kivi/parallel/tensor_parallel.h"

namespace kivi::host {

class RankDriver;

// Rank 0: wraps its shard of the model so that every forward pass also runs on the others.
// The driver is shared with the cache factories it wraps (driver_factory).
std::unique_ptr<CausalLM> make_driver_model(std::unique_ptr<CausalLM> shard,
                                            std::shared_ptr<RankDriver> driver);

// Rank 0: the driver over `group`; its destructor tells the other ranks to stop.
std::shared_ptr<RankDriver> make_rank_driver(std::shared_ptr<TensorParallelGroup> group);

// Rank 0: `pairing` made current on every rank (the others make the same plugins from the same
// names and options), and a factory whose caches mirror their calls on the others.
CachePairing driver_pairing(const std::shared_ptr<RankDriver>& driver, const CachePairing& pairing);

// Ranks 1..N-1: runs rank 0's calls on `model` (this rank's shard) until rank 0 says stop. A
// rank that dies, or a collective past the timeout, throws kivi::Error naming both.
void run_rank_worker(const HostContext& context, CausalLM& model, TensorParallelGroup& group);

}  // namespace kivi::host
