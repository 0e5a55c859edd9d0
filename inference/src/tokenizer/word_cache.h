// A bounded, open-addressing cache from pre-token bytes to their BPE ids.
// std::unordered_map with string keys walks node chains and rehashes keys
// while probing; this table keeps hashes inline and keys/ids in two flat
// arenas, which makes a hit a couple of cache lines. Not thread-safe: the
// owner locks around it.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/inference/tokenizer.h"

namespace fedge::inference::tok {

inline std::uint64_t hash_bytes(std::string_view s) {
  // 8 bytes at a time with a multiply-xorshift mix; short keys dominate.
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0x94D049BB133111EBull;
  return h ^ (h >> 29);
}

class WordCache {
 public:
  static constexpr std::size_t kSlots = 1 << 17;        // at most half full
  static constexpr std::size_t kMaxEntries = kSlots / 2;
  static constexpr std::size_t kMaxKeyBytes = 8 << 20;  // bounds memory on hostile input

  // Appends the cached ids for `key` to `out`; false on a miss.
  bool lookup(std::string_view key, std::uint64_t h, std::vector<TokenId>& out) const {
    if (slots_.empty()) return false;
    for (std::size_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_len == kEmpty) return false;
      if (s.hash == h && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
        return true;
      }
    }
  }

  void insert(std::string_view key, std::uint64_t h, const std::vector<TokenId>& ids) {
    if (entries_ >= kMaxEntries || keys_.size() + key.size() > kMaxKeyBytes) return;  // full: stop caching
    if (slots_.empty()) slots_.assign(kSlots, Slot{});
    std::size_t i = h & (kSlots - 1);
    for (;; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_len == kEmpty) break;
      if (s.hash == h && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0)
        return;  // another thread got here first
    }
    slots_[i] = Slot{h, static_cast<std::uint32_t>(keys_.size()), static_cast<std::uint32_t>(key.size()),
                     static_cast<std::uint32_t>(ids_.size()), static_cast<std::uint32_t>(ids.size())};
    keys_.append(key);
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    ++entries_;
  }

 private:
  static constexpr std::uint32_t kEmpty = 0xFFFFFFFF;
  struct Slot {
    std::uint64_t hash = 0;
    std::uint32_t key_off = 0, key_len = kEmpty, ids_off = 0, ids_len = 0;
  };
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<TokenId> ids_;
  std::size_t entries_ = 0;
};

}  // namespace fedge::inference::tok
