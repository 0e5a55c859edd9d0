// Decoding: the decoder chain over token strings as Hugging Face runs it, the
// per-token raw bytes used for streaming, and the streaming decoder itself.
#include <algorithm>

#include "tokenizer_impl.h"
#include "utf8.h"

namespace fedge::inference {
namespace tok {

namespace {

// "<0xAB>" -> 0xAB, or -1 for any other token.
int byte_fallback_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// A token's characters through the inverse byte-level map; a token with any
// character outside the map (e.g. an added token with a space) stays as is.
std::string byte_level_bytes(std::string_view t) {
  const auto& map = byte_level_map();
  std::string out;
  out.reserve(t.size());
  for (std::size_t pos = 0; pos < t.size();) {
    const Utf8Step st = utf8_step(t, pos);
    if (!st.valid || st.cp >= map.cp_to_byte.size() || map.cp_to_byte[st.cp] < 0) return std::string(t);
    out.push_back(static_cast<char>(map.cp_to_byte[st.cp]));
    pos += st.len;
  }
  return out;
}

void byte_fallback(std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  std::size_t count = 0;
  auto flush = [&] {
    if (count == 0) return;
    // An invalid run becomes one U+FFFD per byte token, as HF does.
    if (first_invalid_utf8(bytes) == std::string::npos) out.push_back(bytes);
    else for (std::size_t i = 0; i < count; ++i) out.emplace_back(kReplacementChar);
    bytes.clear();
    count = 0;
  };
  for (std::string& t : tokens) {
    const int b = byte_fallback_value(t);
    if (b >= 0) {
      bytes.push_back(static_cast<char>(b));
      ++count;
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  tokens.swap(out);
}

void strip(std::string& t, std::string_view c, int start, int stop) {
  for (int i = 0; i < start && t.compare(0, c.size(), c) == 0; ++i) t.erase(0, c.size());
  for (int i = 0; i < stop && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0; ++i)
    t.erase(t.size() - c.size());
}

std::string join(const std::vector<std::string>& tokens, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out.append(sep);
    out.append(tokens[i]);
  }
  return out;
}

}  // namespace

std::string run_decoders(const TokenizerData& d, std::vector<std::string> tokens) {
  // Without a decoder HF joins tokens with spaces.
  if (!d.has_decoder) return utf8_lossy(join(tokens, " "));
  using K = DecoderStep::Kind;
  for (const DecoderStep& s : d.decoders) {
    switch (s.kind) {
      case K::kByteLevel: {
        std::string bytes;
        for (const std::string& t : tokens) bytes += byte_level_bytes(t);
        tokens.assign(1, utf8_lossy(bytes));
        break;
      }
      case K::kReplace:
        for (std::string& t : tokens) replace_all(t, s.pattern, s.content);
        break;
      case K::kByteFallback:
        byte_fallback(tokens);
        break;
      case K::kFuse:
        tokens.assign(1, join(tokens, ""));
        break;
      case K::kStrip:
        for (std::string& t : tokens) strip(t, s.pattern, s.start, s.stop);
        break;
      case K::kMetaspace:
        // The first token's "▁"s are dropped rather than turned into spaces
        // (the pre-tokenizer prepended one); HF drops all of them, so do we.
        for (std::size_t i = 0; i < tokens.size(); ++i)
          replace_all(tokens[i], s.pattern, i == 0 && s.prepend != PrependScheme::kNever ? "" : " ");
        break;
    }
  }
  return utf8_lossy(join(tokens, ""));
}

std::string TokenizerData::raw_bytes(std::string_view token) const {
  std::string t(token);
  using K = DecoderStep::Kind;
  for (const DecoderStep& s : decoders) {
    switch (s.kind) {
      case K::kByteLevel: t = byte_level_bytes(t); break;
      case K::kReplace: replace_all(t, s.pattern, s.content); break;
      case K::kByteFallback: {
        const int b = byte_fallback_value(t);
        if (b >= 0) t.assign(1, static_cast<char>(b));
        break;
      }
      case K::kMetaspace: replace_all(t, s.pattern, " "); break;
      case K::kFuse:
      case K::kStrip: break;  // depend on neighbours or position
    }
  }
  return t;
}

}  // namespace tok

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special) const {
  const auto& d = *impl_;
  if (d.decoders.size() == 1 && d.decoders[0].kind == tok::DecoderStep::Kind::kByteLevel) {
    // A lone ByteLevel decoder is the concatenation of the per-token bytes.
    std::string bytes;
    for (TokenId id : ids)
      if (id >= 0 && id < d.vocab_size() && d.known[id] && !(skip_special && d.special[id])) bytes += d.token_raw[id];
    return tok::utf8_lossy(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (TokenId id : ids) {
    // Ids we do not know (e.g. padding rows of a larger embedding) are
    // skipped, as Hugging Face does.
    if (id < 0 || id >= d.vocab_size() || !d.known[id]) continue;
    if (skip_special && d.special[id]) continue;
    tokens.push_back(d.token_text[id]);
  }
  return tok::run_decoders(d, std::move(tokens));
}

std::string Tokenizer::token_bytes(TokenId id) const {
  const auto& d = *impl_;
  if (id < 0 || id >= d.vocab_size()) return {};
  return d.token_raw[id];
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDecoder::push(TokenId id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  pending_ += tokenizer_.token_bytes(id);
  std::string out;
  std::size_t pos = 0;
  while (pos < pending_.size()) {
    const tok::Utf8Step st = tok::utf8_step(pending_, pos);
    if (st.truncated) break;  // the rest of this character comes with a later token
    if (st.valid) out.append(pending_, pos, st.len);
    else out.append(tok::kReplacementChar);
    pos += st.len;
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamingDecoder::flush() {
  std::string out = tok::utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace fedge::inference
