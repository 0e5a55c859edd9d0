// Heterogeneous LoRA ranks (issue 18, item 4): nodes train adapters of
// different ranks r_k <= R (R: the federation's maximum, the global's rank)
// and the server combines them in one of two ways (docs/FEDERATION.md,
// "Heterogeneous ranks"):
//
// - HetLoRA (Cho et al. 2024): every node's A (r_k x in) and B (out x r_k)
//   are zero-padded to R; rank index j of the global is the weighted mean over
//   only the nodes with r_k > j (their example weights), so small-rank nodes'
//   zero padding does not dilute it. A node of rank r_k takes the first r_k
//   rows of A and columns of B of the global (truncation).
// - FlexLoRA (Bai et al. 2024): the server averages the full products
//   dW_k = s * B_k A_k (s = alpha / R, the same for every node) and hands each
//   node the best rank-r_k factors of the mean by SVD.
//
// Pure math on flat adapters laid out as training/ and federation/ lay them
// out (inference::LoraAdapter::layout()): per layer and target, A then B, each
// row-major. Every node uses the maximum rank's scaling alpha / R, so a
// truncated or zero-padded adapter computes exactly the product of its
// components. Thread-compatible; no function keeps state.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/common/param_vector.h"

namespace fedge::aggregation {

// How a federation combines adapters of different ranks ([training]
// rank_aggregation). kNone: every node trains the maximum rank.
enum class RankAggregation { kNone, kHetLora, kFlexLora };
// "none", "hetlora", "flexlora"; Error(kInvalidInput) naming the known ones.
RankAggregation parse_rank_aggregation(std::string_view name);
std::string rank_aggregation_name(RankAggregation method);

// One LoRA pair of the flat adapter at the maximum rank: A (rank x in) at
// a_offset, B (out x rank) at b_offset, both row-major.
struct LoraPair {
  std::size_t a_offset = 0, b_offset = 0;
  std::size_t in = 0, out = 0;
};

// The LoRA pairs of a flat adapter and its rank.
struct LoraLayout {
  int rank = 0;                 // R: rows of every A, columns of every B
  std::vector<LoraPair> pairs;  // in flat order
  std::size_t size = 0;         // floats of the whole flat adapter
  // Floats of the dense products sum over pairs of out * in (FlexLoRA's vector).
  std::size_t dense_size() const;
};

// Reads the pairs from a ParamLayout whose entries alternate "...lora_A..."
// (r x in) and "...lora_B..." (out x r), as LoraAdapter::layout() writes them.
// Throws Error(kInvalidInput) naming the entry that breaks the pattern or whose
// rank differs from the first pair's.
LoraLayout lora_layout(const ParamLayout& layout);
// The same adapter at rank r (1 <= r): the ParamLayout a rank-r node's adapter has.
ParamLayout layout_at_rank(const ParamLayout& layout, int r);

// The first r rows of every A and columns of every B (r <= R): a flat rank-r
// adapter. Throws Error(kInvalidInput) for r outside [1, R] or a wrong length.
std::vector<float> truncate_rank(const LoraLayout& layout, std::span<const float> full, int r);
// A flat rank-r adapter zero-padded to R (the inverse of truncate_rank on
// its image).
std::vector<float> pad_rank(const LoraLayout& layout, std::span<const float> small, int r);
// pad_rank(truncate_rank(full, r)): the rank-r part of `full` in R's layout,
// zeros beyond. What a rank-r node trains from, and the shape of its update.
std::vector<float> keep_rank(const LoraLayout& layout, std::span<const float> full, int r);

// ---- HetLoRA ----
// W_j = sum of weights[k] over the nodes with ranks[k] > j, j = 0..R-1.
std::vector<double> rank_weight_sums(int max_rank, std::span<const int> ranks, std::span<const double> weights);
// One node's rank indicator scaled by its weight: value * [rank > j], j = 0..R-1:
// the coordinates a node appends to its (secure) vector so that their sum is
// W_j scaled by `value`.
std::vector<float> rank_indicator(int max_rank, int rank, float value);
// From the (secure) sum S = sum_k w_k u_k of zero-padded updates and the
// rank-wise weights W_j: the sum a strategy turns into the rank-wise mean,
// S'_i = S_i * total / W_j(i) for the rank index j(i) of coordinate i (0 where
// W_j = 0: no node has that rank index, the global keeps it), so that
// S' / total is, for every j, the weighted mean over the nodes with rank > j.
std::vector<float> rankwise_sum(const LoraLayout& layout, std::span<const float> weighted_sum,
                                std::span<const double> rank_weights, double total);
// The plain path in one call: updates zero-padded to R (each of layout.size
// floats) with their ranks and weights -> the rank-wise weighted mean update.
// Throws Error(kInvalidInput) for mismatched lengths, a rank outside [1, R]
// or a non-positive weight.
std::vector<float> hetlora_mean(const LoraLayout& layout, std::span<const std::vector<float>> padded_updates,
                                std::span<const int> ranks, std::span<const double> weights);

// ---- FlexLoRA ----
// The dense products scaling * B A of every pair (out x in, row-major),
// end to end: layout.dense_size() floats.
std::vector<float> lora_products(const LoraLayout& layout, std::span<const float> adapter, double scaling);
// The best rank-r factors (Eckart-Young) of every dense product / scaling,
// in R's layout (zeros beyond r): with the SVD dW / s = U S V^T, B = U_r
// sqrt(S_r) and A = sqrt(S_r) V_r^T, the sign of each singular pair chosen so
// that the largest-magnitude entry of its V column is positive (the SVD's
// sign is otherwise arbitrary). A rank index whose singular value is below
// 1e-12 times the largest (or zero: the usual B = 0 start) takes A's row from
// `fallback_a` (R's layout, e.g. the initial adapter) and a zero B column, so
// the product is unchanged and training can still move that direction.
std::vector<float> flexlora_factors(const LoraLayout& layout, std::span<const float> dense, int r, double scaling,
                                    std::span<const float> fallback_a);

}  // namespace fedge::aggregation
