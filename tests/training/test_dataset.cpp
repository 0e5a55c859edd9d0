// Records to token sequences (dataset.h). Apart from test_records.cpp, whose
// records parser is torch-free and also runs in the FEDGE_TORCH_FREE_ONLY build.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fedge/training/dataset.h"

using namespace fedge::training;

TEST_CASE("tokenised records put loss on the completion and EOS only", "[dataset]") {
  auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  auto seq = tokenize_record(tokenizer, Record{"<|user|>Status?<|assistant|>", "ok"});
  // BOS, <|user|>, 7 bytes, <|assistant|>, 'o', 'k', EOS.
  REQUIRE(seq.tokens.size() == 13);
  CHECK(seq.tokens.front() == 256);
  CHECK(seq.tokens[1] == 259);
  CHECK(seq.tokens[9] == 260);
  CHECK(seq.tokens[10] == 'o');
  CHECK(seq.tokens.back() == 257);
  std::vector<std::uint8_t> expected(13, 0);
  expected[10] = expected[11] = expected[12] = 1;
  CHECK(seq.target == expected);
  auto text = tokenize_record(tokenizer, Record{"", "ab"});
  CHECK(text.target == std::vector<std::uint8_t>{0, 1, 1, 1});  // 'a', 'b', EOS after BOS
}

TEST_CASE("packing cuts text into full sequences, padding keeps one record per row", "[dataset]") {
  auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  std::vector<Record> records = {{"", "abcdef"}, {"", "ghij"}};  // 8 and 6 tokens with BOS and EOS
  auto packed = TokenDataset::build(tokenizer, records, 5, true);
  REQUIRE(packed.size() == 3);  // 14 tokens -> 5 + 5 + 4
  CHECK(packed.total_tokens() == 14);
  CHECK(packed[1].target[0] == 0);
  auto padded = TokenDataset::build(tokenizer, records, 16, false);
  REQUIRE(padded.size() == 2);
  auto batch = padded.batch(std::vector<std::size_t>{0, 1});
  CHECK(batch.cols == 8);
  CHECK(batch.attention[8 + 6] == 0);  // second row is padded after its 6 tokens
  CHECK(batch.target_count() == 7 + 5);
  auto [train, eval] = split_records({{"", "1"}, {"", "2"}, {"", "3"}, {"", "4"}}, 0.25, 1);
  CHECK(train.size() == 3);
  CHECK(eval.size() == 1);
}

TEST_CASE("a completion that ends its turn with EOS gets no second EOS", "[dataset]") {
  auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  auto seq = tokenize_record(tokenizer, Record{"<|user|>Hi<|assistant|>", "ok<|eos|>"});
  CHECK(std::count(seq.tokens.begin(), seq.tokens.end(), 257) == 1);
  CHECK(seq.tokens.back() == 257);
}
