// FedBuff (aggregation/fedbuff.h): staleness weights, buffer sums and the
// server step against hand-computed values, and refusal of bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "fedge/aggregation/fedbuff.h"
#include "fedge/common/error.h"

using namespace fedge::aggregation;

TEST_CASE("FedBuff staleness weight is (1 + s)^-a", "[aggregation][fedbuff]") {
  CHECK(staleness_weight(0) == 1.0);
  CHECK(staleness_weight(3) == 0.5);    // 1 / sqrt(4)
  CHECK(staleness_weight(15) == 0.25);  // 1 / sqrt(16)
  CHECK(staleness_weight(1, 1.0) == 0.5);
  CHECK(staleness_weight(3, 2.0) == 1.0 / 16.0);
  CHECK(staleness_weight(99, 0.0) == 1.0);  // exponent 0: no discount
  CHECK(staleness_weight(2) == Approx(1.0 / std::sqrt(3.0)).epsilon(1e-15));
  CHECK_THROWS_AS(staleness_weight(1, -0.5), fedge::Error);
  CHECK_THROWS_AS(staleness_weight(1, std::nan("")), fedge::Error);
}

TEST_CASE("FedBuff buffer: staleness- and example-weighted sums, hand-computed", "[aggregation][fedbuff]") {
  FedBuffBuffer buf(3, 2, StalenessPolicy{0.5, 10});
  // Server at version 15. Update a from version 15 (s 0, w 1), b from 12 (s 3,
  // w 1/2), c from 0 (s 15 > max 10: dropped), d from 10 (s 5, w 1/sqrt(6)).
  const std::vector<float> a = {1, 2}, b = {4, -8}, c = {100, 100}, d = {2, 2};
  CHECK(buf.add(a, 2.0, 15, 15));   // weight 1 * 2 = 2
  CHECK(buf.add(b, 4.0, 12, 15));   // weight 1/2 * 4 = 2
  CHECK_FALSE(buf.add(c, 1.0, 0, 15));  // staleness 15 > max 10: not buffered
  CHECK(buf.size() == 2);
  CHECK_FALSE(buf.full());
  CHECK(buf.add(d, 8.0, 10, 15));  // weight 8 / sqrt(6)
  CHECK(buf.full());
  CHECK_THROWS_AS(buf.add(a, 1.0, 15, 15), fedge::Error);  // full
  const double wd = 8.0 / std::sqrt(6.0);
  auto sum = buf.take();
  CHECK(sum.updates == 3);
  CHECK(sum.total_weight == Approx(4.0 + wd).epsilon(1e-15));
  // S = 2 * [1, 2] + 2 * [4, -8] + wd * [2, 2] = [10 + 2 wd, -12 + 2 wd].
  CHECK(sum.weighted_sum[0] == Approx(10.0 + 2 * wd).epsilon(1e-15));
  CHECK(sum.weighted_sum[1] == Approx(-12.0 + 2 * wd).epsilon(1e-15));
  CHECK(buf.size() == 0);  // take() empties it
  CHECK_THROWS_AS(buf.take(), fedge::Error);
}

TEST_CASE("FedBuff buffer sums are exact on dyadic inputs and the server step is eta times their mean",
          "[aggregation][fedbuff]") {
  FedBuffBuffer buf(2, 3, StalenessPolicy{});
  const std::vector<float> u1 = {8, -4, 0}, u2 = {16, 8, -4};
  REQUIRE(buf.add(u1, 3.0, 7, 7));   // w 1 * 3
  REQUIRE(buf.add(u2, 2.0, 4, 7));   // w 1/2 * 2 = 1
  auto s = buf.take();
  CHECK(s.total_weight == 4.0);
  CHECK(s.weighted_sum == std::vector<double>{40, -4, -4});  // 3 u1 + u2
  const std::vector<float> global = {1, 1, 1};
  // global + 0.5 * S / 4 = [1 + 5, 1 - 0.5, 1 - 0.5]
  CHECK(fedbuff_step(global, s.weighted_sum, s.total_weight, 0.5) == std::vector<float>{6, 0.5f, 0.5f});
  const std::vector<float> as_float = {40, -4, -4};
  CHECK(fedbuff_step(global, as_float, 4.0, 1.0) == std::vector<float>{11, 0, 0});
}

TEST_CASE("FedBuff refuses bad input with clear errors", "[aggregation][fedbuff]") {
  CHECK_THROWS_WITH(FedBuffBuffer(0, 2, {}), Catch::Contains("buffer_size"));
  CHECK_THROWS_WITH(FedBuffBuffer(2, 0, {}), Catch::Contains("update length"));
  CHECK_THROWS_WITH(FedBuffBuffer(2, 2, StalenessPolicy{-1.0, 3}), Catch::Contains("exponent"));
  FedBuffBuffer buf(2, 2, {});
  const std::vector<float> ok = {1, 2}, short_one = {1}, nan_one = {1, std::nanf("")};
  CHECK_THROWS_WITH(buf.add(short_one, 1, 0, 0), Catch::Contains("1 values"));
  CHECK_THROWS_WITH(buf.add(nan_one, 1, 0, 0), Catch::Contains("index 1"));
  CHECK_THROWS_WITH(buf.add(ok, 0, 0, 0), Catch::Contains("num_examples"));
  CHECK_THROWS_WITH(buf.add(ok, 1, 5, 4), Catch::Contains("version 5"));
  CHECK(buf.size() == 0);  // nothing was buffered by the refused calls
  const std::vector<float> g = {0, 0};
  const std::vector<double> sum = {1, 1};
  CHECK_THROWS_WITH(fedbuff_step(g, sum, 0.0, 1.0), Catch::Contains("total weight"));
  CHECK_THROWS_WITH(fedbuff_step(g, sum, 1.0, 0.0), Catch::Contains("server_lr"));
  const std::vector<double> long_sum = {1, 1, 1};
  CHECK_THROWS_WITH(fedbuff_step(g, long_sum, 1.0, 1.0), Catch::Contains("3 values"));
}
