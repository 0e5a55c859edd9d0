// StreamingDecoder: only complete UTF-8 characters come out.
#include <catch2/catch.hpp>

#include "fixtures.h"

using namespace fixtures;
using fedge::inference::StreamingDecoder;

TEST_CASE("streaming decoder holds back a 4-byte emoji split across tokens") {
  const Tokenizer t = Tokenizer::byte_level_tiny();
  const auto ids = t.encode("a😀b", true);
  REQUIRE(ids == std::vector<TokenId>{256, 'a', 0xF0, 0x9F, 0x98, 0x80, 'b'});
  StreamingDecoder dec(t);
  std::vector<std::string> out;
  for (TokenId id : ids) out.push_back(dec.push(id));
  CHECK(out == std::vector<std::string>{"", "a", "", "", "", "😀", "b"});
  CHECK(dec.flush().empty());
}

TEST_CASE("streaming decoder: byte-fallback tokens and metaspace") {
  const Tokenizer t = load("sentencepiece.json");
  const auto ids = t.encode("hello 😀 world", false);
  StreamingDecoder dec(t);
  std::string all;
  std::vector<std::string> pieces;
  for (TokenId id : ids) {
    pieces.push_back(dec.push(id));
    all += pieces.back();
  }
  all += dec.flush();
  // Streaming is for continuations, so the leading "▁" stays a space.
  CHECK(all == " hello 😀 world");
  CHECK(pieces[0] == " hello");
}

TEST_CASE("streaming decoder: flush and invalid bytes give U+FFFD") {
  const Tokenizer t = Tokenizer::byte_level_tiny();
  StreamingDecoder dec(t);
  CHECK(dec.push(0xF0).empty());
  CHECK(dec.push(0x9F).empty());
  CHECK(dec.flush() == "\xEF\xBF\xBD");  // one maximal ill-formed subpart
  CHECK(dec.push(0xFF) == "\xEF\xBF\xBD");  // never valid: out at once
  CHECK(dec.push(0xC3).empty());
  CHECK(dec.push('x') == "\xEF\xBF\xBDx");  // interrupted sequence
  CHECK(dec.push(257).empty());              // <|eos|> skipped
  StreamingDecoder keep(t, /*skip_special=*/false);
  CHECK(keep.push(257) == "<|eos|>");
}
