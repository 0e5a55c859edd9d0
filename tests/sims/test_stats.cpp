// The confidence intervals of `fedge sim --seeds N`: Student-t quantiles
// against printed table values and closed forms, and intervals of small
// samples computed by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/sims/stats.h"

using namespace fedge::sims;

TEST_CASE("Student t quantiles match printed table values") {
  // Two-sided 95% (p = 0.975) and a few others, from standard t tables (6 decimals).
  struct Row { double p; int dof; double t; };
  const std::vector<Row> table = {
      {0.975, 1, 12.706205}, {0.975, 2, 4.302653}, {0.975, 3, 3.182446}, {0.975, 4, 2.776445},
      {0.975, 9, 2.262157},  {0.975, 30, 2.042272}, {0.995, 5, 4.032143}, {0.95, 10, 1.812461},
      {0.9, 1, 3.077684},
  };
  for (const auto& row : table) {
    INFO("p " << row.p << ", dof " << row.dof);
    CHECK(student_t_quantile(row.p, row.dof) == Approx(row.t).margin(5e-7));
    CHECK(student_t_quantile(1 - row.p, row.dof) == Approx(-row.t).margin(5e-7));
  }
  CHECK(student_t_quantile(0.5, 7) == 0.0);
  // Many degrees of freedom approach the normal's 1.959964.
  CHECK(student_t_quantile(0.975, 100000) == Approx(1.959964).margin(1e-4));
}

TEST_CASE("Student t CDF equals its closed forms for 1 and 2 degrees of freedom") {
  for (double t : {-30.0, -2.5, -0.3, 0.0, 0.7, 1.0, 4.0, 100.0}) {
    INFO("t " << t);
    CHECK(student_t_cdf(t, 1) == Approx(0.5 + std::atan(t) / M_PI).margin(1e-12));        // Cauchy
    CHECK(student_t_cdf(t, 2) == Approx(0.5 + t / (2 * std::sqrt(2 + t * t))).margin(1e-12));
  }
}

TEST_CASE("Student t quantile refuses p outside (0, 1) and dof <= 0") {
  CHECK_THROWS_AS(student_t_quantile(0.0, 3), fedge::Error);
  CHECK_THROWS_AS(student_t_quantile(1.0, 3), fedge::Error);
  CHECK_THROWS_AS(student_t_quantile(std::nan(""), 3), fedge::Error);
  CHECK_THROWS_AS(student_t_quantile(0.9, 0), fedge::Error);
}

TEST_CASE("95 percent intervals of small samples equal hand-computed values") {
  // {1, 2, 3}: mean 2, s = 1, half-width t_{0.975,2} / sqrt(3) = 4.302653 / 1.732051.
  auto a = mean_interval({1, 2, 3});
  CHECK(a.n == 3);
  CHECK(a.mean == Approx(2.0));
  CHECK(a.half_width == Approx(4.302653 / std::sqrt(3.0)).margin(1e-6));
  // {2, 4}: mean 3, s = sqrt(2), half-width t_{0.975,1} * sqrt(2) / sqrt(2) = 12.706205.
  auto b = mean_interval({2, 4});
  CHECK(b.mean == Approx(3.0));
  CHECK(b.half_width == Approx(12.706205).margin(1e-6));
  // Five values 1.5, 1.6, 1.7, 1.8, 1.9: s = 0.158114, half-width 2.776445 * 0.158114 / sqrt(5) = 0.196324.
  auto c = mean_interval({1.5, 1.6, 1.7, 1.8, 1.9});
  CHECK(c.mean == Approx(1.7));
  CHECK(c.half_width == Approx(0.196324).margin(1e-6));
  // Unmeasured values (NaN) are left out; one value has no interval; none has no mean.
  auto d = mean_interval({1, std::nan(""), 3, 2});
  CHECK(d.n == 3);
  CHECK(d.half_width == Approx(a.half_width));
  auto e = mean_interval({7.5});
  CHECK(e.mean == 7.5);
  CHECK(e.half_width == 0.0);
  CHECK(std::isnan(mean_interval({}).mean));
  // Equal values: no spread, no width.
  CHECK(mean_interval({2, 2, 2}).half_width == 0.0);
}
