// Renyi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov,
// Talwar, Zhang 2019), with the integer and fractional-order formulas of
// TF-Privacy / Opacus, and conversion to (epsilon, delta).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fedge::privacy {

// TF-Privacy's default orders: 1 + x/10 for x in 1..99, then 12..63.
std::vector<double> default_rdp_orders();

// RDP of one step of the sampled Gaussian mechanism at `order`: sampling rate
// q in [0, 1], noise multiplier sigma > 0, order > 1.
double rdp_sampled_gaussian(double q, double sigma, double order);

// RDP after `steps` steps, one value per order.
std::vector<double> compute_rdp(double q, double sigma, std::uint64_t steps,
                                std::span<const double> orders);

enum class RdpConversion {
  // eps = rdp - log(delta) / (order - 1) (Mironov 2017).
  kClassic,
  // eps = rdp + log1p(-1/order) - (log(delta) + log(order)) / (order - 1)
  // (Balle et al. 2020; what TF-Privacy's compute_dp_sgd_privacy and Opacus
  // report, and what gives the published 0.72422 / 1.41550 vectors).
  kImproved,
};

struct PrivacySpent {
  double epsilon = 0;
  double order = 0;  // the order that attains the minimum
};

// Minimum epsilon over orders for the given delta in (0, 1).
PrivacySpent rdp_to_epsilon(std::span<const double> orders, std::span<const double> rdp,
                            double delta, RdpConversion conversion = RdpConversion::kImproved);

// Accumulates RDP over rounds with possibly different (q, sigma).
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = default_rdp_orders());
  void step(double q, double sigma, std::uint64_t steps = 1);
  PrivacySpent spent(double delta, RdpConversion conversion = RdpConversion::kImproved) const;
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;
};

}  // namespace fedge::privacy
