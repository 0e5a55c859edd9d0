// End-to-end: SCAFFOLD between the real `fedge coordinator` and three
// `fedge node` processes (loopback TCP, CurveZMQ, secure aggregation). The
// global is [x ; c]; each node keeps its control variate c_i on disk.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "e2e/federation_harness.h"
#include "fedge/federation/scaffold.h"

namespace {

using namespace std::chrono_literals;
using fedge::ParamVector;
using fedge::testing::FederationHarness;

const std::string kFederation = fedge::testing::two_secure_rounds_of_three(
    "strategy = \"scaffold\"\n", "[federation.strategy_params]\nnum_nodes = 3\nglobal_learning_rate = 1.0\n");

double largest_difference(std::span<const float> a, std::span<const float> b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("scaffold: 3 node processes over 2 secure rounds move x and c by FedAvg and each node keeps its c_i",
          "[e2e]") {
  FederationHarness h(3);
  auto coordinator = h.start_coordinator(kFederation);
  std::vector<std::unique_ptr<fedge::testing::Process>> nodes;
  for (int id = 1; id <= 3; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 2\n"));
  fedge::testing::require_clean_exits(*coordinator, nodes);

  // v0 is the initial adapter x; v1 and v2 are [x ; c].
  const ParamVector v0 = ParamVector::load(h.adapter_file(0));
  REQUIRE_FALSE(fedge::federation::is_scaffold_layout(v0.layout()));
  std::vector<float> start(v0.values().begin(), v0.values().end());
  start.resize(2 * start.size(), 0.0F);  // c = 0
  std::vector<ParamVector> globals = {ParamVector(fedge::federation::scaffold_layout(v0.layout()), start)};
  for (std::uint64_t v = 1; v <= 2; ++v) {
    globals.push_back(ParamVector::load(h.adapter_file(v)).remapped(globals[0].layout()));
  }

  // With N = |S| = 3 and a global learning rate of 1, both halves move by the
  // example-weighted mean of what the nodes sent.
  std::vector<std::vector<ParamVector>> sent(3);  // [node][round - 1]
  for (std::uint64_t r = 1; r <= 2; ++r) {
    std::vector<ParamVector> updates;
    std::vector<double> weights;
    for (int id = 1; id <= 3; ++id) {
      updates.push_back(ParamVector::load(h.update_file(id, r)).remapped(globals[0].layout()));
      weights.push_back(std::stod(fedge::SafetensorsFile::open(h.update_file(id, r)).metadata().at("num_examples")));
      sent[static_cast<std::size_t>(id - 1)].push_back(updates.back());
    }
    const auto expected = fedge::testing::fedavg(globals[r - 1], updates, weights);
    INFO("round " << r);
    CHECK(largest_difference(expected, globals[r].values()) < 1e-6);
    const std::size_t n = v0.size();
    CHECK(largest_difference(globals[r].values().first(n), globals[r - 1].values().first(n)) > 1e-4);  // x moved
    CHECK(largest_difference(globals[r].values().subspan(n), globals[r - 1].values().subspan(n)) > 1e-4);  // c moved
  }

  // Each node's c_i: its round-1 mean gradient plus the round-2 change it sent.
  for (int id = 1; id <= 3; ++id) {
    INFO("node " << id);
    const ParamVector kept = ParamVector::load(h.node_state(id) / "scaffold_control.safetensors")
                                 .remapped(v0.layout());
    const std::size_t n = v0.size();
    const auto& u = sent[static_cast<std::size_t>(id - 1)];
    std::vector<float> expected(n);
    for (std::size_t i = 0; i < n; ++i) expected[i] = u[0].values()[n + i] + u[1].values()[n + i];
    CHECK(largest_difference(expected, kept.values()) < 1e-6);
    CHECK(largest_difference(kept.values(), std::vector<float>(n, 0.0F)) > 1e-6);
    // What the node saves and serves as its global is x alone.
    const ParamVector served = ParamVector::load(h.node_state(id) / "global" / "adapter_model.safetensors");
    CHECK(served.size() == n);
  }
}
