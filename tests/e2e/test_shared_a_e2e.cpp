// End-to-end: shared-A personalization (FedSA-LoRA) between the real
// `fedge coordinator` and three `fedge node` processes on loopback TCP with
// CurveZMQ and secure aggregation. The coordinator federates the A matrices
// only; each node keeps its B. Read back from what the processes left on disk.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "e2e/federation_harness.h"
#include "fedge/aggregation/lora_shared_a.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/training/commands.h"
#include "fedge/training/trainer.h"

namespace {

using namespace std::chrono_literals;
using fedge::ParamVector;
using fedge::testing::FederationHarness;
namespace fs = std::filesystem;

const std::string kFederation = fedge::testing::two_secure_rounds_of_three("personalization = \"shared-a\"\n");

constexpr const char* kSharedANode = "exit_after_versions = 2\n[personalization]\nkind = \"shared-a\"\n";

bool is_b(const std::string& name) { return name.find("lora_B") != std::string::npos; }

ParamVector load_adapter(const fs::path& dir) {
  return fedge::inference::LoraAdapter::load(dir, fedge::inference::ModelConfig::tiny()).to_params();
}

// Held-out loss of the PEFT adapter in `dir` on node `id`'s own eval split.
double own_loss(const fs::path& dir, const FederationHarness& h, int id) {
  auto model = fedge::inference::Model::tiny(0);
  model.add_adapter("a", fedge::inference::LoraAdapter::load(dir, model.config()));
  model.set_active_adapter("a");
  const auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  fedge::training::DataSource source;
  source.path = h.site_file(id, "eval.jsonl").string();
  const auto data = fedge::training::TokenDataset::build(tokenizer, source.read(tokenizer), 96, false);
  return fedge::training::evaluate_loss(model, data).loss;
}

}  // namespace

TEST_CASE("shared-a: 3 node processes federate A only and each keeps the B it trained", "[e2e]") {
  FederationHarness h(3);
  auto coordinator = h.start_coordinator(kFederation);
  std::vector<std::unique_ptr<fedge::testing::Process>> nodes;
  for (int id = 1; id <= 3; ++id) nodes.push_back(h.start_node(id, kSharedANode));
  fedge::testing::require_clean_exits(*coordinator, nodes);

  // v0 is the initial adapter as given; every later global is A alone.
  const ParamVector v0 = ParamVector::load(h.adapter_file(0));
  REQUIRE_FALSE(fedge::aggregation::is_lora_a_only(v0.layout()));
  std::vector<ParamVector> globals;  // A of v0, v1, v2 in v1's layout
  const ParamVector v1 = ParamVector::load(h.adapter_file(1));
  REQUIRE(fedge::aggregation::is_lora_a_only(v1.layout()));
  REQUIRE(v1.layout() == fedge::aggregation::lora_a_layout(v0.layout()));
  ParamVector a0(v1.layout());
  for (const auto& e : v1.layout().entries()) std::ranges::copy(v0.tensor(e.name), a0.tensor(e.name).begin());
  globals = {a0, v1, ParamVector::load(h.adapter_file(2)).remapped(v1.layout())};

  // What each node sent (its saved updates) is A alone, and each global is the
  // previous one plus FedAvg of them, up to the secure sum's quantisation.
  for (std::uint64_t r = 1; r <= 2; ++r) {
    std::vector<ParamVector> updates;
    std::vector<double> weights;
    for (int id = 1; id <= 3; ++id) {
      updates.push_back(ParamVector::load(h.update_file(id, r)));
      CHECK(updates.back().layout() == v1.layout());
      weights.push_back(
          std::stod(fedge::SafetensorsFile::open(h.update_file(id, r)).metadata().at("num_examples")));
    }
    const auto expected = fedge::testing::fedavg(globals[r - 1], updates, weights);
    double worst = 0, moved = 0;
    for (std::size_t j = 0; j < expected.size(); ++j) {
      worst = std::max(worst, std::abs(double(expected[j]) - globals[r].values()[j]));
      moved = std::max(moved, std::abs(double(globals[r].values()[j]) - globals[r - 1].values()[j]));
    }
    INFO("round " << r);
    CHECK(moved > 1e-4);
    CHECK(worst < 1e-6);
  }

  // Each node's own adapter (state_dir/personal) is the last global's A with a
  // B of its own; state_dir/global is that A with zero B.
  std::vector<ParamVector> own;
  for (int id = 1; id <= 3; ++id) {
    INFO("node " << id);
    const ParamVector personal = load_adapter(h.node_state(id) / "personal");
    const ParamVector served_global = load_adapter(h.node_state(id) / "global");
    double b_norm = 0;
    for (const auto& e : personal.layout().entries()) {
      if (!is_b(e.name)) {
        CHECK(std::ranges::equal(personal.tensor(e.name), globals[2].tensor(e.name)));
        CHECK(std::ranges::equal(served_global.tensor(e.name), globals[2].tensor(e.name)));
        continue;
      }
      for (float x : personal.tensor(e.name)) b_norm += double(x) * x;
      CHECK(std::ranges::all_of(served_global.tensor(e.name), [](float x) { return x == 0.0F; }));
    }
    CHECK(b_norm > 0);
    own.push_back(personal);
    // The node's own adapter does better on its own held-out rows than the
    // global alone (whose zero B leaves the base unchanged).
    const double personal_loss = own_loss(h.node_state(id) / "personal", h, id);
    const double global_loss = own_loss(h.node_state(id) / "global", h, id);
    INFO("held-out loss: own adapter " << personal_loss << ", global alone " << global_loss);
    CHECK(personal_loss < global_loss);
  }
  // The B matrices differ from node to node: nothing averaged them.
  for (const auto& e : own[0].layout().entries()) {
    if (!is_b(e.name)) continue;
    CHECK_FALSE(std::ranges::equal(own[0].tensor(e.name), own[1].tensor(e.name)));
    CHECK_FALSE(std::ranges::equal(own[1].tensor(e.name), own[2].tensor(e.name)));
  }
}

TEST_CASE("shared-a: a node without it stops with the setting to change when the coordinator federates A only",
          "[e2e]") {
  FederationHarness h(1);
  auto coordinator = h.start_coordinator(
      "rounds = 1\nmin_nodes = 1\nsecure = false\nheartbeat_interval_ms = 200\npersonalization = \"shared-a\"\n");
  auto node = h.start_node(1);
  const auto rc = node->wait_for_exit(60s);
  INFO("node log:\n" << node->log_text());
  REQUIRE(rc.has_value());
  CHECK(*rc != 0);
  CHECK(node->log_text().find("set kind = \"shared-a\" in this node's config") != std::string::npos);
  CHECK_FALSE(fs::exists(h.update_file(1, 1)));
}
