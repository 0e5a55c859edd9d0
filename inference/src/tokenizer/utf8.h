// UTF-8 helpers and the GPT-2 byte-to-unicode map, shared by the tokenizer's
// encode and decode paths. Private to fedge_tokenizer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fedge::inference::tok {

// One step of UTF-8 decoding at `pos`: the code point and its length in bytes.
// An ill-formed sequence gives valid=false and the length of its maximal
// subpart (at least 1), so callers replace it with one U+FFFD the way
// Unicode's recommended practice (and Rust's from_utf8_lossy) does.
struct Utf8Step {
  char32_t cp = 0;
  std::size_t len = 1;
  bool valid = false;
  bool truncated = false;  // a valid prefix that runs into the end of the input
};
Utf8Step utf8_step(std::string_view s, std::size_t pos);

void append_utf8(std::string& out, char32_t cp);
// Offset of the first ill-formed byte, or npos when `s` is valid UTF-8.
std::size_t first_invalid_utf8(std::string_view s);
// `s` with every ill-formed subsequence replaced by U+FFFD.
std::string utf8_lossy(std::string_view s);

// Replaces every occurrence of `from` (non-empty) in `s` with `to`.
void replace_all(std::string& s, std::string_view from, std::string_view to);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// GPT-2's reversible map from bytes to printable code points: printable
// Latin-1 bytes map to themselves, the rest to U+0100 onwards, so every byte
// string becomes a string of visible characters BPE can work on.
struct ByteLevelMap {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<std::string, 256> byte_to_utf8{};
  // Inverse for code points below 0x200 (all the map produces); -1 elsewhere.
  std::array<int, 0x200> cp_to_byte{};
};
const ByteLevelMap& byte_level_map();

}  // namespace fedge::inference::tok
