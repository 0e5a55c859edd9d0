// HetLoRA through the coordinator and node cores: nodes of different LoRA
// ranks, their updates zero-padded to the global's rank, aggregated rank-wise
// under secure aggregation (the rank-wise weights summed in the masked vector)
// and over plain updates, against aggregation::hetlora_mean.
#include <catch2/catch.hpp>

#include "federation/harness.h"
#include "fedge/aggregation/lora_ranks.h"
#include "fedge/common/error.h"
#include "fedge/federation/update_codec.h"
#include "fedge/federation/wire.h"

using namespace fedge;
using namespace fedge::testing;

namespace {

// Two LoRA pairs of rank R = 4: 4x10 / 15x4 and 4x20 / 5x4 (200 floats).
ResumeState lora_state() {
  ResumeState r;
  r.layout = {{"l0.q_proj.lora_A.weight", {4, 10}},
              {"l0.q_proj.lora_B.weight", {15, 4}},
              {"l1.v_proj.lora_A.weight", {4, 20}},
              {"l1.v_proj.lora_B.weight", {5, 4}}};
  r.global.resize(200);
  for (std::size_t j = 0; j < r.global.size(); ++j) r.global[j] = 0.1F * static_cast<float>(std::cos(0.01 * j));
  return r;
}

aggregation::LoraLayout pairs_of(const ResumeState& r) {
  ParamLayout l;
  for (const auto& t : r.layout) l.add(t.name, std::vector<std::int64_t>(t.shape.begin(), t.shape.end()));
  return aggregation::lora_layout(l);
}

// Nodes 1 and 2 rank 1, node 3 rank 2, nodes 4 and 5 rank 4 (the maximum).
const std::map<NodeId, std::uint32_t> kRanks = {{1, 1}, {2, 1}, {3, 2}, {4, 4}, {5, 4}};

FederationConfig hetlora_config(bool secure) {
  auto c = base_config(secure);
  c.rank_aggregation = aggregation::RankAggregation::kHetLora;
  c.profile_ranks = {{"rank-1", 1}, {"rank-2", 2}, {"rank-4", 4}};
  return c;
}

// Runs 3 rounds; checks each against global + the rank-wise mean of the
// survivors' updates (weights: examples) and returns the final global.
std::vector<float> run_hetlora(bool secure, double tolerance) {
  const ResumeState init = lora_state();
  const auto lora = pairs_of(init);
  Net net(hetlora_config(secure), init, 5, kRanks);
  net.shape_update = [&](NodeId id, std::vector<float>& u) {
    u = aggregation::keep_rank(lora, u, static_cast<int>(kRanks.at(id)));
  };
  std::vector<float> before = net.coord.global();
  std::size_t seen = 0;
  net.start();
  REQUIRE(net.run_until([&] {
    while (seen < net.completed.size()) {
      const auto& c = net.completed[seen];
      std::vector<std::vector<float>> ups;
      std::vector<int> ranks;
      std::vector<double> weights;
      for (NodeId id : c.survivors) {
        ups.push_back(net.trained.at(c.round).at(id).update);
        ranks.push_back(static_cast<int>(kRanks.at(id)));
        weights.push_back(static_cast<double>(Net::examples_of(id)));
      }
      const auto mean = aggregation::hetlora_mean(lora, ups, ranks, weights);
      double worst = 0;
      for (std::size_t j = 0; j < mean.size(); ++j)
        worst = std::max(worst, std::abs(static_cast<double>(c.global[j]) - (before[j] + mean[j])));
      CHECK(worst <= tolerance);
      before = c.global;
      ++seen;
    }
    return net.coord.finished() && net.queue.empty();
  }));
  REQUIRE(net.completed.size() == 3);
  CHECK(net.size_refusals.empty());
  for (const auto& e : net.events) {
    if (const auto* s = std::get_if<federation::RoundStarted>(&e)) {
      // The masked vector: 200 update values, weight, loss and R = 4 rank-wise weights.
      if (secure) CHECK(federation::wire::update_encoding(s->plan).vector_length() == 200 + 2 + 4);
    }
  }
  return net.coord.global();
}

}  // namespace

TEST_CASE("HetLoRA: plain rounds equal the rank-wise mean, secure rounds equal the plain ones") {
  // Plain: float sums in another order than hetlora_mean's double sums.
  const auto plain = run_hetlora(false, 1e-7);
  // Secure: each value is off by at most one quantisation step (~1e-9 at
  // clip 0.5 and 29 bits) per survivor, over W_j >= 1.8 (rank indices 2-3:
  // nodes 4 and 5 only); 1e-6 bounds that with room.
  const auto secure = run_hetlora(true, 1e-6);
  double worst = 0;
  for (std::size_t j = 0; j < plain.size(); ++j) worst = std::max(worst, std::abs(double(plain[j]) - secure[j]));
  CHECK(worst <= 1e-6);
}

TEST_CASE("HetLoRA: the encoding appends each node's rank indicator times its weight") {
  federation::UpdateEncoding e;
  e.update_length = 3;
  e.clip_range = 0.5;
  e.example_scale = 200;
  e.rank_slots = 3;
  const std::vector<float> u = {0.1F, 0.2F, 0.0F};
  // w = 100/200 = 0.5: [0.05, 0.1, 0, w*clip = 0.25, loss 0, 0.25, 0.25, 0] for rank 2.
  const auto v = federation::weighted_vector(e, u, 100, 0.0, 2);
  CHECK(v == std::vector<float>{0.05F, 0.1F, 0.0F, 0.25F, 0.0F, 0.25F, 0.25F, 0.0F});
  CHECK(federation::weighted_vector(e, u, 100, 0.0).size() == 3 + 2 + 3);  // rank 0: the maximum
  CHECK_THROWS_WITH(federation::weighted_vector(e, u, 100, 0.0, 4), Catch::Contains("rank 4"));
  e.rank_slots = 0;
  CHECK_THROWS_WITH(federation::weighted_vector(e, u, 100, 0.0, 2), Catch::Contains("rank slots"));
}

TEST_CASE("HetLoRA: configs the coordinator cannot run are refused naming the field") {
  auto robust = hetlora_config(false);
  robust.strategy = "krum";
  CHECK_THROWS_WITH(CoordinatorCore(robust, lora_state()), Catch::Contains("strategy") && Catch::Contains("HetLoRA"));
  auto zero = hetlora_config(true);
  zero.profile_ranks["pi"] = 0;
  CHECK_THROWS_WITH(CoordinatorCore(zero, lora_state()), Catch::Contains("profile_ranks") && Catch::Contains("'pi'"));
  auto above = hetlora_config(true);
  above.profile_ranks["jetson"] = 8;
  CHECK_THROWS_WITH(CoordinatorCore(above, lora_state()),
                    Catch::Contains("profile_ranks") && Catch::Contains("rank 8") && Catch::Contains("global's 4"));
  // A global that is no LoRA adapter.
  CHECK_THROWS_WITH(CoordinatorCore(hetlora_config(true), initial_state()), Catch::Contains("hetlora"));
}
