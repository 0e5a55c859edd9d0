// libFuzzer target for tokenizer.json (Tokenizer::from_json). Built and run by
// scripts/fuzz.sh. Every input must either load or throw fedge::Error; a
// tokenizer that loads must encode and decode text, and write a tokenizer.json
// that loads again. Anything else (crash, other exception, sanitizer report) is
// a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fedge/common/error.h"
#include "fedge/inference/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = fedge::inference::Tokenizer::from_json(text, "fuzz");
    const auto ids = tok.encode("Well 7 produced 1,234 bbl/day \xc3\xa9\xe2\x96\x81 <|user|>\n");
    (void)tok.decode(ids);
    (void)fedge::inference::Tokenizer::from_json(tok.to_json(), "fuzz again");
  } catch (const fedge::Error&) {
  }
  return 0;
}
