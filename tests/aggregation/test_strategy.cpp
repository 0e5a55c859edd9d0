#include <catch2/catch.hpp>

#include <cmath>

#include "fedge/aggregation/strategy.h"
#include "fedge/common/error.h"

using namespace fedge::aggregation;

namespace {
const std::vector<float> kGlobal = {1.0f, 2.0f};
const std::vector<float> kU1 = {1.0f, 0.0f}, kU2 = {4.0f, 3.0f};
// Example-weighted mean update: ([1,0]*1 + [4,3]*2) / 3 = [3, 2].
std::vector<ClientUpdate> two() { return {{kU1, 1.0}, {kU2, 2.0}}; }
}  // namespace

TEST_CASE("FedAvg: example-weighted, and from a secure-aggregation sum", "[aggregation][strategy]") {
  auto s = make_strategy("fedavg");
  auto out = s->aggregate(kGlobal, two());
  CHECK(out == std::vector<float>{4.0f, 4.0f});
  const std::vector<float> sum = {9.0f, 6.0f};
  CHECK(s->aggregate_sum(kGlobal, sum, 3.0) == std::vector<float>{4.0f, 4.0f});
  const std::vector<float> wrong = {1.0f};
  std::vector<ClientUpdate> bad = {{wrong, 1.0}};
  CHECK_THROWS_AS(s->aggregate(kGlobal, bad), fedge::Error);
  CHECK_THROWS_AS(s->aggregate(kGlobal, {}), fedge::Error);
  CHECK_THROWS_AS(s->aggregate_sum(kGlobal, sum, 0.0), fedge::Error);
}

TEST_CASE("FedProx aggregates as FedAvg and carries mu", "[aggregation][strategy]") {
  auto s = make_strategy("fedprox", {{"proximal_mu", 0.1}}, true);
  CHECK(s->proximal_mu() == 0.1);
  CHECK(s->aggregate(kGlobal, two()) == std::vector<float>{4.0f, 4.0f});
  CHECK(make_strategy("fedavg")->proximal_mu() == 0.0);
  CHECK_THROWS_AS(make_strategy("fedprox", {{"proximal_mu", -1.0}}), fedge::Error);
}

TEST_CASE("FedAvgM accumulates server momentum", "[aggregation][strategy]") {
  auto s = make_strategy("fedavgm", {{"server_learning_rate", 1.0}, {"server_momentum", 0.5}});
  CHECK(s->aggregate(kGlobal, two()) == std::vector<float>{4.0f, 4.0f});  // v = -[3,2]
  auto out = s->aggregate(kGlobal, two());                                 // v = 0.5 v - [3,2] = -[4.5, 3]
  CHECK(out[0] == Approx(5.5f));
  CHECK(out[1] == Approx(5.0f));
}

TEST_CASE("FedAdam, FedYogi, FedAdagrad follow Reddi et al.", "[aggregation][strategy]") {
  // delta = [3, 2]; m = 0.1 delta; Adam v = 0.01 delta^2 -> step = eta * sign.
  auto adam = make_strategy("fedadam");
  auto a = adam->aggregate(kGlobal, two());
  CHECK(a[0] == Approx(1.1f));
  CHECK(a[1] == Approx(2.1f));
  // Yogi from v = 0: v = 0.01 delta^2 as well; tau = 1e-3 shows in the step.
  auto yogi = make_strategy("fedyogi");
  auto y = yogi->aggregate(kGlobal, two());
  CHECK(y[0] == Approx(1.0 + 0.01 * 0.3 / (0.3 + 1e-3)).epsilon(1e-6));
  CHECK(y[1] == Approx(2.0 + 0.01 * 0.2 / (0.2 + 1e-3)).epsilon(1e-6));
  // Adagrad (beta_1 = 0): m = delta, v = sum of delta^2.
  auto ada = make_strategy("fedadagrad");
  auto g1 = ada->aggregate(kGlobal, two());
  CHECK(g1[0] == Approx(1.1f));
  auto g2 = ada->aggregate(kGlobal, two());
  CHECK(g2[0] == Approx(1.0 + 0.1 / std::sqrt(2.0)));
  CHECK(g2[1] == Approx(2.0 + 0.1 / std::sqrt(2.0)));
}

TEST_CASE("FedMedian and FedTrimmedAvg", "[aggregation][strategy]") {
  const std::vector<float> zero = {0.0f, 0.0f};
  const std::vector<float> a = {1, 10}, b = {2, 20}, c = {100, -5}, d = {3, 0}, e = {4, 7};
  auto med = make_strategy("fedmedian");
  std::vector<ClientUpdate> odd = {{a, 1}, {b, 1}, {c, 1}};
  CHECK(med->aggregate(zero, odd) == std::vector<float>{2.0f, 10.0f});
  std::vector<ClientUpdate> even = {{a, 1}, {b, 1}, {c, 1}, {d, 1}};
  CHECK(med->aggregate(zero, even) == std::vector<float>{2.5f, 5.0f});
  auto trim = make_strategy("fedtrimmedavg", {{"beta", 0.2}});
  std::vector<ClientUpdate> five = {{a, 1}, {b, 1}, {c, 1}, {d, 1}, {e, 1}};
  // Column 0 sorted 1,2,3,4,100 -> mean(2,3,4) = 3; column 1: -5,0,7,10,20 -> 17/3.
  auto t = trim->aggregate(zero, five);
  CHECK(t[0] == Approx(3.0f));
  CHECK(t[1] == Approx(17.0f / 3));
}

TEST_CASE("Krum and Multi-Krum pick the central updates", "[aggregation][strategy]") {
  const std::vector<float> zero = {0.0f, 0.0f};
  const std::vector<float> a = {0, 0}, b = {1, 0}, c = {0, 1}, d = {10, 10};
  std::vector<ClientUpdate> ups = {{b, 1}, {d, 1}, {a, 1}, {c, 1}};
  // Scores (sum of 2 nearest squared distances): a 2, b 3, c 3, d 362.
  auto krum = make_strategy("krum");
  CHECK(krum->aggregate(zero, ups) == std::vector<float>{0.0f, 0.0f});
  auto multi = make_strategy("krum", {{"num_to_keep", 3}});
  auto m = multi->aggregate(zero, ups);
  CHECK(m[0] == Approx(1.0f / 3));
  CHECK(m[1] == Approx(1.0f / 3));
  auto strict = make_strategy("krum", {{"num_malicious", 2}});
  CHECK_THROWS_AS(strict->aggregate(zero, ups), fedge::Error);  // needs n >= f + 3
}

TEST_CASE("Strategy factory: names, parameters, secure aggregation", "[aggregation][strategy]") {
  for (const char* n : {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"}) {
    auto s = make_strategy(n, {}, true);
    CHECK(s->name() == n);
    CHECK_FALSE(s->needs_individual_updates());
  }
  for (const char* n : {"fedmedian", "fedtrimmedavg", "krum"}) {
    try {
      make_strategy(n, {}, true);
      FAIL("expected refusal");
    } catch (const fedge::Error& e) {
      CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
      CHECK(std::string(e.what()).find("secure aggregation") != std::string::npos);
    }
    auto s = make_strategy(n);
    const std::vector<float> sum = {1.0f, 1.0f};
    CHECK_THROWS_AS(s->aggregate_sum(kGlobal, sum, 2.0), fedge::Error);
  }
  CHECK_THROWS_AS(make_strategy("fedprox2"), fedge::Error);
  CHECK_THROWS_AS(make_strategy("fedadam", {{"etaa", 0.1}}), fedge::Error);
  CHECK_THROWS_AS(make_strategy("fedtrimmedavg", {{"beta", 0.5}}), fedge::Error);
}

TEST_CASE("Server optimisers continue exactly from a saved state", "[aggregation][strategy]") {
  const std::vector<std::vector<float>> sums = {{0.5f, -1.0f, 0.25f}, {0.1f, -0.2f, 0.7f}, {-0.3f, 0.4f, 0.05f}};
  const std::vector<float> start = {1.0f, 2.0f, -1.0f};
  for (const char* name : {"fedavgm", "fedadam", "fedyogi", "fedadagrad"}) {
    INFO(name);
    auto uninterrupted = make_strategy(name);
    CHECK(uninterrupted->keeps_state());
    CHECK(uninterrupted->state().empty());  // nothing before the first round
    std::vector<float> g = start;
    std::vector<std::vector<float>> globals;
    for (const auto& s : sums) globals.push_back(g = uninterrupted->aggregate_sum(g, s, 2.0));

    // Two rounds, "restart": a new strategy from the saved state, one more round.
    auto first = make_strategy(name);
    std::vector<float> h = first->aggregate_sum(first->aggregate_sum(start, sums[0], 2.0), sums[1], 2.0);
    const StrategyState saved = first->state();
    REQUIRE_FALSE(saved.empty());
    for (const auto& [entry, values] : saved) CHECK(values.size() == start.size());
    auto restarted = make_strategy(name);
    restarted->restore(saved);
    CHECK(restarted->aggregate_sum(h, sums[2], 2.0) == globals[2]);
    // Without the state the third step differs: the moments matter.
    auto fresh = make_strategy(name);
    CHECK(fresh->aggregate_sum(h, sums[2], 2.0) != globals[2]);
  }
}

TEST_CASE("Saved server state from another strategy or of mixed lengths is refused", "[aggregation][strategy]") {
  auto adam = make_strategy("fedadam");
  CHECK_THROWS_WITH(adam->restore({{"m", {1.0}}}), Catch::Contains("lacks its entry 'v'"));
  CHECK_THROWS_WITH(adam->restore({{"m", {1.0}}, {"v", {1.0, 2.0}}}), Catch::Contains("differ in length"));
  CHECK_THROWS_WITH(adam->restore({{"m", {1.0}}, {"v", {1.0}}, {"w", {1.0}}}), Catch::Contains("entry 'w'"));
  auto avg = make_strategy("fedavg");
  CHECK_FALSE(avg->keeps_state());
  CHECK(avg->state().empty());
  CHECK_NOTHROW(avg->restore({}));
  CHECK_THROWS_WITH(avg->restore({{"m", {1.0}}}), Catch::Contains("keeps: nothing"));
  auto momentum = make_strategy("fedavgm");
  CHECK_THROWS_WITH(momentum->restore({{"m", {1.0}}, {"v", {1.0}}}), Catch::Contains("entry 'm'"));
}
