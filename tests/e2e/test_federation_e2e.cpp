// End-to-end: a coordinator and 4 node processes on loopback TCP with
// CurveZMQ run 3 rounds of LoRA with secure aggregation on the tiny model.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include <unordered_set>

#include "e2e/federation_harness.h"
#include "fedge/common/safetensors.h"
#include "fedge/coordinator/store.h"
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

constexpr const char* kFederation =
    "rounds = 3\nmin_nodes = 4\nheartbeat_interval_ms = 200\nliveness_timeout_ms = 4000\nretry_delay_ms = 300\n"
    "[federation.train]\nlocal_steps = 6\nlearning_rate = 0.01\nbatch_size = 4\n"
    "[federation.deadlines]\ntrain_ms = 60000\n"
    "[federation.secagg]\nexpected_dropout = 0.01\nfailure_probability = 0.01\ncorrupt_fraction = 0.0\nclip_range = 4.0\n";

double held_out_loss(const fs::path& adapter_dir, const FederationHarness& h) {
  auto model = fedge::inference::Model::tiny(0);
  model.add_adapter("a", fedge::inference::LoraAdapter::load(adapter_dir, model.config()));
  model.set_active_adapter("a");
  const auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  std::vector<fedge::training::Record> records;
  for (int id = 1; id <= h.nodes(); ++id) {
    fedge::training::DataSource source;
    source.path = h.site_file(id, "eval.jsonl").string();
    auto r = source.read(tokenizer);
    records.insert(records.end(), r.begin(), r.end());
  }
  return fedge::training::evaluate_loss(model, fedge::training::TokenDataset::build(tokenizer, records, 96, false))
      .loss;
}

// Every 8-byte window (two adjacent floats) of a file, to look for update values.
std::unordered_set<std::uint64_t> windows_of(const fs::path& file) {
  const std::string bytes = fedge::testing::read_file(file);
  std::unordered_set<std::uint64_t> out;
  for (std::size_t i = 0; i + 8 <= bytes.size(); ++i) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    out.insert(w);
  }
  return out;
}

// How many adjacent non-zero float pairs of `update` occur verbatim in `file`.
std::size_t leaked_pairs(const ParamVector& update, const std::unordered_set<std::uint64_t>& file_windows) {
  std::size_t hits = 0;
  const auto v = update.values();
  for (std::size_t i = 0; i + 1 < v.size(); i += 2) {
    if (v[i] == 0.0f || v[i + 1] == 0.0f) continue;
    std::uint64_t w;
    std::memcpy(&w, &v[i], 8);
    hits += file_windows.count(w);
  }
  return hits;
}

}  // namespace

TEST_CASE("federation: 4 node processes, 3 secure rounds, global = FedAvg of the nodes' updates", "[e2e]") {
  FederationHarness h(4);
  auto coordinator = h.start_coordinator(kFederation);
  std::vector<std::unique_ptr<fedge::testing::Process>> nodes;
  for (int id = 1; id <= 4; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 3"));

  fedge::testing::require_clean_exits(*coordinator, nodes);

  // The database: three rounds, each completed once, from all four nodes.
  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  REQUIRE(store.last_completed_round() == 3);
  for (std::uint64_t r = 1; r <= 3; ++r) {
    const auto round = store.completed_round(r);
    REQUIRE(round);
    CHECK(round->survivors == 4);
    CHECK(*round->adapter_version == r);
  }

  // Each global equals the previous one plus the example-weighted mean of the
  // updates the nodes saved on their own sites (computed here independently).
  for (std::uint64_t r = 1; r <= 3; ++r) {
    const auto check = fedge::testing::compare_with_fedavg(h, r, {1, 2, 3, 4});
    INFO("round " << r);
    CHECK(check.moved > 1e-4);   // the round changed the adapter
    CHECK(check.worst < 1e-6);   // and exactly by FedAvg, up to quantisation
  }

  // Held-out loss over every site's eval split falls from v0 to v3.
  const double loss0 = held_out_loss(h.adapter_file(0).parent_path(), h);
  const double loss3 = held_out_loss(h.adapter_file(3).parent_path(), h);
  INFO("held-out loss v0 " << loss0 << " v3 " << loss3);
  CHECK(loss3 < loss0);

  // No individual update in the coordinator's database or log.
  const auto db = windows_of(h.coordinator_state() / "coordinator.db");
  const auto log = windows_of(h.root() / "coordinator.log");
  for (int id = 1; id <= 4; ++id) {
    for (std::uint64_t r = 1; r <= 3; ++r) {
      const ParamVector update = ParamVector::load(h.update_file(id, r));
      CHECK(leaked_pairs(update, db) == 0);
      CHECK(leaked_pairs(update, log) == 0);
    }
  }
  // The only files the coordinator keeps are its database and the global versions.
  for (const auto& entry : fs::recursive_directory_iterator(h.coordinator_state())) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    const bool allowed = name.rfind("coordinator.db", 0) == 0 || name == "adapter_model.safetensors" ||
                         name == "adapter_config.json";
    INFO(entry.path());
    CHECK(allowed);
  }
}
