// How a node's model update becomes the vector it contributes to a round, and
// how the coordinator turns the (secure) sum back into a weighted FedAvg step.
// Shared by the node core and the coordinator core so both sides agree on
// every scale; see docs/FEDERATION.md "Update encoding".
//
// Secure vector (d = update_length + 2 floats before quantisation), node i:
//   [0, L)  w_i * clip(update_i)        clip: L2 to the DP clip norm (DP on),
//                                        then elementwise to [-clip_range, clip_range]
//   L       w_i * clip_range             the weight, scaled into the quantiser's range
//   L + 1   w_i * clip_range * min(max(loss_i, 0), loss_cap) / loss_cap
//                                        (0 when loss_cap is 0 or DP is on)
//   L + 2 + j  w_i * clip_range * [r_i > j], j = 0..R-1, only under HetLoRA
//              (rank_slots R > 0, heterogeneous LoRA ranks: r_i is the node's
//              rank, so the sum is each rank index's weight W_j; see
//              aggregation/lora_ranks.h)
// with w_i = min(num_examples_i, example_scale) / example_scale in [0, 1], so every
// coordinate lies in [-clip_range, clip_range] and the quantiser (clip = clip_range)
// never saturates. Distributed DP adds Skellam noise to the quantised ring vector.
//
// The coordinator decodes the ring sum into sum_i w_i u_i, sum_i w_i and
// sum_i w_i loss_i, i.e. the example-weighted mean update and mean train loss,
// without seeing any single node's values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fedge/privacy/prg.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

// The default mask PRG of federation rounds; the round plan carries the one a
// round uses (secagg.prg). ChaCha20 runs on every CPU; AES-256-CTR needs AES-NI
// on every party (edge devices may lack it) although it makes the server's mask
// removal about 3x faster here (docs/PERFORMANCE.md).
inline constexpr privacy::PrgKind kFederationPrg = privacy::PrgKind::kChaCha20;

// The largest LoRA rank HetLoRA's rank-wise weights are carried for.
inline constexpr std::uint32_t kMaxRankSlots = 1024;

struct UpdateEncoding {
  std::uint64_t update_length = 0;  // L: floats of the flattened update
  double clip_range = 0;            // elementwise bound and quantiser range (> 0)
  std::uint32_t quant_bits = 0;     // 2..32; 0 only for the plain (float) path
  std::uint64_t example_scale = 1;  // weight denominator (>= 1)
  double loss_cap = 0;              // train losses clamp to [0, loss_cap]; 0 = not reported
  protocol::DpMode dp = protocol::DpMode::kNone;  // the round plan's DP mode
  double dp_clip_norm = 0;          // L2 clip of the update when dp != kNone (> 0)
  double noise_multiplier = 0;      // sigma; noise stddev = sigma * dp_clip_norm
  std::uint32_t num_clients = 0;    // n of the round: inputs the ring must hold without overflow
  // t_min of the round: the fewest survivors it may finish with (its SecAgg
  // threshold; wire::update_encoding(plan) reads it). Each node adds 1/t_min of the target
  // noise variance, so any set of survivors that can finish carries at least
  // the target. 0 = not known: split over aggregation::kMinSurvivors (3), the
  // fewest any secure round may finish with (safe, noisier than needed).
  std::uint32_t min_survivors = 0;
  // HetLoRA: the maximum LoRA rank R, one rank-wise weight coordinate per rank
  // index after the two above; 0 = every node has the global's rank (the
  // vector stays L + 2). A secure plan's vectorLength carries it (wire.h).
  std::uint32_t rank_slots = 0;
  std::uint64_t vector_length() const { return update_length + 2 + rank_slots; }
};

// Throws Error(kInvalidInput) naming the field for any inconsistent setting.
// `secure`: quant_bits and (for distributed DP) num_clients must be set too,
// and min_survivors may not exceed num_clients.
void validate(const UpdateEncoding& enc, bool secure);

// w = min(num_examples, example_scale) / example_scale. Throws
// Error(kInvalidInput) for num_examples = 0 (a node without data must not take part).
double node_weight(std::uint64_t num_examples, std::uint64_t example_scale);

// What one node's self-reported example count may weigh (issue 16, finding 6):
// counts above max_examples count as max_examples, and no node's weight is
// more than max_share of the total weight of the nodes it is computed over.
struct WeightCaps {
  std::uint64_t max_examples = 1'000'000;
  double max_share = 0.5;  // in (0, 1]; 1 = no share cap (plain FedAvg weights)
};

// The example_scale S that enforces `caps` on nodes with `counts` (each >= 1):
// weights w_i = min(c_i, S) / S with c_i = min(count_i, max_examples). S is the
// largest value at which max_i min(c_i, S) / sum_j min(c_j, S) <= max_share,
// so a node with more data than the share allows counts as S (water-filling);
// when max_share < 1/n no S can satisfy it and every node weighs the same
// (S = the smallest count). Without a binding cap, S is the largest count.
// Throws Error(kInvalidInput) for no counts, a zero count or a cap outside range.
std::uint64_t capped_example_scale(std::span<const std::uint64_t> counts, const WeightCaps& caps);

// Clips a copy of `update` (L2 to dp_clip_norm when DP is on, then elementwise
// to clip_range). Throws Error(kInvalidInput) for a wrong length or a
// non-finite value (a diverged training run must not poison the sum).
std::vector<float> clip_update(const UpdateEncoding& enc, std::span<const float> update);

// The float form of the secure vector above (vector_length() values), before
// quantisation. `lora_rank`: the node's rank under HetLoRA (update zero-padded
// to rank_slots; 0 = rank_slots); Error(kInvalidInput) above rank_slots.
// `staleness_weight` (FedBuff, aggregation/fedbuff.h: w(s_i) in (0, 1]) multiplies
// w_i, so the sum carries sum_i w(s_i) w_i u_i and its weight sum_i w(s_i) w_i;
// 1 (synchronous rounds) leaves every value exactly as without it. Throws
// Error(kInvalidInput) for a staleness weight outside (0, 1].
std::vector<float> weighted_vector(const UpdateEncoding& enc, std::span<const float> update,
                                   std::uint64_t num_examples, double train_loss, std::uint32_t lora_rank = 0,
                                   double staleness_weight = 1.0);

// Node side of a secure round: weighted_vector, quantised with stochastic
// rounding, plus Skellam noise under distributed DP. Throws like the above, and
// Error(kPrivacy) when the ring could overflow (Quantizer::check_capacity).
std::vector<std::uint32_t> encode_secure(const UpdateEncoding& enc, std::span<const float> update,
                                         std::uint64_t num_examples, double train_loss,
                                         privacy::ChaChaRng& rng, std::uint32_t lora_rank = 0,
                                         double staleness_weight = 1.0);

// What the coordinator learns from a ring sum.
struct DecodedSum {
  std::vector<float> weighted_sum;  // sum_i w_i u_i (L floats)
  double total_weight = 0;          // sum_i w_i (>= 0 up to noise)
  double mean_train_loss = 0;       // sum_i w_i loss_i / sum_i w_i; NaN when not reported
  std::vector<double> rank_weights; // HetLoRA: W_j = sum of w_i over r_i > j (rank_slots values)
};
// Throws Error(kInvalidInput) for a sum of the wrong length.
DecodedSum decode_secure_sum(const UpdateEncoding& enc, std::span<const std::uint32_t> ring_sum);

// One node's Skellam parameter under distributed DP: variance 2 mu =
// target^2 / t_min in quantised units (target = sigma * clip * scale),
// and its per-input bound; used by the coordinator to pick
// quant_bits/noise_bound and by nodes to draw.
double skellam_mu(const UpdateEncoding& enc);
std::uint64_t skellam_noise_bound(const UpdateEncoding& enc);

// The noise multiplier the distributed noise of `survivors` inputs really
// amounts to: sqrt(survivors * 2 mu) / (dp_clip_norm * scale), i.e.
// noise_multiplier * sqrt(survivors / t_min). What a round is
// charged: more than the target when more than t_min survive, less (never
// the target) if fewer did. 0 without distributed DP.
double distributed_noise_multiplier(const UpdateEncoding& enc, std::size_t survivors);

// Most quantisation bits for n inputs such that the ring cannot overflow,
// including the distributed-DP noise bound at that many bits (the bound
// scales with the quantiser, so it walks down from bits_for(n)). Sets enc's
// quant_bits; returns the noise bound to announce (0 without distributed DP).
// Throws Error(kPrivacy) when nothing fits.
std::uint64_t choose_quant_bits(UpdateEncoding& enc, std::uint64_t n);

}  // namespace fedge::federation
