#include "fedge/training/dataset.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"

namespace fedge::training {

Sequence tokenize_record(const inference::Tokenizer& tokenizer, const Record& record) {
  Sequence seq;
  seq.tokens = tokenizer.encode(record.prompt, /*add_bos=*/true);
  seq.target.assign(seq.tokens.size(), 0);
  auto completion = tokenizer.encode(record.completion, /*add_bos=*/false);
  // A chat template usually ends the turn itself ("<|im_end|>", "</s>"):
  // then no second end-of-sequence token.
  auto eos = tokenizer.eos_ids();
  const bool ended = std::any_of(completion.begin(), completion.end(), [&](inference::TokenId id) {
    return std::find(eos.begin(), eos.end(), id) != eos.end();
  });
  if (!eos.empty() && !ended) completion.push_back(eos.front());
  seq.tokens.insert(seq.tokens.end(), completion.begin(), completion.end());
  seq.target.insert(seq.target.end(), completion.size(), 1);
  if (!seq.target.empty()) seq.target[0] = 0;  // nothing predicts the first token
  return seq;
}

std::int64_t Batch::target_count() const {
  return std::count(target.begin(), target.end(), std::uint8_t{1});
}

TokenDataset TokenDataset::from_sequences(std::vector<Sequence> sequences) {
  TokenDataset dataset;
  for (auto& seq : sequences) {
    if (seq.tokens.size() != seq.target.size()) {
      throw Error(ErrorKind::kInvalidInput, "sequence tokens and targets differ in length");
    }
    if (std::find(seq.target.begin() + (seq.target.empty() ? 0 : 1), seq.target.end(), 1) != seq.target.end()) {
      dataset.sequences_.push_back(std::move(seq));
    }
  }
  return dataset;
}

TokenDataset TokenDataset::build(const inference::Tokenizer& tokenizer, const std::vector<Record>& records,
                                 int seq_len, bool pack) {
  if (seq_len < 2) throw Error(ErrorKind::kInvalidInput, "sequence length must be at least 2");
  std::vector<Sequence> out;
  if (!pack) {
    for (const auto& record : records) {
      Sequence seq = tokenize_record(tokenizer, record);
      seq.tokens.resize(std::min<std::size_t>(seq.tokens.size(), seq_len));
      seq.target.resize(seq.tokens.size());
      out.push_back(std::move(seq));
    }
    return from_sequences(std::move(out));
  }
  Sequence current;
  for (const auto& record : records) {
    Sequence seq = tokenize_record(tokenizer, record);
    for (std::size_t i = 0; i < seq.tokens.size(); ++i) {
      current.tokens.push_back(seq.tokens[i]);
      // Across a record boundary the first token of the next record is not
      // predicted from the previous record's text.
      current.target.push_back(seq.target[i]);
      if (static_cast<int>(current.tokens.size()) == seq_len) {
        current.target[0] = 0;
        out.push_back(std::move(current));
        current = {};
      }
    }
  }
  if (current.tokens.size() >= 2) {
    current.target[0] = 0;
    out.push_back(std::move(current));
  }
  return from_sequences(std::move(out));
}

std::int64_t TokenDataset::target_tokens() const {
  std::int64_t total = 0;
  for (const auto& seq : sequences_) total += std::count(seq.target.begin(), seq.target.end(), std::uint8_t{1});
  return total;
}

std::int64_t TokenDataset::total_tokens() const {
  std::int64_t total = 0;
  for (const auto& seq : sequences_) total += static_cast<std::int64_t>(seq.tokens.size());
  return total;
}

Batch TokenDataset::batch(std::span<const std::size_t> indices) const {
  Batch batch;
  batch.rows = static_cast<int>(indices.size());
  for (std::size_t i : indices) batch.cols = std::max(batch.cols, static_cast<int>(sequences_.at(i).tokens.size()));
  const std::size_t cells = static_cast<std::size_t>(batch.rows) * batch.cols;
  batch.tokens.assign(cells, 0);
  batch.attention.assign(cells, 0);
  batch.target.assign(cells, 0);
  for (int r = 0; r < batch.rows; ++r) {
    const Sequence& seq = sequences_[indices[r]];
    std::size_t base = static_cast<std::size_t>(r) * batch.cols;
    for (std::size_t t = 0; t < seq.tokens.size(); ++t) {
      batch.tokens[base + t] = seq.tokens[t];
      batch.attention[base + t] = 1;
      batch.target[base + t] = seq.target[t];
    }
  }
  return batch;
}

std::vector<std::size_t> batch_indices(std::size_t dataset_size, int batch_size, std::uint64_t seed,
                                       std::int64_t index) {
  if (dataset_size == 0 || batch_size <= 0) throw Error(ErrorKind::kInvalidInput, "empty data set or batch size 0");
  std::vector<std::size_t> out;
  std::int64_t cached_epoch = -1;
  std::vector<std::size_t> order;
  for (int i = 0; i < batch_size; ++i) {
    std::int64_t position = index * batch_size + i;
    std::int64_t epoch = position / static_cast<std::int64_t>(dataset_size);
    if (epoch != cached_epoch) {
      order.resize(dataset_size);
      std::iota(order.begin(), order.end(), std::size_t{0});
      Rng rng(derive_seed(seed, "epoch/" + std::to_string(epoch)));
      for (std::size_t k = dataset_size; k > 1; --k) std::swap(order[k - 1], order[rng.below(k)]);
      cached_epoch = epoch;
    }
    out.push_back(order[position % static_cast<std::int64_t>(dataset_size)]);
  }
  return out;
}

std::pair<std::vector<Record>, std::vector<Record>> split_records(std::vector<Record> records, double eval_fraction,
                                                                  std::uint64_t seed) {
  if (eval_fraction < 0 || eval_fraction >= 1) {
    throw Error(ErrorKind::kInvalidInput, "evaluation fraction must be in [0, 1)");
  }
  Rng rng(seed, "split");
  for (std::size_t k = records.size(); k > 1; --k) std::swap(records[k - 1], records[rng.below(k)]);
  std::size_t eval_count = static_cast<std::size_t>(std::lround(eval_fraction * records.size()));
  if (eval_fraction > 0 && eval_count == 0 && records.size() > 1) eval_count = 1;
  std::vector<Record> eval(records.end() - static_cast<std::ptrdiff_t>(eval_count), records.end());
  records.resize(records.size() - eval_count);
  return {std::move(records), std::move(eval)};
}

}  // namespace fedge::training
