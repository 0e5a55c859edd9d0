// Differential privacy on flat updates: L2 clipping, central Gaussian noise on
// the sum, distributed Skellam noise in the integer ring (each node adds its
// share before masking so the sum carries the target variance), and adaptive
// clipping (Andrew et al. 2021, geometric update toward a target quantile).
#pragma once

#include <cstdint>
#include <span>

#include "fedge/privacy/prg.h"

namespace fedge::privacy {

// Scales `update` in place so that its L2 norm is at most `clip_norm`. Returns
// the norm before clipping. Throws Error(kInvalidInput) if clip_norm <= 0.
double l2_clip(std::span<float> update, double clip_norm);

// Adds N(0, stddev^2) to every coordinate (central DP on the aggregated sum:
// stddev = noise_multiplier * clip_norm).
void add_gaussian_noise(std::span<float> values, double stddev, ChaChaRng& rng);

// Distributed DP: each of n nodes adds Skellam noise (Poisson(mu) - Poisson(mu),
// variance 2 mu) in integer units so that the sum over n nodes has variance
// target_stddev_int^2. target_stddev_int is in quantised units
// (= noise_multiplier * clip_norm * Quantizer::scale()).
double skellam_mu_per_node(double target_stddev_int, std::uint64_t n);
// Adds Skellam(mu) to each ring element (mod 2^32; the signed decode of the sum
// removes the wrap). Returns the largest |noise| drawn, for the overflow check.
std::uint64_t add_skellam_noise(std::span<std::uint32_t> ring, double mu, ChaChaRng& rng);
// A bound on |Skellam(mu)| exceeded with probability < ~1e-12 per coordinate,
// to pass as Quantizer::check_capacity's noise_bound.
std::uint64_t skellam_tail_bound(double mu);

// Alternative distributed noise: the discrete Gaussian N_Z(0, sigma^2)
// (Canonne, Kamath, Steinke 2020, rejection from a discrete Laplace; Bernoulli
// draws use floating-point exp, so it is not a bit-exact sampler). Each of n
// nodes uses sigma_node = target_stddev_int / sqrt(n); the sum's variance is
// target^2 up to a tiny error for sigma_node >= 1 (Kairouz et al. 2021).
// Returns the largest |noise| drawn.
std::uint64_t add_discrete_gaussian_noise(std::span<std::uint32_t> ring, double sigma, ChaChaRng& rng);

// Adaptive clipping: after each round, C <- C * exp(-lr * (b - target_quantile))
// where b is the (noised) fraction of clients whose update norm was <= C.
class AdaptiveClipper {
 public:
  // Throws Error(kInvalidInput) unless clip > 0, 0 < quantile < 1, lr > 0,
  // count_stddev >= 0.
  AdaptiveClipper(double initial_clip, double target_quantile, double learning_rate,
                  double count_stddev);
  double clip() const { return clip_; }
  // Each client reports 1 if its norm was <= clip() (summed, possibly under
  // secure aggregation). Adds N(0, count_stddev^2) to the count, then updates.
  // Returns the new clip.
  double update(double unclipped_count, std::uint64_t num_clients, ChaChaRng& rng);

 private:
  double clip_, quantile_, lr_, count_stddev_;
};

}  // namespace fedge::privacy
