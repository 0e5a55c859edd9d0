#include "fedge/privacy/rdp.h"

#include <cmath>
#include <limits>
#include <string>

#include "fedge/common/error.h"

namespace fedge::privacy {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

double log_add(double a, double b) {
  if (a == kNegInf) return b;
  if (b == kNegInf) return a;
  return std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b)));
}

// log(exp(a) - exp(b)), a >= b.
double log_sub(double a, double b) {
  if (b == kNegInf) return a;
  if (a <= b) return kNegInf;  // equal (or rounding below): the difference vanishes
  return std::log(std::expm1(a - b)) + b;
}

double log_erfc(double x) {
  if (x < 25.0) return std::log(std::erfc(x));
  // Asymptotic series where erfc underflows.
  const double x2 = x * x;
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log1p(-0.5 / x2 + 0.75 / (x2 * x2));
}

double log_a_int(double q, double sigma, std::uint64_t alpha) {
  double log_a = kNegInf;
  double log_binom = 0.0;  // log C(alpha, i), updated incrementally
  for (std::uint64_t i = 0; i <= alpha; ++i) {
    if (i > 0) log_binom += std::log(static_cast<double>(alpha - i + 1)) - std::log(static_cast<double>(i));
    const double di = static_cast<double>(i);
    const double s = log_binom + di * std::log(q) + (static_cast<double>(alpha) - di) * std::log1p(-q) +
                     (di * di - di) / (2 * sigma * sigma);
    log_a = log_add(log_a, s);
  }
  return log_a;
}

double log_a_frac(double q, double sigma, double alpha) {
  double a0 = kNegInf, a1 = kNegInf;
  const double z0 = sigma * sigma * std::log(1.0 / q - 1.0) + 0.5;
  double coef = 1.0;  // generalised binomial C(alpha, i), may change sign
  for (std::uint64_t i = 0;; ++i) {
    if (i > 0) coef *= (alpha - static_cast<double>(i - 1)) / static_cast<double>(i);
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_coef = std::log(std::fabs(coef));
    const double t0 = log_coef + di * std::log(q) + j * std::log1p(-q);
    const double t1 = log_coef + j * std::log(q) + di * std::log1p(-q);
    const double e0 = std::log(0.5) + log_erfc((di - z0) / (M_SQRT2 * sigma));
    const double e1 = std::log(0.5) + log_erfc((z0 - j) / (M_SQRT2 * sigma));
    const double s0 = t0 + (di * di - di) / (2 * sigma * sigma) + e0;
    const double s1 = t1 + (j * j - j) / (2 * sigma * sigma) + e1;
    if (coef > 0) {
      a0 = log_add(a0, s0);
      a1 = log_add(a1, s1);
    } else {
      a0 = log_sub(a0, s0);
      a1 = log_sub(a1, s1);
    }
    if (std::max(s0, s1) < -30 || i > 100000) break;
  }
  return log_add(a0, a1);
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> o;
  for (int x = 1; x < 100; ++x) o.push_back(1.0 + x / 10.0);
  for (int a = 12; a < 64; ++a) o.push_back(a);
  return o;
}

double rdp_sampled_gaussian(double q, double sigma, double order) {
  if (!(q >= 0 && q <= 1)) throw Error(ErrorKind::kInvalidInput, "RDP: sampling rate must be in [0, 1]");
  if (!(sigma > 0)) throw Error(ErrorKind::kInvalidInput, "RDP: noise multiplier must be positive");
  if (!(order > 1)) throw Error(ErrorKind::kInvalidInput, "RDP: orders must be > 1");
  if (q == 0) return 0.0;
  if (q == 1) return order / (2 * sigma * sigma);
  if (std::isinf(order)) return std::numeric_limits<double>::infinity();
  const double log_a = (order == std::floor(order) && order < 1e6)
                           ? log_a_int(q, sigma, static_cast<std::uint64_t>(order))
                           : log_a_frac(q, sigma, order);
  return log_a / (order - 1);
}

std::vector<double> compute_rdp(double q, double sigma, std::uint64_t steps,
                                std::span<const double> orders) {
  std::vector<double> out;
  out.reserve(orders.size());
  for (double a : orders) out.push_back(rdp_sampled_gaussian(q, sigma, a) * static_cast<double>(steps));
  return out;
}

PrivacySpent rdp_to_epsilon(std::span<const double> orders, std::span<const double> rdp, double delta,
                            RdpConversion conversion) {
  if (orders.size() != rdp.size() || orders.empty())
    throw Error(ErrorKind::kInvalidInput, "RDP: orders and rdp values must be non-empty and the same length");
  if (!(delta > 0 && delta < 1)) throw Error(ErrorKind::kInvalidInput, "RDP: delta must be in (0, 1)");
  PrivacySpent best{std::numeric_limits<double>::infinity(), 0};
  for (std::size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i];
    double eps = conversion == RdpConversion::kClassic
                     ? rdp[i] - std::log(delta) / (a - 1)
                     : rdp[i] + std::log1p(-1.0 / a) - (std::log(delta) + std::log(a)) / (a - 1);
    if (std::isnan(eps)) continue;
    if (eps < best.epsilon) best = {std::max(eps, 0.0), a};
  }
  return best;
}

RdpAccountant::RdpAccountant(std::vector<double> orders) : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {
  for (double a : orders_)
    if (!(a > 1)) throw Error(ErrorKind::kInvalidInput, "RDP accountant: every order must be > 1");
}

void RdpAccountant::step(double q, double sigma, std::uint64_t steps) {
  const std::vector<double> r = compute_rdp(q, sigma, steps, orders_);
  for (std::size_t i = 0; i < r.size(); ++i) rdp_[i] += r[i];
}

PrivacySpent RdpAccountant::spent(double delta, RdpConversion conversion) const {
  return rdp_to_epsilon(orders_, rdp_, delta, conversion);
}

}  // namespace fedge::privacy
