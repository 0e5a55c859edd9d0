// Malformed tokenizer.json files: each is an Error(kInvalidInput) whose
// message names the field at fault, never a crash.
#include <catch2/catch.hpp>

#include <random>

#include "fixtures.h"

using namespace fixtures;

namespace {

std::string error_of(const std::string& text) {
  try {
    Tokenizer::from_json(text, "tokenizer.json");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("from_json accepted a malformed file");
  return {};
}

std::string error_of(const char* text) { return error_of(std::string(text)); }
std::string error_of(const Json& j) { return error_of(j.dump()); }

}  // namespace

TEST_CASE("malformed: not JSON, truncated, wrong top level") {
  CHECK_THAT(error_of("hello"), Catch::StartsWith("tokenizer.json: not valid JSON"));
  CHECK_THAT(error_of(""), Catch::Contains("not valid JSON"));
  const std::string full = text("bytelevel.json");
  for (std::size_t cut : {std::size_t{1}, full.size() / 3, full.size() / 2, full.size() - 3})
    CHECK_THAT(error_of(full.substr(0, cut)), Catch::Contains("not valid JSON"));
  CHECK_THAT(error_of("[1, 2]"), Catch::Contains("top level must be a JSON object"));
  // Deep nesting is a parse result or a clear error, not a stack overflow.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  CHECK_THAT(error_of(deep), Catch::Contains("top level"));
}

TEST_CASE("malformed: missing model and unsupported model type") {
  CHECK(error_of("{}") == "tokenizer.json: model is missing: a tokenizer.json needs a model section");
  Json j = json("bytelevel.json");
  j["model"]["type"] = "WordPiece";
  CHECK(error_of(j) == "tokenizer.json: model.type 'WordPiece' is not supported (supported: BPE)");
  j["model"]["type"] = 3;
  CHECK_THAT(error_of(j), Catch::Contains("model.type must be a string"));
  j = json("bytelevel.json");
  j["model"].erase("vocab");
  CHECK(error_of(j) == "tokenizer.json: model.vocab is missing");
  j = json("bytelevel.json");
  j["model"]["continuing_subword_prefix"] = "##";
  CHECK_THAT(error_of(j), Catch::Contains("model.continuing_subword_prefix is not supported"));
}

TEST_CASE("malformed: wrong types") {
  Json j = json("bytelevel.json");
  j["model"]["vocab"] = Json::array({1, 2});
  CHECK_THAT(error_of(j), Catch::Contains("model.vocab must be an object"));
  j = json("bytelevel.json");
  j["model"]["vocab"]["x"] = "5";
  CHECK_THAT(error_of(j), Catch::Contains("model.vocab['x'] must be an integer, not string"));
  j = json("bytelevel.json");
  j["model"]["vocab"]["x"] = 1.5;
  CHECK_THAT(error_of(j), Catch::Contains("must be an integer, not number"));
  j = json("bytelevel.json");
  j["model"]["merges"] = "a b";
  CHECK_THAT(error_of(j), Catch::Contains("model.merges must be an array"));
  j = json("bytelevel.json");
  j["model"]["merges"][0] = 7;
  CHECK_THAT(error_of(j), Catch::Contains("model.merges[0] must be a string"));
  j = json("bytelevel.json");
  j["model"]["byte_fallback"] = "yes";
  CHECK_THAT(error_of(j), Catch::Contains("model.byte_fallback must be true or false"));
  j = json("bytelevel.json");
  j["added_tokens"][1]["special"] = "true";
  CHECK_THAT(error_of(j), Catch::Contains("added_tokens[1].special must be true or false"));
  j = json("bytelevel.json");
  j["added_tokens"][0].erase("content");
  CHECK_THAT(error_of(j), Catch::Contains("added_tokens[0].content is missing"));
  j = json("bytelevel.json");
  j["pre_tokenizer"] = "ByteLevel";
  CHECK_THAT(error_of(j), Catch::Contains("pre_tokenizer must be an object or null"));
  j = json("sentencepiece.json");
  j["decoder"]["decoders"][3]["start"] = -1;
  CHECK_THAT(error_of(j), Catch::Contains("decoder.decoders[3].start"));
}

TEST_CASE("malformed: merges referencing unknown tokens") {
  Json j = json("bytelevel.json");
  j["model"]["merges"].push_back("q \xE2\x82\xAC");
  CHECK_THAT(error_of(j), Catch::Contains("model.merges[11] refers to right token"));
  j = json("bytelevel.json");
  j["model"]["merges"].push_back("x y");  // both known, "xy" is not
  CHECK_THAT(error_of(j), Catch::Contains("merged token 'xy' that is not in model.vocab"));
  j = json("bytelevel.json");
  j["model"]["merges"].push_back("a b c");
  CHECK_THAT(error_of(j), Catch::Contains("must be two tokens separated by one space"));
  j = json("sentencepiece.json");
  j["model"]["merges"].push_back(Json::array({"a"}));
  CHECK_THAT(error_of(j), Catch::Contains("must be a string \"a b\" or a pair"));
  j = json("sentencepiece.json");
  j["model"]["unk_token"] = "<missing>";
  CHECK_THAT(error_of(j), Catch::Contains("model.unk_token '<missing>' is not in model.vocab"));
}

TEST_CASE("malformed: hostile ids and duplicates") {
  for (const Json& bad : {Json(99999999999LL), Json(-1), Json(1ULL << 63), Json(16777216)}) {
    Json j = json("bytelevel.json");
    j["model"]["vocab"]["huge"] = bad;
    CHECK_THAT(error_of(j), Catch::Contains("model.vocab['huge']") && Catch::Contains("out of range"));
  }
  Json j = json("bytelevel.json");
  j["added_tokens"][0]["id"] = 4294967296LL;
  CHECK_THAT(error_of(j), Catch::Contains("added_tokens[0].id") && Catch::Contains("out of range"));
  j = json("bytelevel.json");
  j["model"]["vocab"]["dup"] = 5;
  CHECK_THAT(error_of(j), Catch::Contains("gives id 5 to both"));
  j = json("sentencepiece.json");
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {123456};
  CHECK_THAT(error_of(j), Catch::Contains("id 123456 is not a token of this vocabulary"));
  j = json("sentencepiece.json");
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>";
  CHECK_THAT(error_of(j), Catch::Contains("names special token '<bos>'"));
}

TEST_CASE("malformed: unsupported pipeline parts and bad regexes") {
  Json j = json("bytelevel.json");
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  CHECK_THAT(error_of(j), Catch::StartsWith("tokenizer.json: pre_tokenizer.type 'BertPreTokenizer' is not supported"));
  j = json("bytelevel.json");
  j["normalizer"] = {{"type", "BertNormalizer"}};
  CHECK_THAT(error_of(j), Catch::Contains("normalizer.type 'BertNormalizer' is not supported"));
  j = json("bytelevel.json");
  j["decoder"] = {{"type", "WordPiece"}};
  CHECK_THAT(error_of(j), Catch::Contains("decoder.type 'WordPiece' is not supported"));
  j = json("bytelevel.json");
  j["post_processor"] = {{"type", "Mystery"}};
  CHECK_THAT(error_of(j), Catch::Contains("post_processor.type 'Mystery' is not supported"));
  j = json("bytelevel.json");
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}}}};
  CHECK_THAT(error_of(j), Catch::Contains("pre_tokenizer.pretokenizers[0].pattern: regex does not compile"));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "\\s+"}};
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  CHECK_THAT(error_of(j), Catch::Contains("behavior 'Sideways' is not supported"));
  j = json("sentencepiece.json");
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "ab"}};
  CHECK_THAT(error_of(j), Catch::Contains("pre_tokenizer.replacement must be a single character"));
}

TEST_CASE("NFC normalizer is accepted and passes text through") {
  Json j = json("bytelevel.json");
  j["normalizer"] = {{"type", "NFC"}};
  const Tokenizer t = load(j);
  CHECK(t.decode(t.encode("caf\xC3\xA9")) == "caf\xC3\xA9");
}

TEST_CASE("randomly mutated tokenizer.json files parse or fail with fedge::Error, never crash") {
  std::mt19937 rng(12345);
  int parsed = 0, rejected = 0;
  for (const char* name : {"bytelevel.json", "sentencepiece.json", "merge_order.json"}) {
    const std::string base = text(name);
    for (int iter = 0; iter < 150; ++iter) {
      std::string s = base;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const std::size_t pos = rng() % s.size();
        switch (rng() % 5) {
          case 0: s[pos] = static_cast<char>(rng() % 256); break;                       // flip a byte
          case 1: s.erase(pos, 1 + rng() % 40); break;                                  // delete a range
          case 2: s.insert(pos, s.substr(rng() % s.size(), 1 + rng() % 40)); break;     // duplicate a range
          case 3: s.insert(pos, std::to_string(static_cast<std::int64_t>(rng()) * 99991)); break;  // big number
          default: s = s.substr(0, pos) + (rng() % 2 ? "null" : "[]") + s.substr(pos); break;  // wrong type
        }
        if (s.empty()) s.push_back('{');
      }
      try {
        const Tokenizer t = Tokenizer::from_json(s, "fuzz");
        ++parsed;
        const auto ids = t.encode("hello world 😀 <s> <|im_end|>");
        (void)t.decode(ids);
        (void)t.decode(std::vector<TokenId>{0, 1, 2, 100000, -1});
      } catch (const fedge::Error& e) {
        ++rejected;
        CHECK(std::string(e.what()).rfind("fuzz", 0) == 0);  // names the source
      }
    }
  }
  CHECK(parsed + rejected == 450);
  CHECK(rejected > 100);
}
