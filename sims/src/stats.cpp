// Student's t distribution through the regularized incomplete beta function
// (continued fraction, Lentz's method), and its quantile by bisection: exact
// to double rounding for the few calls a report makes, with no table to drift.
#include "fedge/sims/stats.h"

#include <cmath>
#include <limits>

#include "fedge/common/error.h"

namespace fedge::sims {
namespace {

// The continued fraction of I_x(a, b), valid (fast) for x < (a + 1) / (a + b + 2).
double beta_continued_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEps = 1e-16;
  double c = 1, d = 1 - (a + b) * x / (a + 1);
  if (std::abs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
    for (int step = 0; step < 2; ++step) {
      d = 1 + aa * d;
      if (std::abs(d) < kTiny) d = kTiny;
      c = 1 + aa / c;
      if (std::abs(c) < kTiny) c = kTiny;
      d = 1 / d;
      const double delta = c * d;
      h *= delta;
      if (step == 1 && std::abs(delta - 1) < kEps) return h;
      aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
    }
  }
  return h;  // converged to double precision long before for any dof a report uses
}

// I_x(a, b), the regularized incomplete beta function.
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double log_front = std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x);
  const double front = std::exp(log_front);
  if (x < (a + 1) / (a + b + 2)) return front * beta_continued_fraction(a, b, x) / a;
  return 1 - front * beta_continued_fraction(b, a, 1 - x) / b;
}

}  // namespace

double student_t_cdf(double t, double dof) {
  if (!(dof > 0)) throw Error(ErrorKind::kInvalidInput, "student_t_cdf: degrees of freedom must be > 0");
  // P(|T| > |t|) = I_{dof/(dof+t^2)}(dof/2, 1/2).
  const double tail = 0.5 * incomplete_beta(dof / 2, 0.5, dof / (dof + t * t));
  return t >= 0 ? 1 - tail : tail;
}

double student_t_quantile(double p, double dof) {
  if (!(p > 0 && p < 1)) throw Error(ErrorKind::kInvalidInput, "student_t_quantile: p must be in (0, 1)");
  if (!(dof > 0)) throw Error(ErrorKind::kInvalidInput, "student_t_quantile: degrees of freedom must be > 0");
  if (p == 0.5) return 0;
  if (p < 0.5) return -student_t_quantile(1 - p, dof);
  // The CDF is increasing: bracket, then bisect to the last bit.
  double lo = 0, hi = 1;
  while (student_t_cdf(hi, dof) < p) lo = hi, hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 4 * std::numeric_limits<double>::epsilon() * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_cdf(mid, dof) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

MeanInterval mean_interval(const std::vector<double>& values, double level) {
  if (!(level > 0 && level < 1)) throw Error(ErrorKind::kInvalidInput, "mean_interval: level must be in (0, 1)");
  MeanInterval out;
  double sum = 0;
  for (double v : values) {
    if (!std::isnan(v)) sum += v, ++out.n;
  }
  if (out.n == 0) {
    out.mean = std::nan("");
    return out;
  }
  out.mean = sum / out.n;
  if (out.n < 2) return out;
  double squares = 0;
  for (double v : values) {
    if (!std::isnan(v)) squares += (v - out.mean) * (v - out.mean);
  }
  const double sd = std::sqrt(squares / (out.n - 1));
  out.half_width = student_t_quantile(0.5 + level / 2, out.n - 1) * sd / std::sqrt(static_cast<double>(out.n));
  return out;
}

}  // namespace fedge::sims
