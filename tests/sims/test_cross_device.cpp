// Cross-device scale: many registered virtual nodes, a fraction selected per
// round. An idle node downloads and holds no model: only the nodes a round
// selects get the global (with their plan), and what a node holds when the
// level ends is a few hundred bytes of state besides its data.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <set>

#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

using namespace fedge::sims;

namespace {

// 30 nodes, 3 selected per round (fraction 0.1), 3 SecAgg+ rounds, no dropout.
const char* kCrossDevice = R"(
name = "cross-device"
seed = 3
levels = [4]
[model]
base = "tiny-random"
lora_rank = 2
targets = ["q", "v"]
seq_len = 48
[data]
sites = 3
days = 24
wells_per_site = 2
[nodes]
count = 30
devices = ["raspberry-pi", "jetson"]
dropout = 0.0
[partition]
kind = "by-site"   # 10 nodes per site, 2-3 records each
min_per_node = 2
[secagg]
enabled = true
dropout_rate = 0.00000001
corrupt_fraction = 0.0
failure_probability = 0.05
[serving]
requests_per_node = 2
duration_s = 100
max_new_tokens = 2
accuracy_records = 0
[training]
rounds = 3
local_steps = 1
batch_size = 2
fraction = 0.1
min_nodes = 3
)";  // [training] last: the tests append keys to it

RunResult run(const std::string& extra = "", int blocks = 1) {
  auto s = parse_scenario(std::string(kCrossDevice) + extra, "cross-device.toml");
  RunOptions o;
  o.threads = 1;
  o.blocks = blocks;
  o.progress = [](const std::string&) {};
  return run_scenario(s, o);
}

// The LoRA values of the scenario's adapter (rank 2 on q and v of the tiny
// model, 4 layers), as f32 bytes: what one global model download carries.
constexpr std::uint64_t kAdapterBytes = 4 * (2 * 256 + 256 * 2 + 2 * 256 + 128 * 2) * 4;

}  // namespace

TEST_CASE("cross-device: idle virtual nodes download and hold no model, selected ones get it with their plan") {
  auto r = run();
  REQUIRE(r.levels.size() == 1);
  const auto& lv = r.levels.front();
  REQUIRE(lv.rounds_completed == 3);
  std::set<int> took_part;
  std::map<int, std::uint64_t> bytes_down;  // final row: cumulative
  for (const auto& row : r.rows) {
    if (row.participated) took_part.insert(row.node);
    if (row.round == 3) bytes_down[row.node] = row.bytes_down;
  }
  REQUIRE(bytes_down.size() == 30);
  REQUIRE(took_part.size() >= 3);
  REQUIRE(took_part.size() <= 9);  // 3 rounds of 3
  for (const auto& [node, down] : bytes_down) {
    INFO("node " << node);
    if (took_part.count(node)) {
      CHECK(down >= kAdapterBytes);  // the global of each round it was selected for
    } else {
      CHECK(down < kAdapterBytes / 4);  // a RegisterAck, no model
    }
  }
  // One install per selection (no dropout, no failed attempt), by the selected nodes only.
  CHECK(lv.models_installed == 9);
  CHECK(lv.nodes_with_model == took_part.size());
  // What a node's state holds at the end, besides its data: the RoundClient
  // (identity, keys, counters) and the node's counters, no adapter values.
  REQUIRE(lv.node_state_bytes);
  CHECK(*lv.node_state_bytes > 0);
  CHECK(*lv.node_state_bytes < 2048);
  REQUIRE(lv.node_data_bytes);
  CHECK(*lv.node_data_bytes > 0);
}

TEST_CASE("cross-device: send_global = all gives every live node each global (the default at fraction 1)") {
  auto r = run("send_global = \"all\"\n");
  const auto& lv = r.levels.front();
  REQUIRE(lv.rounds_completed == 3);
  // Registration and the end of rounds 1 and 2: 3 installs for every node
  // (round 3's global arrives in the level's last window, which installs nothing).
  CHECK(lv.models_installed == 30 * 3);
  CHECK(lv.nodes_with_model == 30);
  for (const auto& row : r.rows) {
    if (row.round == 3) CHECK(row.bytes_down >= 4 * kAdapterBytes);
  }
}

TEST_CASE("cross-device: results do not depend on how the nodes are split over blocks", "[long]") {
  CHECK(metrics_csv(run()) == metrics_csv(run("", 3)));
}

TEST_CASE("cross-device: eval_nodes measures held-out quality on a seeded sample of nodes") {
  auto r = run("eval_nodes = 5\n");
  std::set<int> evaluated;
  for (const auto& row : r.rows) {
    if (row.round == 3 && !std::isnan(row.perplexity)) evaluated.insert(row.node);
  }
  CHECK(evaluated.size() == 5);
  CHECK(std::isfinite(r.base_perplexity));
  CHECK(std::isfinite(r.levels.front().mean_perplexity));
  CHECK(r.levels.front().mean_perplexity > 0);
  // The same sample in another run (every process of a spread run draws it).
  std::set<int> again;
  for (const auto& row : run("eval_nodes = 5\n").rows) {
    if (row.round == 3 && !std::isnan(row.perplexity)) again.insert(row.node);
  }
  CHECK(again == evaluated);
}

TEST_CASE("cross-device: send_global defaults by fraction and refuses other values naming the key") {
  CHECK_FALSE(parse_scenario(kCrossDevice, "x.toml").training.send_global_to_all);
  std::string all_selected = kCrossDevice;
  all_selected.replace(all_selected.find("fraction = 0.1"), 14, "fraction = 1.0");
  CHECK(parse_scenario(all_selected, "x.toml").training.send_global_to_all);
  CHECK_THROWS_WITH(parse_scenario(std::string(kCrossDevice) + "send_global = \"idle\"\n", "x.toml"),
                    Catch::Contains("send_global") && Catch::Contains("selected"));
  CHECK_THROWS_WITH(parse_scenario(std::string(kCrossDevice) + "eval_nodes = -1\n", "x.toml"),
                    Catch::Contains("eval_nodes"));
}
