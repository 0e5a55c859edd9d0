// Token sequences for training and evaluation: records tokenised with a loss
// mask (prompt tokens carry no loss), packed or padded to a sequence length,
// and cut into batches in a seeded order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "fedge/inference/tokenizer.h"
#include "fedge/training/records.h"

namespace fedge::training {

using inference::TokenId;

// One training sequence. target[i] = 1 when tokens[i] is a token the model is
// trained to predict (from tokens[0..i-1]); the first token is never a target.
struct Sequence {
  std::vector<TokenId> tokens;
  std::vector<std::uint8_t> target;
};

// BOS (when the tokenizer adds one) + prompt + completion + EOS; targets are
// the completion and EOS tokens.
Sequence tokenize_record(const inference::Tokenizer& tokenizer, const Record& record);

// A rectangular batch, padded on the right: row-major [rows, cols].
struct Batch {
  int rows = 0;
  int cols = 0;
  std::vector<std::int64_t> tokens;
  std::vector<std::uint8_t> attention;  // 1 = real token
  std::vector<std::uint8_t> target;     // 1 = loss on this token
  std::int64_t target_count() const;
};

class TokenDataset {
 public:
  // With `pack`, sequences are concatenated and cut into seq_len chunks (for
  // text: no padding wasted); otherwise each record is one sequence, cut to
  // seq_len. Records that leave no target token are dropped.
  static TokenDataset build(const inference::Tokenizer& tokenizer, const std::vector<Record>& records, int seq_len,
                            bool pack);
  static TokenDataset from_sequences(std::vector<Sequence> sequences);

  std::size_t size() const { return sequences_.size(); }
  bool empty() const { return sequences_.empty(); }
  const Sequence& operator[](std::size_t i) const { return sequences_[i]; }
  std::int64_t target_tokens() const;
  std::int64_t total_tokens() const;
  // Pads the chosen sequences to the longest of them (pad id 0, attention 0).
  Batch batch(std::span<const std::size_t> indices) const;

 private:
  std::vector<Sequence> sequences_;
};

// The sequence indices of micro-batch `index` in a seeded, epoch-wise shuffled
// stream: each epoch is a fresh permutation, so the order depends only on
// (seed, index) and a resumed run sees the same batches.
std::vector<std::size_t> batch_indices(std::size_t dataset_size, int batch_size, std::uint64_t seed,
                                       std::int64_t index);

// Splits records into (train, eval) with a seeded shuffle; eval gets
// round(fraction * n) records, at least one when fraction > 0 and n > 1.
std::pair<std::vector<Record>, std::vector<Record>> split_records(std::vector<Record> records, double eval_fraction,
                                                                  std::uint64_t seed);

}  // namespace fedge::training
