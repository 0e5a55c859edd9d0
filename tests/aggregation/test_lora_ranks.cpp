#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/common/error.h"

using namespace fedge::aggregation;
using fedge::ParamLayout;

namespace {

// One LoRA pair per (in, out), all of rank r, named as LoraAdapter names them.
ParamLayout pairs(int r, const std::vector<std::pair<int, int>>& shapes) {
  ParamLayout l;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const std::string base = "layers." + std::to_string(i) + ".q_proj.lora_";
    l.add(base + "A.weight", {r, shapes[i].first});
    l.add(base + "B.weight", {shapes[i].second, r});
  }
  return l;
}

}  // namespace

TEST_CASE("lora_layout reads the A/B pairs and refuses other layouts", "[aggregation][lora_ranks]") {
  const auto layout = lora_layout(pairs(2, {{3, 2}, {2, 4}}));
  CHECK(layout.rank == 2);
  REQUIRE(layout.pairs.size() == 2);
  CHECK(layout.pairs[1].a_offset == 10);
  CHECK(layout.pairs[1].b_offset == 14);
  CHECK(layout.size == 22);
  CHECK(layout.dense_size() == 3 * 2 + 2 * 4);
  ParamLayout odd;
  odd.add("x.lora_A.weight", {2, 3});
  odd.add("x.lora_B.weight", {2, 1});
  CHECK_THROWS_WITH(lora_layout(odd), Catch::Contains("x.lora_B.weight") && Catch::Contains("rank 1"));
  ParamLayout swapped;
  swapped.add("x.lora_B.weight", {2, 2});
  swapped.add("x.lora_A.weight", {2, 2});
  CHECK_THROWS_AS(lora_layout(swapped), fedge::Error);
  const auto small = layout_at_rank(pairs(2, {{3, 2}}), 1);
  CHECK(small == pairs(1, {{3, 2}}));
}

TEST_CASE("truncate_rank keeps A's first rows and B's first columns, pad_rank puts them back", "[aggregation][lora_ranks]") {
  // A = [[1,2,3],[4,5,6]] (2 x 3), B = [[7,8],[9,10]] (2 x 2); a second pair 11..18.
  const auto layout = lora_layout(pairs(2, {{3, 2}, {1, 3}}));
  std::vector<float> full(18);
  for (std::size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(i + 1);
  // Second pair: A = [[11],[12]], B = [[13,14],[15,16],[17,18]].
  const std::vector<float> r1 = {1, 2, 3, 7, 9, 11, 13, 15, 17};
  CHECK(truncate_rank(layout, full, 1) == r1);
  CHECK(pad_rank(layout, r1, 1) ==
        std::vector<float>{1, 2, 3, 0, 0, 0, 7, 0, 9, 0, 11, 0, 13, 0, 15, 0, 17, 0});
  CHECK(keep_rank(layout, full, 2) == full);
  CHECK_THROWS_WITH(truncate_rank(layout, full, 3), Catch::Contains("rank 3") && Catch::Contains("[1, 2]"));
  CHECK_THROWS_WITH(truncate_rank(layout, full, 0), Catch::Contains("rank 0"));
  CHECK_THROWS_AS(pad_rank(layout, full, 1), fedge::Error);
}

TEST_CASE("HetLoRA: rank-wise weighted mean equals the hand-computed padded result", "[aggregation][lora_ranks]") {
  // One 2x2 pair, R = 2. Node 1: rank 1, weight 1; node 2: rank 2, weight 3.
  // Node 1 (padded): A = [[4,8],[0,0]], B = [[2,0],[6,0]].
  // Node 2:          A = [[0,4],[2,2]], B = [[2,4],[-2,8]].
  // Rank 0 (both, W_0 = 4): A row 0 = (1*[4,8] + 3*[0,4]) / 4 = [1,5];
  //                         B col 0 = (1*[2,6] + 3*[2,-2]) / 4 = [2,0].
  // Rank 1 (node 2 only, W_1 = 3): A row 1 = [2,2], B col 1 = [4,8],
  // not 3/4 of them as a plain FedAvg over the zero padding would give.
  const auto layout = lora_layout(pairs(2, {{2, 2}}));
  const std::vector<std::vector<float>> ups = {{4, 8, 0, 0, 2, 0, 6, 0}, {0, 4, 2, 2, 2, 4, -2, 8}};
  const std::vector<int> ranks = {1, 2};
  const std::vector<double> weights = {1, 3};
  const std::vector<float> expected = {1, 5, 2, 2, 2, 4, 0, 8};
  CHECK(hetlora_mean(layout, ups, ranks, weights) == expected);
  CHECK(rank_weight_sums(2, ranks, weights) == std::vector<double>{4, 3});

  // The secure path's form: the weighted sum and the summed rank indicators.
  std::vector<float> sum(8, 0.0F);
  std::vector<float> indicators(2, 0.0F);
  for (std::size_t k = 0; k < 2; ++k) {
    for (std::size_t i = 0; i < 8; ++i) sum[i] += static_cast<float>(weights[k]) * ups[k][i];
    auto ind = rank_indicator(2, ranks[k], static_cast<float>(weights[k]));
    for (std::size_t j = 0; j < 2; ++j) indicators[j] += ind[j];
  }
  CHECK(indicators == std::vector<float>{4, 3});
  const std::vector<double> w(indicators.begin(), indicators.end());
  auto fedavg = make_strategy("fedavg");
  const std::vector<float> global = {10, 10, 10, 10, 10, 10, 10, 10};
  auto next = fedavg->aggregate_sum(global, rankwise_sum(layout, sum, w, 4.0), 4.0);
  for (std::size_t i = 0; i < 8; ++i) CHECK(next[i] == Approx(10.0 + expected[i]).margin(1e-6));
  // No node of rank 2: the global's second components stay.
  auto only_small = rankwise_sum(layout, std::vector<float>{4, 8, 0, 0, 2, 0, 6, 0}, std::vector<double>{1, 0}, 1.0);
  CHECK(only_small == std::vector<float>{4, 8, 0, 0, 2, 0, 6, 0});

  CHECK_THROWS_WITH(hetlora_mean(layout, ups, std::vector<int>{1, 3}, weights), Catch::Contains("rank 3"));
  CHECK_THROWS_WITH(hetlora_mean(layout, ups, ranks, std::vector<double>{1, 0}), Catch::Contains("weight 0"));
  CHECK_THROWS_AS(rank_indicator(2, 0, 1.0F), fedge::Error);
}

TEST_CASE("FlexLoRA: products, their mean and its SVD factors match the hand-computed result", "[aggregation][lora_ranks]") {
  // One pair, in = 2, out = 3, R = 2.
  const auto layout = lora_layout(pairs(2, {{2, 3}}));
  // A = [[1,1],[0,0]], B = [[0,0],[2,0],[0,0]]: s * B A = 2 * [[0,0],[2,2],[0,0]].
  const std::vector<float> adapter = {1, 1, 0, 0, 0, 0, 2, 0, 0, 0};
  CHECK(lora_products(layout, adapter, 2.0) == std::vector<float>{0, 0, 4, 4, 0, 0});

  // Mean product dW = [[0,4],[6,0],[0,0]] at scaling s = 2, so dW / s =
  // [[0,2],[3,0],[0,0]] = 3 e2 e1^T + 2 e1 e2^T: singular values 3 and 2.
  // Rank 1: B = sqrt(3) e2 (column), A = sqrt(3) e1^T.
  // Rank 2: plus B col 1 = sqrt(2) e1, A row 1 = sqrt(2) e2^T.
  const std::vector<float> dense = {0, 4, 6, 0, 0, 0};
  const std::vector<float> fallback(10, 0.25F);
  const float r3 = std::sqrt(3.0F), r2 = std::sqrt(2.0F);
  const std::vector<float> rank1 = {r3, 0, 0, 0, 0, 0, r3, 0, 0, 0};
  const std::vector<float> rank2 = {r3, 0, 0, r2, 0, r2, r3, 0, 0, 0};
  auto f1 = flexlora_factors(layout, dense, 1, 2.0, fallback);
  auto f2 = flexlora_factors(layout, dense, 2, 2.0, fallback);
  for (std::size_t i = 0; i < 10; ++i) {
    CHECK(f1[i] == Approx(rank1[i]).margin(1e-6));
    CHECK(f2[i] == Approx(rank2[i]).margin(1e-6));
  }
  // The full-rank factors reproduce the product.
  auto back = lora_products(layout, f2, 2.0);
  for (std::size_t i = 0; i < 6; ++i) CHECK(back[i] == Approx(dense[i]).margin(1e-5));

  // A rank-1 mean [[1,1],[1,1],[0,0]] (s = 1): sigma 2, u = [1,1,0]/sqrt2,
  // v = [1,1]/sqrt2, so B = [1,1,0], A = [1,1]; the second direction has
  // singular value 0: A's row from the fallback, B's column zero.
  auto g = flexlora_factors(layout, std::vector<float>{1, 1, 1, 1, 0, 0}, 2, 1.0, fallback);
  const std::vector<float> want = {1, 1, 0.25F, 0.25F, 1, 0, 1, 0, 0, 0};
  for (std::size_t i = 0; i < 10; ++i) CHECK(g[i] == Approx(want[i]).margin(1e-6));
  // The usual start (B = 0): nothing but the fallback A.
  auto zero = flexlora_factors(layout, std::vector<float>(6, 0.0F), 2, 1.0, fallback);
  CHECK(zero == std::vector<float>{0.25F, 0.25F, 0.25F, 0.25F, 0, 0, 0, 0, 0, 0});
  CHECK_THROWS_WITH(flexlora_factors(layout, dense, 3, 1.0, fallback), Catch::Contains("rank 3"));
  CHECK_THROWS_AS(flexlora_factors(layout, dense, 1, 0.0, fallback), fedge::Error);
}

TEST_CASE("rank aggregation names parse and unknown ones are refused", "[aggregation][lora_ranks]") {
  CHECK(parse_rank_aggregation("hetlora") == RankAggregation::kHetLora);
  CHECK(parse_rank_aggregation("flexlora") == RankAggregation::kFlexLora);
  CHECK(parse_rank_aggregation("none") == RankAggregation::kNone);
  CHECK(rank_aggregation_name(RankAggregation::kFlexLora) == "flexlora");
  CHECK_THROWS_WITH(parse_rank_aggregation("svd"), Catch::Contains("\"svd\"") && Catch::Contains("hetlora"));
}
