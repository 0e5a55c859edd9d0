#include <catch2/catch.hpp>

#include <algorithm>
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

// ---- Bulyan, the registry, the plug-in example ----

TEST_CASE("bulyan: Krum picks n - 2f updates, each coordinate averages the n - 4f nearest its median") {
  // n = 7, f = 1: theta = 5 picks, beta = 3 values per coordinate. By hand
  // (squared distances to the max(1, m - 3) closest of the m left; ties go to
  // the earlier update):
  //   left {0, -5.5, 2.5, -8.5, -8, 7, 60}: scores 149.5 109.5 200.75 202.5 180.75 450.5 14005.5 -> -5.5
  //   left {0, 2.5, -8.5, -8, 7, 60}:        119.25 136.75 193.5 174.5 294.25 9715.25         -> 0
  //   left {2.5, -8.5, -8, 7, 60}:           130.5 121.25 110.5 245.25 6115.25                 -> -8
  //   left {2.5, -8.5, 7, 60}:               20.25 121 20.25 2809 (tie: the earlier)           -> 2.5
  //   left {-8.5, 7, 60}:                    240.25 240.25 2809 (tie: the earlier)             -> -8.5
  // picked {-5.5, 0, -8, 2.5, -8.5}: median -5.5; nearest 3: -5.5, -8, -8.5;
  // mean -22/3. (The plain mean is 6.79, the median 0, the 20%-trimmed mean -0.8.)
  const std::vector<std::vector<float>> u = {{0.0F}, {-5.5F}, {2.5F}, {-8.5F}, {-8.0F}, {7.0F}, {60.0F}};
  std::vector<ClientUpdate> updates;
  for (const auto& v : u) updates.push_back({v, 1.0});
  const std::vector<float> global = {1.0F};
  auto bulyan = make_strategy("bulyan", {{"num_malicious", 1}});
  CHECK(bulyan->needs_individual_updates());
  const auto out = bulyan->aggregate(global, updates);
  REQUIRE(out.size() == 1);
  CHECK(out[0] == Approx(1.0 - 22.0 / 3.0).epsilon(1e-6));

  // n < 4f + 3 is refused, naming the bound; so is secure aggregation.
  updates.pop_back();
  CHECK_THROWS_WITH(bulyan->aggregate(global, updates), Catch::Contains("4 * num_malicious + 3"));
  CHECK_THROWS_WITH(make_strategy("bulyan", {}, true), Catch::Contains("secure aggregation"));
  CHECK_THROWS_WITH(make_strategy("bulyan", {{"num_malicious", -1}}), Catch::Contains("whole number"));
  CHECK_THROWS_WITH(make_strategy("bulyan", {{"num_malicious", 0.5}}), Catch::Contains("whole number"));
}

TEST_CASE("bulyan: with f = 0 every update is picked and it is the plain mean") {
  const std::vector<std::vector<float>> u = {{1.0F, -2.0F}, {3.0F, 4.0F}, {-1.0F, 0.5F}};
  std::vector<ClientUpdate> updates;
  for (const auto& v : u) updates.push_back({v, 1.0});
  const std::vector<float> global = {0.0F, 0.0F};
  const auto out = make_strategy("bulyan", {{"num_malicious", 0}})->aggregate(global, updates);
  CHECK(out[0] == Approx(1.0));
  CHECK(out[1] == Approx(2.5 / 3.0));
}

TEST_CASE("qfedavg: nodes weigh by loss^q as in Li et al. 2020, hand-computed") {
  // L = 1 / qffl_learning_rate = 2; u1 = [1, 0] with loss 2, u2 = [0, -1] with loss 1.
  // q = 1: step_k = F L u_k -> [4, 0] + [0, -2]; h_k = q F^(q-1) L^2 |u_k|^2 + L F
  //        -> 4 + 4 = 8 and 4 + 2 = 6; w' = [4, -2] / 14 = [2/7, -1/7].
  // q = 2: step -> [8, 0] + [0, -2]; h -> 2*2*4 + 2*4 = 24 and 2*1*4 + 2 = 10;
  //        w' = [8, -2] / 34: the node with the higher loss pulls harder.
  // q = 0: h_k = L, w' = the unweighted mean [0.5, -0.5] (example counts unused).
  const std::vector<float> u1 = {1.0F, 0.0F}, u2 = {0.0F, -1.0F};
  const std::vector<ClientUpdate> updates = {{u1, 10.0, 2.0}, {u2, 1.0, 1.0}};
  const std::vector<float> global = {0.0F, 0.0F};
  auto run = [&](double q) {
    return make_strategy("qfedavg", {{"q_param", q}, {"qffl_learning_rate", 0.5}})->aggregate(global, updates);
  };
  const auto q1 = run(1.0), q2 = run(2.0), q0 = run(0.0);
  CHECK(q1[0] == Approx(2.0 / 7.0).epsilon(1e-6));
  CHECK(q1[1] == Approx(-1.0 / 7.0).epsilon(1e-6));
  CHECK(q2[0] == Approx(8.0 / 34.0).epsilon(1e-6));
  CHECK(q2[1] == Approx(-2.0 / 34.0).epsilon(1e-6));
  CHECK(q0[0] == Approx(0.5).epsilon(1e-6));
  CHECK(q0[1] == Approx(-0.5).epsilon(1e-6));

  // It needs each node's loss: none reported, secure aggregation and bad
  // parameters are refused with the reason.
  const std::vector<ClientUpdate> no_loss = {{u1, 1.0}, {u2, 1.0}};
  CHECK_THROWS_WITH(make_strategy("qfedavg")->aggregate(global, no_loss), Catch::Contains("training loss"));
  CHECK_THROWS_WITH(make_strategy("qfedavg", {}, true), Catch::Contains("secure aggregation"));
  CHECK_THROWS_WITH(make_strategy("qfedavg", {{"q_param", -1}}), Catch::Contains("q_param"));
  CHECK_THROWS_WITH(make_strategy("qfedavg", {{"qffl_learning_rate", 0}}), Catch::Contains("qffl_learning_rate"));
}

TEST_CASE("strategy registry: every built-in and the example plug-in by name, bad names and duplicates refused") {
  const auto names = strategy_names();
  for (const char* n : {"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian",
                        "fedtrimmedavg", "krum", "bulyan", "qfedavg", "scaffold", "normclip"})
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  CHECK(std::is_sorted(names.begin(), names.end()));
  // An unknown name lists the registered ones, plug-ins included.
  CHECK_THROWS_WITH(make_strategy("fedsgd"), Catch::Contains("unknown aggregation strategy 'fedsgd'") &&
                                               Catch::Contains("normclip") && Catch::Contains("bulyan"));
  StrategyFactory plain{{}, [](const StrategyParams&) { return make_strategy("fedavg"); }, "test"};
  CHECK_THROWS_WITH(register_strategy("fedavg", plain), Catch::Contains("registered twice"));
  CHECK_THROWS_WITH(register_strategy("Bad-Name", plain), Catch::Contains("lower-case"));
  CHECK_THROWS_WITH(register_strategy("", plain), Catch::Contains("lower-case"));
  CHECK_THROWS_WITH(register_strategy(std::string(65, 'a'), plain), Catch::Contains("lower-case"));
  CHECK_THROWS_WITH(register_strategy("no_factory", StrategyFactory{}), Catch::Contains("without a make"));
  // A registration at run time works like a built-in.
  register_strategy("test_fedavg_again", plain);
  CHECK(make_strategy("test_fedavg_again")->name() == "fedavg");
  CHECK_THROWS_WITH(make_strategy("test_fedavg_again", {{"eta", 1}}), Catch::Contains("has no parameter 'eta'"));
}

TEST_CASE("normclip plug-in: updates above max_norm are scaled down before the weighted mean") {
  // Update a has norm 5 (3, 4) -> clipped to norm 1: (0.6, 0.8); b (0.3, 0)
  // is under the bound. Weights 1 and 3: mean = (0.6 + 0.9, 0.8) / 4.
  const std::vector<float> a = {3.0F, 4.0F}, b = {0.3F, 0.0F}, global = {10.0F, 20.0F};
  const std::vector<ClientUpdate> updates = {{a, 1.0}, {b, 3.0}};
  auto s = make_strategy("normclip", {{"max_norm", 1.0}});
  CHECK(s->name() == "normclip");
  const auto out = s->aggregate(global, updates);
  CHECK(out[0] == Approx(10.0 + 1.5 / 4.0));
  CHECK(out[1] == Approx(20.0 + 0.8 / 4.0));
  CHECK_THROWS_WITH(make_strategy("normclip", {{"max_norm", 0}}), Catch::Contains("max_norm must be a positive"));
  CHECK_THROWS_WITH(make_strategy("normclip", {}, true), Catch::Contains("secure aggregation"));
  const std::vector<float> sum = {1.0F, 1.0F};
  CHECK_THROWS_AS(s->aggregate_sum(global, sum, 2.0), fedge::Error);
}

TEST_CASE("scaffold: x moves by lr_g mean(dy), c by |S|/N mean(dc), from updates and from the secure sum") {
  // The global is [x ; c] = [1, 2 ; 0.5, -1]; three of N = 4 nodes send
  // [dy ; dc] with example weights 1, 1, 2:
  //   weighted sum = [1+3+0, 0-2+2 ; 2+0-2, 0+4+4] = [4, 0 ; 0, 8], total 4,
  //   mean = [1, 0 ; 0, 2]; lr_g = 0.5: x = [1.5, 2]; c += 3/4 * [0, 2] -> [0.5, 0.5].
  const std::vector<float> global = {1.0F, 2.0F, 0.5F, -1.0F};
  const std::vector<float> u1 = {1, 0, 2, 0}, u2 = {3, -2, 0, 4}, u3 = {0, 1, -1, 2};
  const std::vector<ClientUpdate> updates = {{u1, 1.0}, {u2, 1.0}, {u3, 2.0}};
  const std::vector<float> want = {1.5F, 2.0F, 0.5F, 0.5F};
  auto s = make_strategy("scaffold", {{"global_learning_rate", 0.5}, {"num_nodes", 4}}, true);
  CHECK(s->name() == "scaffold");
  CHECK_FALSE(s->needs_individual_updates());
  CHECK(s->aggregate(global, updates) == want);
  const std::vector<float> sum = {4, 0, 0, 8};
  s->set_round_participants(3);
  CHECK(s->aggregate_sum(global, sum, 4.0) == want);
  // The count is used once: a sum without it is refused, not given a stale |S|.
  CHECK_THROWS_WITH(s->aggregate_sum(global, sum, 4.0), Catch::Contains("set_round_participants"));

  // Defaults: lr_g = 1; every node in the round (|S| = N = 2): c moves by the full mean.
  // mean of u1, u2 = [2, -1 ; 1, 2] -> x = [3, 1], c = [1.5, 1].
  const std::vector<ClientUpdate> both = {{u1, 1.0}, {u2, 1.0}};
  CHECK(make_strategy("scaffold", {{"num_nodes", 2}})->aggregate(global, both) ==
        std::vector<float>{3.0F, 1.0F, 1.5F, 1.0F});
}

TEST_CASE("scaffold: refuses a missing N, more updates than nodes, an odd global and a bad learning rate") {
  const std::vector<float> global = {1.0F, 2.0F, 0.5F, -1.0F};
  const std::vector<float> u = {1, 0, 2, 0};
  const std::vector<ClientUpdate> one = {{u, 1.0}};
  CHECK_THROWS_WITH(make_strategy("scaffold")->aggregate(global, one), Catch::Contains("num_nodes"));
  const std::vector<ClientUpdate> three = {{u, 1.0}, {u, 1.0}, {u, 1.0}};
  CHECK_THROWS_WITH(make_strategy("scaffold", {{"num_nodes", 2}})->aggregate(global, three),
                    Catch::Contains("3 updates") && Catch::Contains("num_nodes = 2"));
  const std::vector<float> odd = {1, 2, 3}, odd_u = {0, 0, 0};
  const std::vector<ClientUpdate> odd_one = {{odd_u, 1.0}};
  CHECK_THROWS_WITH(make_strategy("scaffold", {{"num_nodes", 2}})->aggregate(odd, odd_one),
                    Catch::Contains("odd number"));
  CHECK_THROWS_WITH(make_strategy("scaffold", {{"global_learning_rate", 0}}), Catch::Contains("global_learning_rate"));
  CHECK_THROWS_WITH(make_strategy("scaffold", {{"num_nodes", 1.5}}), Catch::Contains("num_nodes"));
}
