// What epsilon means (issue 16 finding 4): every DP round is charged at
// sampling rate q = 1 (selection is not secret Poisson sampling).

#include <catch2/catch.hpp>

#include "federation/harness.h"
#include "fedge/privacy/rdp.h"

using namespace fedge;
using namespace fedge::testing;

namespace {

FederationConfig dp_config(protocol::DpMode mode, double clip_norm) {
  FederationConfig c = base_config(true);  // 5 nodes, complete graph, threshold 3
  c.rounds = 1;
  c.dp = {mode, clip_norm, 1.0, 1e-5};
  return c;
}

}  // namespace

TEST_CASE("DP accounting: selection is not Poisson sampling, so every round is charged at q = 1 (issue 16 finding 4a)") {
  // 4 of 8 registered nodes per round: the old ledger charged q = 4/8.
  FederationConfig cfg = dp_config(protocol::DpMode::kCentral, 1.0);
  cfg.rounds = 2;
  cfg.max_nodes = 4;
  Net net(cfg, initial_state(), 8);
  net.start();
  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 2);
  privacy::RdpAccountant reference;
  for (const auto& c : net.completed) {
    CHECK(c.survivors.size() == 4);
    REQUIRE(c.dp.has_value());
    CHECK(c.dp->sampling_rate == 1.0);
    CHECK(c.dp->noise_multiplier == 1.0);  // central: the coordinator adds all of it
    reference.step(1.0, 1.0, 1);
    CHECK(c.dp->epsilon == Approx(reference.spent(1e-5).epsilon).epsilon(1e-12));
    // The round's report says which sampling and which q were charged.
    CHECK(c.metrics.at("dp_poisson_sampling") == 0);
    CHECK(c.metrics.at("dp_sampling_rate") == 1.0);
    CHECK(c.metrics.at("dp_noise_multiplier") == 1.0);
    CHECK(c.metrics.at("epsilon") == c.dp->epsilon);
  }
}
