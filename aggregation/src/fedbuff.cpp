#include "fedge/aggregation/fedbuff.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "fedge/common/error.h"

namespace fedge::aggregation {
namespace {

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorKind::kInvalidInput, "fedbuff: " + what); }

}  // namespace

void validate(const StalenessPolicy& policy) {
  if (!std::isfinite(policy.exponent) || policy.exponent < 0)
    bad("staleness exponent must be a finite number >= 0, got " + std::to_string(policy.exponent));
}

double staleness_weight(std::uint64_t staleness, double exponent) {
  validate(StalenessPolicy{exponent, 0});
  return std::pow(1.0 + static_cast<double>(staleness), -exponent);
}

std::vector<float> fedbuff_step(std::span<const float> global, std::span<const double> weighted_sum,
                                double total_weight, double server_lr) {
  if (global.size() != weighted_sum.size())
    bad("the buffer sum has " + std::to_string(weighted_sum.size()) + " values, the global " +
        std::to_string(global.size()));
  if (!(total_weight > 0) || !std::isfinite(total_weight))
    bad("the buffer's total weight must be > 0, got " + std::to_string(total_weight));
  if (!(server_lr > 0) || !std::isfinite(server_lr))
    bad("server_lr must be a finite number > 0, got " + std::to_string(server_lr));
  std::vector<float> out(global.size());
  const double scale = server_lr / total_weight;
  for (std::size_t j = 0; j < global.size(); ++j)
    out[j] = static_cast<float>(static_cast<double>(global[j]) + scale * weighted_sum[j]);
  return out;
}

std::vector<float> fedbuff_step(std::span<const float> global, std::span<const float> weighted_sum,
                                double total_weight, double server_lr) {
  const std::vector<double> wide(weighted_sum.begin(), weighted_sum.end());
  return fedbuff_step(global, std::span<const double>(wide), total_weight, server_lr);
}

FedBuffBuffer::FedBuffBuffer(std::size_t capacity, std::size_t update_length, StalenessPolicy policy)
    : capacity_(capacity), policy_(policy), sum_(update_length, 0.0) {
  if (capacity == 0) bad("buffer_size must be >= 1");
  if (update_length == 0) bad("update length is 0");
  validate(policy);
}

bool FedBuffBuffer::add(std::span<const float> update, double num_examples, std::uint64_t base_version,
                        std::uint64_t server_version) {
  if (full()) bad("the buffer is full (" + std::to_string(capacity_) + " updates); take() it first");
  if (update.size() != sum_.size())
    bad("an update has " + std::to_string(update.size()) + " values, the buffer " + std::to_string(sum_.size()));
  if (!(num_examples > 0) || !std::isfinite(num_examples))
    bad("num_examples must be > 0, got " + std::to_string(num_examples));
  if (base_version > server_version)
    bad("an update trained from version " + std::to_string(base_version) + ", but the server is at version " +
        std::to_string(server_version));
  for (std::size_t j = 0; j < update.size(); ++j)
    if (!std::isfinite(update[j])) bad("an update has a non-finite value at index " + std::to_string(j));
  const std::uint64_t staleness = server_version - base_version;
  if (staleness > policy_.max_staleness) return false;
  const double w = staleness_weight(staleness, policy_.exponent) * num_examples;
  for (std::size_t j = 0; j < update.size(); ++j) sum_[j] += w * static_cast<double>(update[j]);
  weight_ += w;
  ++count_;
  return true;
}

FedBuffBuffer::Sum FedBuffBuffer::take() {
  if (count_ == 0) bad("take() on an empty buffer");
  Sum s{sum_, weight_, count_};
  std::fill(sum_.begin(), sum_.end(), 0.0);
  weight_ = 0;
  count_ = 0;
  return s;
}

}  // namespace fedge::aggregation
