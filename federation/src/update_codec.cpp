#include "fedge/federation/update_codec.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/privacy/dp.h"
#include "fedge/privacy/quantize.h"

namespace fedge::federation {
namespace {

[[noreturn]] void bad(const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, "update encoding: " + what);
}

bool positive_finite(double v) { return std::isfinite(v) && v > 0; }

// How many ways distributed noise is split: t_min, or when the encoding does
// not say, the fewest survivors any secure round may finish with (noisier
// than needed when t > 3, never short of the target).
std::uint32_t noise_split(const UpdateEncoding& enc) {
  return enc.min_survivors ? enc.min_survivors : aggregation::kMinSurvivors;
}

void check_length(const UpdateEncoding& enc, std::size_t got, const char* what) {
  if (got != enc.update_length)
    bad(std::string(what) + " has " + std::to_string(got) + " values, the round's update length is " +
        std::to_string(enc.update_length) + " (is the node's model layout the coordinator's?)");
}

}  // namespace

void validate(const UpdateEncoding& enc, bool secure) {
  if (enc.update_length == 0) bad("update_length is 0");
  if (!positive_finite(enc.clip_range)) bad("clip_range must be a finite number > 0");
  if (enc.example_scale == 0) bad("example_scale must be >= 1");
  if (enc.rank_slots > kMaxRankSlots)
    bad("rank_slots " + std::to_string(enc.rank_slots) + " is above " + std::to_string(kMaxRankSlots));
  if (!std::isfinite(enc.loss_cap) || enc.loss_cap < 0) bad("loss_cap must be finite and >= 0");
  if (enc.dp != protocol::DpMode::kNone) {
    if (!positive_finite(enc.dp_clip_norm)) bad("dp_clip_norm must be a finite number > 0 when DP is on");
    if (!std::isfinite(enc.noise_multiplier) || enc.noise_multiplier < 0)
      bad("noise_multiplier must be finite and >= 0");
  }
  if (!secure) {
    if (enc.dp == protocol::DpMode::kDistributed) bad("distributed DP needs secure aggregation (use central DP)");
    return;
  }
  if (enc.quant_bits < 2 || enc.quant_bits > 32) bad("quant_bits " + std::to_string(enc.quant_bits) + " is outside 2..32");
  if (enc.dp != protocol::DpMode::kDistributed) return;
  if (enc.num_clients == 0) bad("num_clients is 0 under distributed DP");
  if (enc.min_survivors > enc.num_clients)
    bad("min_survivors " + std::to_string(enc.min_survivors) + " exceeds the round's " +
        std::to_string(enc.num_clients) + " nodes (it is the plan's secagg threshold)");
}


std::uint64_t capped_example_scale(std::span<const std::uint64_t> counts, const WeightCaps& caps) {
  if (counts.empty()) bad("no example counts to weigh");
  if (caps.max_examples == 0) bad("max_examples must be >= 1");
  if (!(caps.max_share > 0) || caps.max_share > 1) bad("max_share must be in (0, 1]");
  std::vector<std::uint64_t> c;
  c.reserve(counts.size());
  for (std::uint64_t n : counts) {
    if (n == 0) bad("a node with 0 training examples cannot contribute an update");
    c.push_back(std::min(n, caps.max_examples));
  }
  std::sort(c.begin(), c.end(), std::greater<>());
  // With the k largest counts clamped to S, the largest share is
  // S / (k S + rest_k), rest_k the sum of the others; it falls as S falls, so
  // walk k up and take the largest S in (c[k], c[k-1]] that keeps it <= max_share.
  long double rest = 0;
  for (std::uint64_t v : c) rest += static_cast<long double>(v);
  const long double s = caps.max_share;
  for (std::size_t k = 1; k <= c.size(); ++k) {
    rest -= static_cast<long double>(c[k - 1]);
    const long double headroom = 1 - s * static_cast<long double>(k);
    if (headroom <= 0) return c[k - 1];  // every S in the interval keeps the share
    const long double best = s * rest / headroom;
    const std::uint64_t below = k < c.size() ? c[k] : 0;
    if (best >= static_cast<long double>(c[k - 1])) return c[k - 1];
    if (best > static_cast<long double>(below)) return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(best));
  }
  return c.back();  // max_share < 1/n: equal weights
}

double node_weight(std::uint64_t num_examples, std::uint64_t example_scale) {
  if (example_scale == 0) bad("example_scale must be >= 1");
  if (num_examples == 0) bad("a node with 0 training examples cannot contribute an update");
  return static_cast<double>(std::min(num_examples, example_scale)) / static_cast<double>(example_scale);
}

std::vector<float> clip_update(const UpdateEncoding& enc, std::span<const float> update) {
  check_length(enc, update.size(), "the update");
  for (std::size_t i = 0; i < update.size(); ++i)
    if (!std::isfinite(update[i]))
      bad("the update has a non-finite value at index " + std::to_string(i) + " (did local training diverge?)");
  std::vector<float> out(update.begin(), update.end());
  if (enc.dp != protocol::DpMode::kNone) privacy::l2_clip(out, enc.dp_clip_norm);
  const auto c = static_cast<float>(enc.clip_range);
  for (float& v : out) v = std::clamp(v, -c, c);
  return out;
}

std::vector<float> weighted_vector(const UpdateEncoding& enc, std::span<const float> update,
                                   std::uint64_t num_examples, double train_loss, std::uint32_t lora_rank,
                                   double staleness_weight) {
  // In (0, 1], so every coordinate stays inside the quantiser's range.
  if (!(staleness_weight > 0) || staleness_weight > 1)
    bad("staleness weight " + std::to_string(staleness_weight) + " is outside (0, 1]");
  const double w = node_weight(num_examples, enc.example_scale) * staleness_weight;
  std::vector<float> v = clip_update(enc, update);
  for (float& x : v) x = static_cast<float>(w * x);
  v.push_back(static_cast<float>(w * enc.clip_range));
  double loss_part = 0;
  // Under DP the loss coordinate carries no calibrated noise, so it is not sent.
  if (enc.loss_cap > 0 && enc.dp == protocol::DpMode::kNone) {
    const double loss = std::isfinite(train_loss) ? std::clamp(train_loss, 0.0, enc.loss_cap) : 0.0;
    loss_part = w * enc.clip_range * loss / enc.loss_cap;
  }
  v.push_back(static_cast<float>(loss_part));
  if (enc.rank_slots > 0) {
    const auto rank = static_cast<int>(lora_rank == 0 ? enc.rank_slots : lora_rank);
    const auto slots = aggregation::rank_indicator(static_cast<int>(enc.rank_slots), rank,
                                                   static_cast<float>(w * enc.clip_range));
    v.insert(v.end(), slots.begin(), slots.end());
  } else if (lora_rank != 0) {
    bad("a LoRA rank (" + std::to_string(lora_rank) + ") for an encoding without rank slots");
  }
  return v;
}

double skellam_mu(const UpdateEncoding& enc) {
  if (enc.dp != protocol::DpMode::kDistributed || enc.noise_multiplier == 0) return 0;
  const privacy::Quantizer q(enc.clip_range, enc.quant_bits);
  const double target = enc.noise_multiplier * enc.dp_clip_norm * q.scale();
  return privacy::skellam_mu_per_node(target, noise_split(enc));
}

double distributed_noise_multiplier(const UpdateEncoding& enc, std::size_t survivors) {
  const double mu = skellam_mu(enc);
  if (mu == 0) return 0;
  const privacy::Quantizer q(enc.clip_range, enc.quant_bits);
  return std::sqrt(static_cast<double>(survivors) * 2.0 * mu) / (enc.dp_clip_norm * q.scale());
}

std::uint64_t skellam_noise_bound(const UpdateEncoding& enc) {
  const double mu = skellam_mu(enc);
  return mu > 0 ? privacy::skellam_tail_bound(mu) : 0;
}

std::uint64_t choose_quant_bits(UpdateEncoding& enc, std::uint64_t n) {
  // The noise bound scales with the quantiser (it is sigma * C in quantised
  // units), so walk down from the most bits the inputs alone allow until the
  // inputs plus their noise fit.
  constexpr std::uint64_t kInt32Max = 0x7fffffff;
  for (std::uint32_t bits = privacy::Quantizer::bits_for(n); bits >= 2; --bits) {
    enc.quant_bits = bits;
    const std::uint64_t bound = skellam_noise_bound(enc);
    const std::uint64_t qmax = (std::uint64_t{1} << (bits - 1)) - 1;
    if (qmax + bound <= kInt32Max / n) return bound;
  }
  throw Error(ErrorKind::kPrivacy, "update encoding: the distributed DP noise of " + std::to_string(n) +
                                       " nodes does not fit a 32-bit ring at any quantisation; lower the "
                                       "noise multiplier or the number of nodes per round");
}

std::vector<std::uint32_t> encode_secure(const UpdateEncoding& enc, std::span<const float> update,
                                         std::uint64_t num_examples, double train_loss,
                                         privacy::ChaChaRng& rng, std::uint32_t lora_rank,
                                         double staleness_weight) {
  validate(enc, true);
  const std::vector<float> v = weighted_vector(enc, update, num_examples, train_loss, lora_rank, staleness_weight);
  const privacy::Quantizer q(enc.clip_range, enc.quant_bits);
  std::vector<std::uint32_t> ring(v.size());
  q.encode(v, ring, rng);
  if (enc.dp == protocol::DpMode::kDistributed) {
    const double mu = skellam_mu(enc);
    if (mu > 0) {
      const std::uint64_t bound = privacy::skellam_tail_bound(mu);
      q.check_capacity(std::max<std::uint32_t>(enc.num_clients, 1), bound);
      privacy::add_skellam_noise(ring, mu, rng);
    }
  }
  return ring;
}

DecodedSum decode_secure_sum(const UpdateEncoding& enc, std::span<const std::uint32_t> ring_sum) {
  if (ring_sum.size() != enc.vector_length())
    bad("the secure sum has " + std::to_string(ring_sum.size()) + " elements, expected " +
        std::to_string(enc.vector_length()));
  const privacy::Quantizer q(enc.clip_range, enc.quant_bits);
  DecodedSum out;
  out.weighted_sum.resize(enc.update_length);
  q.decode_sum(ring_sum.first(enc.update_length), out.weighted_sum);
  const double scale = q.scale();
  const auto as_real = [&](std::uint32_t r) { return static_cast<double>(static_cast<std::int32_t>(r)) / scale; };
  out.total_weight = as_real(ring_sum[enc.update_length]) / enc.clip_range;
  const double loss_sum = as_real(ring_sum[enc.update_length + 1]) * enc.loss_cap / enc.clip_range;
  out.mean_train_loss = (enc.loss_cap > 0 && enc.dp == protocol::DpMode::kNone && out.total_weight > 0)
                            ? loss_sum / out.total_weight
                            : std::numeric_limits<double>::quiet_NaN();
  for (std::uint32_t j = 0; j < enc.rank_slots; ++j)
    out.rank_weights.push_back(as_real(ring_sum[enc.update_length + 2 + j]) / enc.clip_range);
  return out;
}

}  // namespace fedge::federation
