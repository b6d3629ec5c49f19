// The paged cache's block pool (core/kivi/cache/block_pool.h) against a model of its owners:
// allocation and exhaustion, sharing by reference count, prefix publication and lookup through
// the chain of predecessors, eviction of cached blocks least recently cached first, clear errors
// on misuse, and a random soak of admit / fork / finish / prefix-hit / publish events after which
// every block is back.
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "kivi/cache/block_pool.h"
#include "kivi/util/error.h"
#include "kivi_catch.h"

using kivi::BlockPool;

namespace {

std::vector<int32_t> tokens_from(int32_t first, int64_t count) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) tokens[static_cast<size_t>(i)] = first + int32_t(i);
  return tokens;
}

}  // namespace

TEST_CASE("block pool hands out every block once, then none, and takes them back") {
  BlockPool pool(4, 128);
  CHECK(pool.blocks_for(1) == 1);
  CHECK(pool.blocks_for(128) == 1);
  CHECK(pool.blocks_for(129) == 2);
  std::set<BlockPool::BlockId> seen;
  for (int i = 0; i < 4; ++i) {
    const auto block = pool.allocate();
    REQUIRE(block.has_value());
    CHECK(seen.insert(*block).second);
    CHECK(pool.owners(*block) == 1);
  }
  CHECK(pool.used() == 4);
  CHECK(pool.available() == 0);
  CHECK_FALSE(pool.allocate().has_value());
  pool.release(2);
  pool.release(3);
  CHECK(pool.available() == 2);
  CHECK(pool.peak_used() == 4);                     // a high-water mark: releases do not lower it
  CHECK(pool.allocate() == BlockPool::BlockId{3});  // free blocks are a stack
  CHECK(pool.allocate() == BlockPool::BlockId{2});
}

TEST_CASE("block pool shares a block until its last owner releases it") {
  BlockPool pool(2, 16);
  const auto block = *pool.allocate();
  pool.retain(block);  // a fork
  CHECK(pool.owners(block) == 2);
  CHECK(pool.shared() == 1);
  pool.release(block);
  CHECK(pool.used() == 1);
  CHECK(pool.shared() == 0);
  pool.release(block);
  CHECK(pool.used() == 0);
  CHECK(pool.available() == 2);
}

TEST_CASE("block pool finds a published prefix block by its tokens and predecessor") {
  BlockPool pool(3, 4);
  const std::vector<int32_t> first = tokens_from(10, 4), second = tokens_from(20, 4);
  const auto a = *pool.allocate(), b = *pool.allocate();
  const uint64_t ha = pool.publish(a, 0, first);
  const uint64_t hb = pool.publish(b, ha, second);
  CHECK(ha != 0);
  CHECK(hb != ha);
  CHECK(hb == BlockPool::chain_hash(ha, second));

  // Same tokens after the same predecessor: a hit, one more owner.
  const auto hit = pool.lookup(ha, second);
  REQUIRE(hit.has_value());
  CHECK(hit->block == b);
  CHECK(hit->hash == hb);
  CHECK(pool.owners(b) == 2);
  // The same tokens at the start of a sequence (another predecessor) are another prefix.
  CHECK_FALSE(pool.lookup(0, second).has_value());
  CHECK(pool.lookups() == 2);
  CHECK(pool.hits() == 1);

  // Released by every owner, a published block stays findable (cached), and a hit revives it.
  pool.release(b);
  pool.release(b);
  CHECK(pool.used() == 1);
  CHECK(pool.cached() == 1);
  const auto revived = pool.lookup(ha, second);
  REQUIRE(revived.has_value());
  CHECK(revived->block == b);
  CHECK(pool.cached() == 0);
  CHECK(pool.used() == 2);

  // A second block with the same contents is not indexed: the first stays the one found.
  const auto c = *pool.allocate();
  CHECK(pool.publish(c, 0, first) == ha);
  pool.release(c);
  CHECK(pool.cached() == 0);  // c had no publication of its own: free, not cached
  CHECK(pool.lookup(0, first)->block == a);
}

TEST_CASE("block pool evicts cached blocks least recently cached first, and forgets them") {
  BlockPool pool(3, 2);
  std::vector<BlockPool::BlockId> blocks;
  std::vector<uint64_t> hashes;
  for (int32_t i = 0; i < 3; ++i) {
    blocks.push_back(*pool.allocate());
    hashes.push_back(pool.publish(blocks.back(), 0, tokens_from(100 * i, 2)));
  }
  for (int i : {1, 0, 2}) pool.release(blocks[static_cast<size_t>(i)]);  // cached in this order
  CHECK(pool.cached() == 3);
  CHECK(pool.available() == 3);
  CHECK(pool.allocate() == blocks[1]);  // no free block: the least recently cached goes
  CHECK(pool.evictions() == 1);
  CHECK_FALSE(pool.lookup(0, tokens_from(100, 2)).has_value());  // its contents are gone
  CHECK(pool.lookup(0, tokens_from(0, 2))->block == blocks[0]);  // the others are not
  CHECK(pool.allocate() == blocks[2]);
  CHECK_FALSE(pool.allocate().has_value());
}

TEST_CASE("block pool names the block and what was expected on misuse") {
  CHECK_THROWS_WITH(BlockPool(0, 128), Catch::Contains("expected at least one block"));
  BlockPool pool(2, 8);
  CHECK_THROWS_WITH(pool.release(1), Catch::Contains("block 1, which has no owner"));
  CHECK_THROWS_WITH(pool.retain(0), Catch::Contains("block 0, which has no owner"));
  CHECK_THROWS_WITH(pool.owners(7), Catch::Contains("expected an id from 0 to 1"));
  const auto block = *pool.allocate();
  CHECK_THROWS_WITH(pool.publish(block, 0, tokens_from(0, 5)),
                    Catch::Contains("with 5 tokens: only full blocks (8 tokens)"));
}

TEST_CASE("block pool: after thousands of random events every block is back") {
  constexpr int64_t kBlocks = 64, kTokens = 4;
  BlockPool pool(kBlocks, kTokens);
  std::mt19937 random(1234);
  struct Sequence {
    std::vector<BlockPool::BlockId> blocks;
    std::vector<uint64_t> hashes;  // of its published full blocks, in order
  };
  std::vector<Sequence> running;
  std::map<BlockPool::BlockId, int> owners;  // the model: owners per block
  int64_t peak = 0;                          // the model's most blocks used at once
  // Prompts come from a few shared prefixes, so that lookups hit.
  auto prompt_block = [](int prefix, int index) {
    return tokens_from(1000 * prefix + 10 * index, kTokens);
  };

  for (int event = 0; event < 20000; ++event) {
    const int kind = std::uniform_int_distribution<int>(0, 9)(random);
    if (kind <= 3) {  // admit: reuse what the prefix has published, allocate the rest
      Sequence s;
      // 16 prefixes of up to 6 blocks: more than the pool holds, so cached blocks get evicted
      const int prefix = std::uniform_int_distribution<int>(0, 15)(random);
      const int length = std::uniform_int_distribution<int>(1, 6)(random);
      uint64_t previous = 0;
      bool admitted = true;
      for (int i = 0; i < length; ++i) {
        const std::vector<int32_t> tokens = prompt_block(prefix, i);
        if (const auto hit = pool.lookup(previous, tokens)) {
          s.blocks.push_back(hit->block);
          previous = hit->hash;
        } else if (const auto block = pool.allocate()) {
          s.blocks.push_back(*block);
          previous = pool.publish(*block, previous, tokens);
        } else {
          admitted = false;  // the pool ran dry (every block used): give back what it took
          peak = kBlocks;
          break;
        }
        ++owners[s.blocks.back()];
        s.hashes.push_back(previous);
      }
      if (!admitted) {
        for (BlockPool::BlockId b : s.blocks) {
          pool.release(b);
          --owners[b];
        }
        continue;
      }
      running.push_back(std::move(s));
    } else if (kind <= 5 && !running.empty()) {  // fork: share every block
      Sequence copy = running[std::uniform_int_distribution<size_t>(0, running.size() - 1)(random)];
      for (BlockPool::BlockId b : copy.blocks) {
        pool.retain(b);
        ++owners[b];
      }
      running.push_back(std::move(copy));
    } else if (kind <= 6 && !running.empty()) {  // grow by an unpublished block (a decode)
      Sequence& s = running[std::uniform_int_distribution<size_t>(0, running.size() - 1)(random)];
      if (const auto block = pool.allocate()) {
        s.blocks.push_back(*block);
        ++owners[*block];
      }
    } else if (!running.empty()) {  // finish (or cancel, or preempt): release every block
      const size_t i = std::uniform_int_distribution<size_t>(0, running.size() - 1)(random);
      for (BlockPool::BlockId b : running[i].blocks) {
        pool.release(b);
        --owners[b];
      }
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    }
    int64_t used = 0, shared = 0;
    for (const auto& [block, count] : owners) {
      REQUIRE(pool.owners(block) == count);
      used += count > 0;
      shared += count > 1;
    }
    REQUIRE(pool.used() == used);
    REQUIRE(pool.shared() == shared);
    peak = std::max(peak, used);  // within an event, used only rises (or the pool ran dry)
    REQUIRE(pool.peak_used() == peak);
    REQUIRE(pool.available() == kBlocks - used);
  }
  for (Sequence& s : running)
    for (BlockPool::BlockId b : s.blocks) pool.release(b);
  CHECK(pool.used() == 0);
  CHECK(pool.peak_used() == kBlocks);  // the pool ran dry at some point, and the mark stays
  CHECK(pool.available() == kBlocks);
  CHECK(pool.hits() > 1000);  // the shared prefixes were found
  CHECK(pool.evictions() > 0);
}
