#include "fedge/privacy/dp.h"

#include <cmath>
#include <random>
#include <string>

#include "fedge/common/error.h"

namespace fedge::privacy {

double l2_clip(std::span<float> update, double clip_norm) {
  if (!(clip_norm > 0.0)) throw Error(ErrorKind::kInvalidInput, "l2_clip: clip norm must be positive");
  double ss = 0.0;
  for (float v : update) ss += static_cast<double>(v) * v;
  const double norm = std::sqrt(ss);
  if (norm > clip_norm) {
    const float f = static_cast<float>(clip_norm / norm);
    for (float& v : update) v *= f;
  }
  return norm;
}

void add_gaussian_noise(std::span<float> values, double stddev, ChaChaRng& rng) {
  if (!(stddev >= 0.0)) throw Error(ErrorKind::kInvalidInput, "Gaussian noise stddev must be >= 0");
  if (stddev == 0.0) return;
  std::normal_distribution<double> dist(0.0, stddev);
  for (float& v : values) v = static_cast<float>(v + dist(rng));
}

double skellam_mu_per_node(double target_stddev_int, std::uint64_t n) {
  if (!(target_stddev_int >= 0.0) || n == 0)
    throw Error(ErrorKind::kInvalidInput, "Skellam: need stddev >= 0 and at least one node");
  // Sum of n Skellam(mu) is Skellam(n mu) with variance 2 n mu.
  return target_stddev_int * target_stddev_int / (2.0 * static_cast<double>(n));
}

std::uint64_t add_skellam_noise(std::span<std::uint32_t> ring, double mu, ChaChaRng& rng) {
  if (!(mu >= 0.0)) throw Error(ErrorKind::kInvalidInput, "Skellam mu must be >= 0");
  if (mu == 0.0) return 0;
  std::poisson_distribution<std::int64_t> pois(mu);
  std::uint64_t worst = 0;
  for (std::uint32_t& r : ring) {
    const std::int64_t z = pois(rng) - pois(rng);
    r += static_cast<std::uint32_t>(z);
    worst = std::max<std::uint64_t>(worst, static_cast<std::uint64_t>(z < 0 ? -z : z));
  }
  return worst;
}

std::uint64_t skellam_tail_bound(double mu) {
  // Skellam(mu) is sub-exponential with stddev sqrt(2 mu); 8 stddev plus a
  // constant for small mu keeps the tail below ~1e-12.
  return static_cast<std::uint64_t>(std::ceil(8.0 * std::sqrt(2.0 * mu) + 16.0));
}

namespace {

bool bernoulli_exp(double x, ChaChaRng& rng) { return rng.uniform() < std::exp(-x); }

// Discrete Laplace with integer scale t: P(y) proportional to exp(-|y| / t).
std::int64_t discrete_laplace(std::int64_t t, ChaChaRng& rng) {
  for (;;) {
    const auto u = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(t));  // t << 2^64: bias negligible
    if (!bernoulli_exp(static_cast<double>(u) / static_cast<double>(t), rng)) continue;
    std::int64_t v = 0;
    while (bernoulli_exp(1.0, rng)) ++v;
    const std::int64_t y = u + t * v;
    const bool negative = rng() & 1;
    if (negative && y == 0) continue;
    return negative ? -y : y;
  }
}

}  // namespace

std::uint64_t add_discrete_gaussian_noise(std::span<std::uint32_t> ring, double sigma, ChaChaRng& rng) {
  if (!(sigma >= 0.0) || !std::isfinite(sigma))
    throw Error(ErrorKind::kInvalidInput, "discrete Gaussian sigma must be a finite number >= 0");
  if (sigma == 0.0) return 0;
  const auto t = static_cast<std::int64_t>(std::floor(sigma)) + 1;
  const double s2 = sigma * sigma;
  std::uint64_t worst = 0;
  for (std::uint32_t& r : ring) {
    std::int64_t y;
    for (;;) {
      y = discrete_laplace(t, rng);
      const double d = std::fabs(static_cast<double>(y)) - s2 / static_cast<double>(t);
      if (bernoulli_exp(d * d / (2 * s2), rng)) break;
    }
    r += static_cast<std::uint32_t>(y);
    worst = std::max<std::uint64_t>(worst, static_cast<std::uint64_t>(y < 0 ? -y : y));
  }
  return worst;
}

AdaptiveClipper::AdaptiveClipper(double initial_clip, double target_quantile, double learning_rate,
                                 double count_stddev)
    : clip_(initial_clip), quantile_(target_quantile), lr_(learning_rate), count_stddev_(count_stddev) {
  if (!(initial_clip > 0) || !(target_quantile > 0 && target_quantile < 1) || !(learning_rate > 0) ||
      !(count_stddev >= 0))
    throw Error(ErrorKind::kInvalidInput,
                "adaptive clipping needs clip > 0, 0 < target_quantile < 1, learning_rate > 0, "
                "count_stddev >= 0");
}

double AdaptiveClipper::update(double unclipped_count, std::uint64_t num_clients, ChaChaRng& rng) {
  if (num_clients == 0) throw Error(ErrorKind::kInvalidInput, "adaptive clipping: no clients this round");
  double noisy = unclipped_count;
  if (count_stddev_ > 0) noisy += std::normal_distribution<double>(0.0, count_stddev_)(rng);
  const double frac = noisy / static_cast<double>(num_clients);
  clip_ *= std::exp(-lr_ * (frac - quantile_));
  return clip_;
}

}  // namespace fedge::privacy
