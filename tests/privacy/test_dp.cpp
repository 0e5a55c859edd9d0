#include <catch2/catch.hpp>

#include <cmath>

#include "fedge/common/error.h"
#include "fedge/privacy/dp.h"
#include "fedge/privacy/rdp.h"

using namespace fedge::privacy;

namespace {
PrivacySpent dpsgd(double n, double batch, double sigma, double epochs, double delta, RdpConversion c) {
  const double q = batch / n;
  const auto steps = static_cast<std::uint64_t>(epochs * n / batch);
  const auto orders = default_rdp_orders();
  return rdp_to_epsilon(orders, compute_rdp(q, sigma, steps, orders), delta, c);
}
}  // namespace

TEST_CASE("RDP accountant reproduces the published DP-SGD vectors", "[privacy][rdp]") {
  const auto orders = default_rdp_orders();
  CHECK(orders.size() == 99 + 52);
  auto a = dpsgd(60000, 150, 1.3, 15, 1e-5, RdpConversion::kImproved);
  CHECK(a.epsilon == Approx(0.72422).margin(1e-4));
  CHECK(a.order == 19.0);
  auto b = dpsgd(100000, 100, 1.0, 30, 1e-7, RdpConversion::kImproved);
  CHECK(b.epsilon == Approx(1.41550).margin(1e-4));
  CHECK(b.order == 13.0);
  // Classic conversion (Mironov 2017), reference values from a Python port of
  // TF-Privacy's rdp_accountant with the same orders.
  auto c = dpsgd(60000, 150, 1.3, 15, 1e-5, RdpConversion::kClassic);
  CHECK(c.epsilon == Approx(0.941870567).margin(1e-6));
  CHECK(c.order == 19.0);
  auto d = dpsgd(100000, 100, 1.0, 30, 1e-7, RdpConversion::kClassic);
  CHECK(d.epsilon == Approx(1.709287337).margin(1e-6));
  CHECK(d.order == 13.0);
}

TEST_CASE("RDP edge cases and the accumulating accountant", "[privacy][rdp]") {
  CHECK(rdp_sampled_gaussian(0.0, 1.0, 2.0) == 0.0);
  CHECK(rdp_sampled_gaussian(1.0, 2.0, 3.0) == Approx(3.0 / 8.0));  // alpha / (2 sigma^2)
  // Integer and fractional paths agree near an integer order.
  CHECK(rdp_sampled_gaussian(0.01, 1.1, 4.0) ==
        Approx(rdp_sampled_gaussian(0.01, 1.1, 4.0 + 1e-9)).epsilon(1e-6));
  RdpAccountant acc;
  acc.step(150.0 / 60000, 1.3, 3000);
  acc.step(150.0 / 60000, 1.3, 3000);
  CHECK(acc.spent(1e-5).epsilon == Approx(0.72422).margin(1e-4));
  CHECK_THROWS_AS(rdp_sampled_gaussian(0.1, 0.0, 2.0), fedge::Error);
  CHECK_THROWS_AS(rdp_sampled_gaussian(1.5, 1.0, 2.0), fedge::Error);
  CHECK_THROWS_AS(acc.spent(0.0), fedge::Error);
}

TEST_CASE("L2 clipping, Gaussian and Skellam noise", "[privacy][dp]") {
  std::vector<float> u = {3.0f, 4.0f};
  CHECK(l2_clip(u, 1.0) == Approx(5.0));
  CHECK(u[0] == Approx(0.6f));
  CHECK(u[1] == Approx(0.8f));
  std::vector<float> small = {0.1f, 0.0f};
  l2_clip(small, 1.0);
  CHECK(small[0] == 0.1f);
  CHECK_THROWS_AS(l2_clip(u, 0.0), fedge::Error);

  Key32 seed{};
  ChaChaRng rng(seed);
  std::vector<float> z(50000, 0.0f);
  add_gaussian_noise(z, 2.0, rng);
  double m = 0, v = 0;
  for (float x : z) m += x;
  m /= z.size();
  for (float x : z) v += (x - m) * (x - m);
  v /= z.size();
  CHECK(m == Approx(0.0).margin(0.05));
  CHECK(v == Approx(4.0).epsilon(0.05));

  // 10 nodes' Skellam shares sum to the target variance (stddev 30 int units).
  const double mu = skellam_mu_per_node(30.0, 10);
  std::vector<std::uint32_t> sum(20000, 0);
  for (int node = 0; node < 10; ++node) {
    std::vector<std::uint32_t> ring(sum.size(), 0);
    add_skellam_noise(ring, mu, rng);
    for (std::size_t i = 0; i < ring.size(); ++i) sum[i] += ring[i];
  }
  double sm = 0, sv = 0;
  for (auto s : sum) sm += static_cast<std::int32_t>(s);
  sm /= sum.size();
  for (auto s : sum) sv += (static_cast<std::int32_t>(s) - sm) * (static_cast<std::int32_t>(s) - sm);
  sv /= sum.size();
  CHECK(sm == Approx(0.0).margin(1.0));
  CHECK(sv == Approx(900.0).epsilon(0.05));
  CHECK(skellam_tail_bound(mu) > 8 * std::sqrt(2 * mu));
}

TEST_CASE("Discrete Gaussian noise has the requested variance", "[privacy][dp]") {
  Key32 seed{};
  seed[1] = 2;
  ChaChaRng rng(seed);
  for (double sigma : {0.7, 3.0, 40.0}) {
    std::vector<std::uint32_t> ring(40000, 0);
    add_discrete_gaussian_noise(ring, sigma, rng);
    double m = 0, v = 0;
    for (auto r : ring) m += static_cast<std::int32_t>(r);
    m /= ring.size();
    for (auto r : ring) v += (static_cast<std::int32_t>(r) - m) * (static_cast<std::int32_t>(r) - m);
    v /= ring.size();
    INFO("sigma " << sigma);
    CHECK(m == Approx(0.0).margin(4 * sigma / 200));
    // For sigma >= 1 the discrete Gaussian's variance is sigma^2 to within 1e-8;
    // below 1 it is a little smaller.
    if (sigma >= 1) CHECK(v == Approx(sigma * sigma).epsilon(0.04));
    else CHECK((v > 0.3 && v < sigma * sigma * 1.04));
  }
  std::vector<std::uint32_t> none(3, 5);
  CHECK(add_discrete_gaussian_noise(none, 0.0, rng) == 0);
  CHECK(none == std::vector<std::uint32_t>(3, 5));
  CHECK_THROWS_AS(add_discrete_gaussian_noise(none, -1.0, rng), fedge::Error);
}

TEST_CASE("Adaptive clipping moves toward the target quantile", "[privacy][dp]") {
  Key32 seed{};
  ChaChaRng rng(seed);
  AdaptiveClipper c(1.0, 0.5, 0.2, 0.0);
  // All 10 clients under the clip: b = 1, C <- C * exp(-0.2 * 0.5).
  CHECK(c.update(10, 10, rng) == Approx(std::exp(-0.1)));
  // None under: C grows by exp(0.1) back to 1.
  CHECK(c.update(0, 10, rng) == Approx(1.0));
  CHECK_THROWS_AS(AdaptiveClipper(1.0, 1.5, 0.2, 0.0), fedge::Error);
  CHECK_THROWS_AS(c.update(1, 0, rng), fedge::Error);
}
