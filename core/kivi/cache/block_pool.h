// The block pool of a paged cache: ids of fixed-size cache blocks (each holds block_tokens tokens
// of every layer), handed to sequences and shared between them by reference count, as vLLM's
// block manager does. The pool owns no tensors: a paged cache indexes its storage by these ids
// (the first index of its pooled tensors) and passes each sequence's ids to its kernels as the
// block table.
//
// A block is in one of three states:
//   used    one or more owners (sequences, forks, prefix hits);
//   cached  no owner, but published under the hash of its tokens: its contents stay valid, so a
//           later request with the same prefix revives it (lookup) instead of recomputing it;
//   free    no owner, no contents.
// allocate() takes a free block first, then evicts the least recently cached one (its hash is
// forgotten). Published blocks are full and never written again (a paged KIVI cache quantizes a
// block once), which is what makes sharing them safe.
//
// Prefix sharing keys a block by chain_hash(hash of the previous block, its own tokens), so a hit
// on block i means every token up to the end of block i matches.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace kivi {

class BlockPool {
 public:
  using BlockId = int32_t;

  // `capacity` blocks of `block_tokens` tokens each (both > 0).
  BlockPool(int64_t capacity, int64_t block_tokens);

  int64_t capacity() const { return static_cast<int64_t>(refcount_.size()); }
  int64_t block_tokens() const { return block_tokens_; }
  // Blocks with an owner; blocks allocate() can hand out (free + cached); cached alone.
  int64_t used() const { return used_; }
  int64_t available() const { return capacity() - used_; }
  // The most blocks used at once since construction (a high-water mark: exact, unlike a gauge
  // sampled now and then).
  int64_t peak_used() const { return peak_used_; }
  int64_t cached() const { return static_cast<int64_t>(lru_.size()); }
  // Blocks with more than one owner.
  int64_t shared() const { return shared_; }
  // Blocks a sequence of `tokens` tokens occupies.
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // A block with one owner and no contents; nullopt when every block is used.
  std::optional<BlockId> allocate();
  // One more owner of a used block (a fork, a shared prefix).
  void retain(BlockId block);
  // One owner fewer; at none the block becomes cached (if published) or free.
  void release(BlockId block);
  int32_t owners(BlockId block) const;
  // Whether `block` is published (its contents must not change while it is).
  bool published(BlockId block) const;
  // Whether the one owner of `block` may write it: one owner and not published. A block that is
  // shared or published is copied before a write instead (copy on write).
  bool writable(BlockId block) const { return owners(block) == 1 && !published(block); }

  // The hash of a full block of `tokens` that follows a block of hash `previous` (0 for the
  // first block of a sequence); never 0.
  static uint64_t chain_hash(uint64_t previous, std::span<const int32_t> tokens);
  // Makes a used block findable: it holds `tokens` (a full block) after the block published
  // with hash `previous` (0: the start of a sequence). Returns its hash, the `previous` of the
  // next block. (A block already published keeps its first publication; a second block with
  // the same contents is not indexed, so a lookup finds the first.)
  uint64_t publish(BlockId block, uint64_t previous, std::span<const int32_t> tokens);
  // The block published with `tokens` after `previous`, with one more owner (a cached block
  // becomes used again), and its hash; nullopt when there is none. Hits compare the tokens and
  // the predecessor themselves, so a hash collision is a miss, never wrong contents.
  struct Hit {
    BlockId block;
    uint64_t hash;
  };
  std::optional<Hit> lookup(uint64_t previous, std::span<const int32_t> tokens);

  // Counters since construction (for /metrics): lookups that hit, lookups, cached blocks evicted.
  int64_t hits() const { return hits_; }
  int64_t lookups() const { return lookups_; }
  int64_t evictions() const { return evictions_; }

 private:
  void check_id(BlockId block, const char* what) const;
  void forget_hash(BlockId block);

  int64_t block_tokens_;
  std::vector<int32_t> refcount_;                     // [capacity] owners per block
  std::vector<BlockId> free_;                         // free blocks (a stack)
  std::list<BlockId> lru_;                            // cached blocks, least recently cached first
  std::vector<std::list<BlockId>::iterator> lru_at_;  // [capacity] a cached block's place
  // A published block's hash (0: not published), predecessor's hash and tokens.
  std::vector<uint64_t> hash_of_, previous_of_;  // [capacity]
  std::vector<std::vector<int32_t>> tokens_of_;  // [capacity]
  std::unordered_map<uint64_t, BlockId> by_hash_;
  int64_t used_ = 0, peak_used_ = 0, shared_ = 0, hits_ = 0, lookups_ = 0, evictions_ = 0;
};

}  // namespace kivi
