#include "utf8.h"

#include <cstring>

namespace fedge::inference::tok {

namespace {

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Bounds of the second byte for a lead byte (Unicode Table 3-7), which rule
// out overlong forms, surrogates and code points above U+10FFFF.
void second_byte_range(unsigned char lead, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
}

}  // namespace

Utf8Step utf8_step(std::string_view s, std::size_t pos) {
  const auto c0 = static_cast<unsigned char>(s[pos]);
  if (c0 < 0x80) return {c0, 1, true, false};
  std::size_t need = 0;
  char32_t cp = 0;
  if (c0 >= 0xC2 && c0 <= 0xDF) { need = 1; cp = c0 & 0x1F; }
  else if (c0 >= 0xE0 && c0 <= 0xEF) { need = 2; cp = c0 & 0x0F; }
  else if (c0 >= 0xF0 && c0 <= 0xF4) { need = 3; cp = c0 & 0x07; }
  else return {0, 1, false, false};
  unsigned char lo = 0, hi = 0;
  second_byte_range(c0, lo, hi);
  std::size_t i = 1;
  for (; i <= need; ++i) {
    if (pos + i >= s.size()) return {0, i, false, true};
    const auto c = static_cast<unsigned char>(s[pos + i]);
    const bool ok = i == 1 ? (c >= lo && c <= hi) : is_cont(c);
    if (!ok) return {0, i, false, false};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {cp, need + 1, true, false};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::size_t first_invalid_utf8(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    // ASCII fast path, 8 bytes at a time: most text is mostly ASCII.
    if (pos + 8 <= s.size()) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + pos, 8);
      if ((w & 0x8080808080808080ull) == 0) { pos += 8; continue; }
    }
    if (static_cast<unsigned char>(s[pos]) < 0x80) { ++pos; continue; }
    const Utf8Step st = utf8_step(s, pos);
    if (!st.valid) return pos;
    pos += st.len;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  if (first_invalid_utf8(s) == std::string_view::npos) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  std::size_t pos = 0;
  while (pos < s.size()) {
    const Utf8Step st = utf8_step(s, pos);
    if (st.valid) out.append(s.substr(pos, st.len));
    else out.append(kReplacementChar);
    pos += st.len;
  }
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

const ByteLevelMap& byte_level_map() {
  static const ByteLevelMap map = [] {
    ByteLevelMap m;
    m.cp_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      m.byte_to_cp[b] = cp;
      append_utf8(m.byte_to_utf8[b], cp);
      m.cp_to_byte[cp] = b;
    }
    return m;
  }();
  return map;
}

}  // namespace fedge::inference::tok
