// An open-addressing hash table from a BPE pair of ids to its merge (rank and merged id).
// Merge lookups dominate BPE time; this flat table is several times faster than
// std::unordered_map for them.
#pragma once

#include <cstdint>
#include <vector>

namespace kivi::text {

struct BpeMerge {
  int32_t rank;
  int32_t new_id;
};

class MergeTable {
 public:
  void reserve(std::size_t entries) {
    std::size_t capacity = 16;
    while (capacity < entries + entries / 2) capacity <<= 1;
    slots_.assign(capacity, Slot{kEmpty, {0, 0}});
    mask_ = capacity - 1;
  }

  // Later insertions of the same pair replace earlier ones.
  void insert_or_assign(int32_t left, int32_t right, BpeMerge merge) {
    if ((size_ + 1) * 3 > slots_.size() * 2) grow();
    Slot& slot = probe(key_of(left, right));
    if (slot.key == kEmpty) ++size_;
    slot = Slot{key_of(left, right), merge};
  }

  const BpeMerge* find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = key_of(left, right);
    for (std::size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  struct Slot {
    uint64_t key;
    BpeMerge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are below 2^31, so never a real key

  static uint64_t key_of(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  static std::size_t hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return static_cast<std::size_t>(key);
  }
  Slot& probe(uint64_t key) {
    std::size_t i = hash(key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    return slots_[i];
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    reserve(old.empty() ? 16 : old.size());
    for (const Slot& s : old)
      if (s.key != kEmpty) probe(s.key) = s;
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace kivi::text
