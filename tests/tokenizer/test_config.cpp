// BOS/EOS/PAD from tokenizer_config.json and generation_config.json, the tiny
// preset, and writing a tokenizer back out.
#include <catch2/catch.hpp>

#include "fixtures.h"

using namespace fixtures;
using Ids = std::vector<TokenId>;

TEST_CASE("BOS/EOS from tokenizer_config.json and generation_config.json") {
  TempDir dir;
  write(dir.path / "tokenizer.json", text("sentencepiece.json"));
  SECTION("tokenizer.json alone: BOS from the template, EOS by name") {
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK(t.bos_id() == 1);
    CHECK(t.eos_ids() == Ids{2});
    CHECK_FALSE(t.pad_id().has_value());
    CHECK(t.encode("hello") == Ids{1, 276});
  }
  SECTION("add_eos_token and {content} token fields") {
    write(dir.path / "tokenizer_config.json",
          R"({"add_bos_token": true, "add_eos_token": true,
              "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
              "eos_token": "</s>", "pad_token": "<unk>"})");
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK(t.encode("hello") == Ids{1, 276, 2});
    CHECK(t.encode("hello", false) == Ids{276});
    CHECK(t.pad_id() == 0);
  }
  SECTION("add_bos_token false overrides the template") {
    write(dir.path / "tokenizer_config.json", R"({"add_bos_token": false, "bos_token": "<s>"})");
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK(t.encode("hello") == Ids{276});
    CHECK(t.bos_id() == 1);
  }
  SECTION("generation_config.json: eos list, bos and pad ids") {
    write(dir.path / "tokenizer_config.json", R"({"eos_token": "</s>"})");
    write(dir.path / "generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [281, 276], "pad_token_id": 0})");
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK(t.eos_ids() == Ids{2, 281, 276});  // the tokenizer's own EOS first
    CHECK(t.pad_id() == 0);
    write(dir.path / "generation_config.json", R"({"eos_token_id": 2})");
    CHECK(Tokenizer::from_dir(dir.path).eos_ids() == Ids{2});
  }
  SECTION("bad config files are clear errors") {
    write(dir.path / "generation_config.json", R"({"eos_token_id": 99999999999})");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("generation_config.json") &&
                                                         Catch::Contains("eos_token_id"));
    write(dir.path / "generation_config.json", R"({"eos_token_id": "two"})");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("not a token id"));
    std::filesystem::remove(dir.path / "generation_config.json");
    write(dir.path / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("add_bos_token must be true or false"));
    write(dir.path / "tokenizer_config.json", R"({"bos_token": )");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("tokenizer_config.json: not valid JSON"));
  }
}

TEST_CASE("a directory without tokenizer.json is a not-found error") {
  TempDir dir;
  try {
    Tokenizer::from_dir(dir.path);
    FAIL("no error");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kNotFound);
    CHECK(std::string(e.what()).find("tokenizer.json") != std::string::npos);
  }
}

TEST_CASE("tiny preset: 256 byte symbols, five specials, BOS added") {
  const Tokenizer t = Tokenizer::byte_level_tiny();
  CHECK(t.vocab_size() == 261);
  CHECK(t.bos_id() == 256);
  CHECK(t.eos_ids() == Ids{257});
  CHECK(t.pad_id() == 258);
  CHECK(t.token_to_id("<|user|>") == 259);
  CHECK(t.token_to_id("<|assistant|>") == 260);
  CHECK(t.token_to_id("\xC4\xA0") == 32);  // "Ġ" is the space byte
  for (TokenId id = 256; id <= 260; ++id) CHECK(t.is_special(id));
  CHECK_FALSE(t.is_special(255));
  CHECK(t.encode("hi") == Ids{256, 'h', 'i'});
  CHECK(t.encode("<|user|>hi<|assistant|>", false) == Ids{259, 'h', 'i', 260});
  for (int b = 0; b < 256; ++b) CHECK(t.token_bytes(b) == std::string(1, static_cast<char>(b)));
}

TEST_CASE("tiny preset: to_json is a real HF tokenizer.json that reads back equal") {
  const Tokenizer t = Tokenizer::byte_level_tiny();
  const std::string text = t.to_json();
  const Json j = Json::parse(text);
  CHECK(j["version"] == "1.0");
  CHECK(j["added_tokens"].size() == 5);
  CHECK(j["added_tokens"][0]["content"] == "<|bos|>");
  CHECK(j["normalizer"].is_null());
  CHECK(j["pre_tokenizer"]["type"] == "ByteLevel");
  CHECK(j["post_processor"]["type"] == "TemplateProcessing");
  CHECK(j["decoder"]["type"] == "ByteLevel");
  CHECK(j["model"]["type"] == "BPE");
  CHECK(j["model"]["vocab"].size() == 256);
  CHECK(j["model"]["merges"].empty());
  // Vocabulary written in id order, as HF writes it.
  CHECK(j["model"]["vocab"].begin().key() == "\xC4\x80");  // byte 0 -> U+0100
  CHECK(j["model"]["vocab"]["A"] == 65);

  const Tokenizer back = Tokenizer::from_json(text, "copy");
  CHECK(back.to_json() == text);
  CHECK(back.vocab_size() == t.vocab_size());
  CHECK(back.bos_id() == t.bos_id());
  CHECK(back.eos_ids() == t.eos_ids());
  CHECK(back.pad_id() == t.pad_id());
  for (TokenId id = 0; id < t.vocab_size(); ++id) {
    CHECK(back.token_bytes(id) == t.token_bytes(id));
    CHECK(back.is_special(id) == t.is_special(id));
  }
  const std::string s = "<|user|>héllo 😀\t<|assistant|>";
  CHECK(back.encode(s) == t.encode(s));
}

TEST_CASE("save writes tokenizer.json and tokenizer_config.json that from_dir reads back") {
  TempDir dir;
  const Tokenizer t = Tokenizer::byte_level_tiny();
  t.save(dir.path / "model");
  const Json cfg = Json::parse(read(dir.path / "model" / "tokenizer_config.json"));
  CHECK(cfg["bos_token"] == "<|bos|>");
  CHECK(cfg["eos_token"] == "<|eos|>");
  CHECK(cfg["pad_token"] == "<|pad|>");
  CHECK(cfg["add_bos_token"] == true);
  CHECK(cfg["add_eos_token"] == false);
  const Tokenizer back = Tokenizer::from_dir(dir.path / "model");
  CHECK(back.to_json() == t.to_json());
  CHECK(back.bos_id() == 256);
  CHECK(back.eos_ids() == Ids{257});
  CHECK(back.pad_id() == 258);
  CHECK(back.encode("hi") == Ids{256, 'h', 'i'});
}
