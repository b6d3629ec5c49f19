#include "kivi/cache/block_pool.h"

#include <algorithm>
#include <string>

#include "kivi/util/error.h"

namespace kivi {

BlockPool::BlockPool(int64_t capacity, int64_t block_tokens) : block_tokens_(block_tokens) {
  check(capacity > 0 && capacity <= INT32_MAX && block_tokens > 0,
        "block pool: " + std::to_string(capacity) + " blocks of " + std::to_string(block_tokens) +
            " tokens: expected at least one block (at most 2^31 - 1) of at least one token");
  refcount_.assign(static_cast<size_t>(capacity), 0);
  lru_at_.resize(static_cast<size_t>(capacity));
  hash_of_.assign(static_cast<size_t>(capacity), 0);
  previous_of_.assign(static_cast<size_t>(capacity), 0);
  tokens_of_.resize(static_cast<size_t>(capacity));
  free_.reserve(static_cast<size_t>(capacity));
  // Handed out from id 0 up (a stack: the last pushed comes first).
  for (int64_t i = capacity - 1; i >= 0; --i) free_.push_back(static_cast<BlockId>(i));
}

void BlockPool::check_id(BlockId block, const char* what) const {
  check(block >= 0 && block < capacity(),
        std::string("block pool: ") + what + " of block " + std::to_string(block) +
            ": expected an id from 0 to " + std::to_string(capacity() - 1));
}

std::optional<BlockPool::BlockId> BlockPool::allocate() {
  BlockId block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {  // evict the least recently cached block: its contents go
    block = lru_.front();
    lru_.pop_front();
    forget_hash(block);
    ++evictions_;
  } else {
    return std::nullopt;
  }
  refcount_[block] = 1;
  peak_used_ = std::max(peak_used_, ++used_);
  return block;
}

void BlockPool::retain(BlockId block) {
  check_id(block, "retain");
  check(refcount_[block] > 0, "block pool: retain of block " + std::to_string(block) +
                                  ", which has no owner (take blocks with allocate or lookup)");
  if (++refcount_[block] == 2) ++shared_;
}

void BlockPool::release(BlockId block) {
  check_id(block, "release");
  check(refcount_[block] > 0, "block pool: release of block " + std::to_string(block) +
                                  ", which has no owner (released twice?)");
  if (--refcount_[block] == 1) --shared_;
  if (refcount_[block] > 0) return;
  --used_;
  if (hash_of_[block] != 0) {
    lru_.push_back(block);  // most recently cached last
    lru_at_[block] = std::prev(lru_.end());
  } else {
    free_.push_back(block);
  }
}

bool BlockPool::published(BlockId block) const {
  check_id(block, "published");
  return hash_of_[block] != 0;
}

int32_t BlockPool::owners(BlockId block) const {
  check_id(block, "owners");
  return refcount_[block];
}

uint64_t BlockPool::chain_hash(uint64_t previous, std::span<const int32_t> tokens) {
  // FNV-1a over the predecessor's hash and the tokens, then a splitmix64 finish so that nearby
  // inputs spread over all 64 bits.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t x) {
    for (int byte = 0; byte < 8; ++byte) {
      h ^= (x >> (8 * byte)) & 0xffu;
      h *= 1099511628211ull;
    }
  };
  mix(previous);
  mix(tokens.size());
  for (int32_t token : tokens) mix(static_cast<uint32_t>(token));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;  // 0 means "not published"
}

uint64_t BlockPool::publish(BlockId block, uint64_t previous, std::span<const int32_t> tokens) {
  check_id(block, "publish");
  check(refcount_[block] > 0,
        "block pool: publish of block " + std::to_string(block) + ", which has no owner");
  check(static_cast<int64_t>(tokens.size()) == block_tokens_,
        "block pool: publish of block " + std::to_string(block) + " with " +
            std::to_string(tokens.size()) + " tokens: only full blocks (" +
            std::to_string(block_tokens_) + " tokens) are shared");
  const uint64_t hash = chain_hash(previous, tokens);
  if (hash_of_[block] != 0) return hash_of_[block];
  if (by_hash_.count(hash) != 0) return hash;  // the same contents are already indexed
  hash_of_[block] = hash;
  previous_of_[block] = previous;
  tokens_of_[block].assign(tokens.begin(), tokens.end());
  by_hash_[hash] = block;
  return hash;
}

std::optional<BlockPool::Hit> BlockPool::lookup(uint64_t previous,
                                                std::span<const int32_t> tokens) {
  ++lookups_;
  const uint64_t hash = chain_hash(previous, tokens);
  const auto found = by_hash_.find(hash);
  if (found == by_hash_.end()) return std::nullopt;
  const BlockId block = found->second;
  const std::vector<int32_t>& held = tokens_of_[block];
  if (previous_of_[block] != previous ||
      !std::equal(held.begin(), held.end(), tokens.begin(), tokens.end()))
    return std::nullopt;        // a hash collision: not the same prefix
  if (refcount_[block] == 0) {  // cached: used again
    lru_.erase(lru_at_[block]);
    peak_used_ = std::max(peak_used_, ++used_);
  }
  if (++refcount_[block] == 2) ++shared_;
  ++hits_;
  return Hit{block, hash};
}

void BlockPool::forget_hash(BlockId block) {
  if (hash_of_[block] == 0) return;
  by_hash_.erase(hash_of_[block]);
  hash_of_[block] = 0;
  previous_of_[block] = 0;
  tokens_of_[block].clear();
}

}  // namespace kivi
