// Internal representation of a parsed tokenizer.json: the pipeline stages as
// plain data (normalizers, pre-tokenizers, BPE model, decoders), filled by
// parse.cpp and run by tokenizer.cpp. Private to fedge_tokenizer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fedge/inference/tokenizer.h"
#include "regex.h"
#include "word_cache.h"

namespace fedge::inference {
namespace tok {

// Hard limits that keep a hostile file from making us allocate gigabytes.
inline constexpr std::int64_t kMaxTokenId = 1 << 24;      // ids live in [0, kMaxTokenId)
inline constexpr std::size_t kMaxVocabEntries = 1 << 22;
inline constexpr std::size_t kMaxMerges = 1 << 23;

enum class PrependScheme { kFirst, kAlways, kNever };
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct NormalizerStep {
  enum class Kind { kPrepend, kReplace, kStrip } kind = Kind::kPrepend;
  std::string text;                // Prepend: the prefix; Replace: the literal pattern
  std::string content;             // Replace: the replacement
  std::shared_ptr<Regex> regex;    // Replace with a {"Regex": ...} pattern
  bool left = false, right = false;  // Strip
};

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace } kind = Kind::kSplit;
  std::shared_ptr<Regex> regex;    // Split (regex pattern) or ByteLevel with use_regex
  std::string literal;             // Split with a {"String": ...} pattern
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;   // ByteLevel
  std::string replacement = "\xE2\x96\x81";  // Metaspace ("▁")
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;               // Metaspace
};

struct DecoderStep {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind =
      Kind::kByteLevel;
  std::string pattern;             // Replace pattern, Strip content, Metaspace replacement
  std::string content;             // Replace content
  int start = 0, stop = 0;         // Strip
  PrependScheme prepend = PrependScheme::kAlways;
};

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A byte trie over added-token contents for leftmost-longest matching.
struct AddedTrie {
  struct Node {
    std::vector<std::pair<unsigned char, int>> kids;
    int token = -1;  // index into added tokens, or -1
  };
  std::vector<Node> nodes{Node{}};
  std::array<bool, 256> first_byte{};
  void insert(std::string_view s, int token);
  int child(int node, unsigned char c) const;
};

struct SvHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using VocabMap = std::unordered_map<std::string, TokenId, SvHash, std::equal_to<>>;

// Merge table: (left id, right id) -> (rank, merged id), open addressing with
// key and value in one 16-byte slot, so a lookup costs one cache miss even
// for Llama-3's 280k merges (a node-based map costs two or three).
class MergeTable {
 public:
  struct Merge { int rank; TokenId merged; };
  // Keeps the first (best-ranked) entry for a repeated pair, as HF does.
  void reserve(std::size_t n);
  void insert(std::uint64_t key, Merge m);
  const Merge* find(std::uint64_t key) const {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.m;
      if (s.key == kEmpty) return nullptr;
    }
  }
  bool empty() const { return size_ == 0; }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  struct Slot {
    std::uint64_t key = kEmpty;
    Merge m{};
  };
  static std::size_t mix(std::uint64_t k) {
    k ^= k >> 29;
    k *= 0xBF58476D1CE4E5B9ull;
    return static_cast<std::size_t>(k ^ (k >> 32));
  }
  void grow();
  std::vector<Slot> slots_;
  std::size_t mask_ = 0, size_ = 0;
};

// The BPE model: vocabulary, ranked merges, unknown-character handling, and a
// cache of already-encoded pre-tokens.
struct BpeModel {
  VocabMap vocab;
  using Merge = MergeTable::Merge;
  MergeTable merges;  // (left << 32 | right)
  std::array<TokenId, 128> ascii_symbol{};  // vocabulary id of each ASCII character, -1 if absent
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  // True when no vocabulary token has "▁" right after another character, so
  // no merge can cross the start of a "▁" run: a long SentencePiece-style
  // piece (Llama-2 has no pre-tokenizer, the whole text is one piece) can be
  // cut there and each word merged and cached on its own, with the same result.
  bool split_at_metaspace = false;
  std::optional<TokenId> unk;
  std::array<TokenId, 256> byte_symbol{};    // byte-level symbol of byte b, -1 if absent
  std::array<TokenId, 256> fallback_byte{};  // "<0xAB>" token of byte b, -1 if absent

  // Appends the ids of one pre-token. With `byte_level` the piece is raw bytes
  // whose symbols are the byte-level characters; otherwise it is UTF-8 text.
  void encode_piece(std::string_view piece, bool byte_level, std::vector<TokenId>& out) const;

 private:
  void encode_word(std::string_view word, bool byte_level, std::vector<TokenId>& out) const;
  void initial_symbols(std::string_view piece, bool byte_level, std::vector<TokenId>& ids) const;
  void unknown_char(std::string_view ch, std::vector<TokenId>& ids, bool& last_was_unk) const;
  void apply_merges(std::vector<TokenId>& ids) const;
  mutable std::mutex cache_mu_;
  mutable WordCache cache_;
};

inline std::uint64_t pair_key(TokenId a, TokenId b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

// Everything a parsed tokenizer holds; Tokenizer::Impl is this plus nothing,
// kept separate so the parser (a free function) can fill it.
struct TokenizerData {
  std::string source_name;
  std::string json_text;  // what to_json() gives back
  BpeModel model;
  std::vector<AddedToken> added;
  AddedTrie added_trie;
  VocabMap added_by_content;
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  bool byte_level = false;  // a ByteLevel pre-tokenizer maps bytes to symbols
  bool has_decoder = false;
  std::vector<DecoderStep> decoders;
  std::vector<TokenId> prefix, suffix;  // specials added around a single sequence
  std::optional<TokenId> bos, pad;
  std::vector<TokenId> eos;
  std::string chat_template;  // tokenizer_config.json's or GGUF's; "" when none
  std::optional<std::string> unk_token;  // tokenizer_config.json's, for chat templates

  // Per id: the token string (added content wins), its raw bytes, special flag.
  std::vector<std::string> token_text;
  std::vector<std::string> token_raw;
  std::vector<std::uint8_t> special;
  std::vector<std::uint8_t> known;

  int vocab_size() const { return static_cast<int>(token_text.size()); }
  std::optional<TokenId> find(std::string_view token) const;
  // Fills token_text/token_raw/special/known and the added-token trie.
  void build_tables();
  // Picks BOS/EOS/PAD from the post-processor and well-known token names when
  // no config file says otherwise.
  void guess_special_ids();
  // Bytes of one token string as the decoder chain would turn it into text,
  // leaving out the steps that depend on the token's position (Strip, the
  // Metaspace leading-space removal).
  std::string raw_bytes(std::string_view token) const;
};

// decode.cpp: the decoder chain over token strings, as Hugging Face runs it.
std::string run_decoders(const TokenizerData& d, std::vector<std::string> tokens);

// parse.cpp: fills `out` from tokenizer.json text or throws Error(kInvalidInput).
void parse_tokenizer_json(std::string_view text, const std::string& source, TokenizerData& out);

}  // namespace tok

struct Tokenizer::Impl : tok::TokenizerData {};

}  // namespace fedge::inference
