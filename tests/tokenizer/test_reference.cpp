// Ids computed by an independent reference (data/make_reference.py: the
// original GPT-2 merge loop in Python with the `regex` module) for BPE
// tokenizers with a few hundred learned merges.
#include <catch2/catch.hpp>

#include "fixtures.h"

using namespace fixtures;

namespace {

void check_reference(const char* file) {
  const Json ref = json(file);
  const Tokenizer t = Tokenizer::from_json(ref["tokenizer"].dump(), file);
  REQUIRE(ref["cases"].size() >= 8);
  for (const Json& c : ref["cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO(text);
    const auto expect = c["ids"].get<std::vector<TokenId>>();
    const auto got = t.encode(text, false);
    CHECK(got == expect);
    CHECK(t.decode(got) == text);
  }
}

}  // namespace

TEST_CASE("byte-level BPE matches the reference GPT-2 algorithm") { check_reference("reference_bytelevel.json"); }

TEST_CASE("SentencePiece-style BPE matches the reference merge loop over the whole text") {
  check_reference("reference_sentencepiece.json");
}
