// End-to-end: heterogeneous LoRA ranks (HetLoRA) between the real
// `fedge coordinator` and three `fedge node` processes of ranks 4, 2 and 1
// (loopback TCP, CurveZMQ, secure aggregation). Each global must be the
// rank-wise weighted mean of the updates the nodes saved: rank index k
// averaged over the nodes whose rank exceeds k.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "e2e/federation_harness.h"
#include "fedge/aggregation/lora_ranks.h"

namespace {

using namespace std::chrono_literals;
using fedge::ParamVector;
using fedge::testing::FederationHarness;

const std::string kFederation = fedge::testing::two_secure_rounds_of_three("rank_aggregation = \"hetlora\"\n");

// The rank index of every float of a flat LoRA adapter: its row in an A, its
// column in a B.
std::vector<int> rank_index(const fedge::ParamLayout& layout) {
  std::vector<int> k(layout.size(), -1);
  const auto pairs = fedge::aggregation::lora_layout(layout);
  const auto r = static_cast<std::size_t>(pairs.rank);
  for (const auto& p : pairs.pairs) {
    for (std::size_t i = 0; i < r * p.in; ++i) k[p.a_offset + i] = static_cast<int>(i / p.in);
    for (std::size_t i = 0; i < p.out * r; ++i) k[p.b_offset + i] = static_cast<int>(i % r);
  }
  return k;
}

}  // namespace

TEST_CASE("hetlora: nodes of ranks 4 2 and 1 in secure rounds give rank-wise means", "[e2e]") {
  FederationHarness h(3);
  auto coordinator = h.start_coordinator(kFederation);
  const std::vector<int> ranks = {4, 2, 1};  // the global's rank is 4 (the harness's [adapter])
  std::vector<std::unique_ptr<fedge::testing::Process>> nodes;
  nodes.push_back(h.start_node(1, "exit_after_versions = 2\n"));
  nodes.push_back(h.start_node(2, "exit_after_versions = 2\n", "lora_rank = 2\n"));
  nodes.push_back(h.start_node(3, "exit_after_versions = 2\n", "lora_rank = 1\n"));
  fedge::testing::require_clean_exits(*coordinator, nodes);
  CHECK(nodes[1]->log_text().find("at LoRA rank 2 (HetLoRA)") != std::string::npos);

  for (std::uint64_t round = 1; round <= 2; ++round) {
    INFO("round " << round);
    const auto files = fedge::testing::load_round(h, round, {1, 2, 3});
    const auto k = rank_index(files.before.layout());
    std::vector<ParamVector> updates;
    for (const auto& u : files.updates) updates.push_back(u.remapped(files.before.layout()));
    // What each node sent has nothing beyond its rank, and something within it.
    for (std::size_t n = 0; n < 3; ++n) {
      double inside = 0, outside = 0;
      for (std::size_t j = 0; j < k.size(); ++j)
        (k[j] < ranks[n] ? inside : outside) += std::abs(double(updates[n].values()[j]));
      INFO("node " << n + 1);
      CHECK(inside > 0);
      CHECK(outside == 0);
    }
    double worst = 0, moved_low = 0, moved_high = 0;
    for (std::size_t j = 0; j < k.size(); ++j) {
      double sum = 0, weight = 0;
      for (std::size_t n = 0; n < 3; ++n) {
        if (ranks[n] <= k[j]) continue;
        sum += files.weights[n] * updates[n].values()[j];
        weight += files.weights[n];
      }
      const double expected = files.before.values()[j] + sum / weight;
      worst = std::max(worst, std::abs(expected - files.after.values()[j]));
      const double moved = std::abs(double(files.after.values()[j]) - files.before.values()[j]);
      (k[j] == 0 ? moved_low : moved_high) = std::max(k[j] == 0 ? moved_low : moved_high, moved);
    }
    CHECK(moved_low > 1e-4);   // rank index 0: every node's mean
    CHECK(moved_high > 1e-4);  // rank indices 1-3: node 1's (and node 2's) alone
    CHECK(worst < 1e-6);       // exactly rank-wise, up to the secure sum's quantisation
  }
}
