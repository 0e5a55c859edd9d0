// Confidence intervals over seeds: `fedge sim --seeds N` reports each metric
// as mean ± the half-width of its 95% Student-t interval (docs/SIMULATOR.md,
// "Seeds and confidence intervals").
#pragma once

#include <vector>

namespace fedge::sims {

// P(T <= t) for Student's t with `dof` > 0 degrees of freedom.
double student_t_cdf(double t, double dof);

// The t with P(T <= t) = p, 0 < p < 1 (e.g. p = 0.975 for a two-sided 95%
// interval). Throws fedge::Error for p outside (0, 1) or dof <= 0.
double student_t_quantile(double p, double dof);

struct MeanInterval {
  double mean = 0;
  double half_width = 0;  // of the two-sided interval; 0 with one value
  int n = 0;
};

// Mean and two-sided `level` (default 95%) confidence half-width of the mean:
// t_{(1+level)/2, n-1} * s / sqrt(n), s the sample standard deviation (n - 1
// in its denominator). NaN values (not measured) are left out; with no value
// the mean is NaN.
MeanInterval mean_interval(const std::vector<double>& values, double level = 0.95);

}  // namespace fedge::sims
