// BPE merging: symbols in a linked list, candidate merges in a min-heap keyed
// by (rank, position), so a word of n symbols costs O(n log n) rather than the
// O(n^2) of rescanning for the best pair after every merge.
#include <algorithm>
#include <queue>

#include "tokenizer_impl.h"
#include "utf8.h"

namespace fedge::inference::tok {

namespace {

// Pieces longer than this are rare (long runs without a pre-tokenizer split)
// and not worth caching; the cache stops growing when full, as Hugging
// Face's does, so memory stays bounded on adversarial input.
constexpr std::size_t kMaxCachedPieceBytes = 256;

struct Symbol {
  TokenId id;
  int prev;
  int next;
};

struct Candidate {
  int rank;
  int left;
  int right;
  TokenId left_id;
  TokenId right_id;
  TokenId merged;
  bool operator>(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

}  // namespace

void MergeTable::reserve(std::size_t n) {
  std::size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  if (cap > slots_.size()) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.key != kEmpty) insert(s.key, s.m);
  }
}

void MergeTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void MergeTable::insert(std::uint64_t key, Merge m) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  for (std::size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == key) return;
    if (s.key == kEmpty) {
      s.key = key;
      s.m = m;
      ++size_;
      return;
    }
  }
}

void BpeModel::encode_piece(std::string_view piece, bool byte_level, std::vector<TokenId>& out) const {
  if (!split_at_metaspace || byte_level) return encode_word(piece, byte_level, out);
  constexpr std::string_view kMeta = "\xE2\x96\x81";
  std::size_t begin = 0;
  for (std::size_t hit = piece.find(kMeta, 1); hit != std::string_view::npos; hit = piece.find(kMeta, hit + kMeta.size())) {
    if (hit >= kMeta.size() && piece.substr(hit - kMeta.size(), kMeta.size()) == kMeta) continue;  // inside a run
    encode_word(piece.substr(begin, hit - begin), false, out);
    begin = hit;
  }
  encode_word(piece.substr(begin), false, out);
}

void BpeModel::encode_word(std::string_view piece, bool byte_level, std::vector<TokenId>& out) const {
  if (piece.empty()) return;
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  const std::uint64_t h = cacheable ? hash_bytes(piece) : 0;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.lookup(piece, h, out)) return;
  }
  std::vector<TokenId> ids;
  bool whole = false;
  if (ignore_merges) {
    // Llama-3 style: a pre-token that is itself in the vocabulary is taken
    // whole, even if the merges would reach it differently.
    std::string key;
    if (byte_level) {
      const auto& map = byte_level_map();
      for (unsigned char c : piece) key += map.byte_to_utf8[c];
    } else {
      key = std::string(piece);
    }
    auto it = vocab.find(key);
    if (it != vocab.end()) { ids.push_back(it->second); whole = true; }
  }
  if (!whole) {
    initial_symbols(piece, byte_level, ids);
    apply_merges(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.insert(piece, h, ids);
  }
}

void BpeModel::initial_symbols(std::string_view piece, bool byte_level, std::vector<TokenId>& ids) const {
  ids.reserve(piece.size());
  bool last_was_unk = false;
  if (byte_level) {
    const auto& map = byte_level_map();
    for (unsigned char c : piece) {
      if (byte_symbol[c] >= 0) {
        ids.push_back(byte_symbol[c]);
        last_was_unk = false;
      } else {
        unknown_char(map.byte_to_utf8[c], ids, last_was_unk);
      }
    }
    return;
  }
  std::size_t pos = 0;
  while (pos < piece.size()) {
    const auto c = static_cast<unsigned char>(piece[pos]);
    if (c < 0x80 && ascii_symbol[c] >= 0) {
      ids.push_back(ascii_symbol[c]);
      last_was_unk = false;
      ++pos;
      continue;
    }
    const std::size_t len = utf8_step(piece, pos).len;
    const std::string_view ch = piece.substr(pos, len);
    pos += len;
    auto it = vocab.find(ch);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      last_was_unk = false;
    } else {
      unknown_char(ch, ids, last_was_unk);
    }
  }
}

// A character with no symbol of its own: its UTF-8 bytes as <0xAB> tokens
// when byte fallback is on (and every byte has one), else the unknown token
// (fused with a preceding one under fuse_unk), else nothing, as HF does.
void BpeModel::unknown_char(std::string_view ch, std::vector<TokenId>& ids, bool& last_was_unk) const {
  if (byte_fallback) {
    const bool all = std::all_of(ch.begin(), ch.end(),
                                 [&](char c) { return fallback_byte[static_cast<unsigned char>(c)] >= 0; });
    if (all) {
      for (char c : ch) ids.push_back(fallback_byte[static_cast<unsigned char>(c)]);
      last_was_unk = false;
      return;
    }
  }
  if (!unk) return;
  if (fuse_unk && last_was_unk) return;
  ids.push_back(*unk);
  last_was_unk = true;
}

void BpeModel::apply_merges(std::vector<TokenId>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2 || merges.empty()) return;
  std::vector<Symbol> syms(n);
  for (int i = 0; i < n; ++i) syms[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1};
  std::vector<Candidate> storage;
  storage.reserve(n);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>{},
                                                                            std::move(storage));
  auto consider = [&](int left, int right) {
    if (const Merge* m = merges.find(pair_key(syms[left].id, syms[right].id)))
      heap.push({m->rank, left, right, syms[left].id, syms[right].id, m->merged});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = syms[c.left];
    // Stale candidates: a side was merged away or changed since it was queued.
    if (l.id != c.left_id || l.next != c.right || syms[c.right].id != c.right_id) continue;
    Symbol& r = syms[c.right];
    l.id = c.merged;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.id = -1;
    if (l.prev >= 0) consider(l.prev, c.left);
    if (l.next >= 0) consider(c.left, l.next);
  }
  ids.clear();
  for (int i = 0; i >= 0; i = syms[i].next) ids.push_back(syms[i].id);
}

}  // namespace fedge::inference::tok
