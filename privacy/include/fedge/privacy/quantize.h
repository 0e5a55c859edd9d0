// Quantisation of float updates into the ring Z_{2^32} used by secure
// aggregation. Signed, symmetric: x in [-clip, clip] maps to an integer in
// [-qmax, qmax] with qmax = 2^(bits-1) - 1, stored as two's-complement uint32.
//
// Overflow rule: the ring sum is decoded as a signed 32-bit integer, so it is
// exact only while |sum| <= 2^31 - 1. With n inputs each |q| <= qmax (plus an
// optional noise bound per input), we require n * (qmax + noise_bound) <= 2^31 - 1.
// check_capacity() refuses settings that break it; bits_for(n) picks the most
// bits that fit. Stochastic rounding keeps each coordinate unbiased.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

namespace fedge::privacy {

class Quantizer {
 public:
  // Throws Error(kInvalidInput) unless clip > 0 (finite) and 2 <= bits <= 32.
  Quantizer(double clip, std::uint32_t bits);

  // Largest bits such that n * (qmax + noise_bound) <= 2^31 - 1. Throws
  // Error(kPrivacy) if not even 2 bits fit (n too large for a 32-bit ring).
  static std::uint32_t bits_for(std::uint64_t n, std::uint64_t noise_bound = 0);

  // Throws Error(kPrivacy) if summing n encoded inputs (each with at most
  // `noise_bound` extra integer noise) could overflow the signed 32-bit range.
  void check_capacity(std::uint64_t n, std::uint64_t noise_bound = 0) const;

  double clip() const { return clip_; }
  std::uint32_t bits() const { return bits_; }
  std::int64_t qmax() const { return qmax_; }
  double scale() const { return static_cast<double>(qmax_) / clip_; }  // integer units per 1.0

  // Clips each x to [-clip, clip], scales and rounds stochastically: floor(v) + 1
  // with probability v - floor(v). `rng` is a UniformRandomBitGenerator (e.g.
  // ChaChaRng); NaN inputs encode as 0.
  template <class Urbg>
  void encode(std::span<const float> x, std::span<std::uint32_t> out, Urbg& rng) const;

  // Decodes a ring sum (of any number of encoded inputs) back to floats:
  // int32(sum) / scale.
  void decode_sum(std::span<const std::uint32_t> sum, std::span<float> out) const;

 private:
  void check_sizes(std::size_t a, std::size_t b) const;
  double clip_;
  std::uint32_t bits_;
  std::int64_t qmax_;
};

template <class Urbg>
void Quantizer::encode(std::span<const float> x, std::span<std::uint32_t> out, Urbg& rng) const {
  check_sizes(x.size(), out.size());
  const double s = scale();
  for (std::size_t i = 0; i < x.size(); ++i) {
    double v = static_cast<double>(x[i]);
    if (std::isnan(v)) v = 0.0;
    v = std::fmin(std::fmax(v, -clip_), clip_) * s;
    const double f = std::floor(v);
    const double u = static_cast<double>(static_cast<std::uint64_t>(rng()) >> 11) * 0x1.0p-53;
    std::int64_t q = static_cast<std::int64_t>(f) + (u < v - f ? 1 : 0);
    if (q > qmax_) q = qmax_;
    if (q < -qmax_) q = -qmax_;
    out[i] = static_cast<std::uint32_t>(q);
  }
}

}  // namespace fedge::privacy
