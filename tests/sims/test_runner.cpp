// The paradigm runner end to end on a tiny scenario (untrained tiny model, a
// handful of steps): reproducible from the seed, and each level moves and
// exposes what DESIGN.md says it does.
// ATen (through the model headers) defines CHECK too; Catch must come after it.
#include "fedge/inference/model_gguf.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"
#include "test_util.h"

using namespace fedge::sims;

namespace {

const char* kTiny = R"(
name = "tiny"
seed = 5
levels = [0, 1, 2, 3, 4, 5, 6]
[model]
base = "tiny-random"
lora_rank = 2
targets = ["q", "v"]
seq_len = 64
[data]
sites = 3
days = 4
wells_per_site = 1
[nodes]
count = 3
devices = ["raspberry-pi", "jetson"]
[partition]
kind = "by-site"
[training]
rounds = 2
local_steps = 2
batch_size = 2
central_steps = 3
local_only_steps = 2
min_nodes = 3
[secagg]
enabled = true
dropout_rate = 0.00000001
[serving]
requests_per_node = 4
duration_s = 100
max_new_tokens = 3
accuracy_records = 1
[outage]
start_s = 50
duration_s = 50
)";

RunResult run_tiny(const std::string& extra = "") {
  auto s = parse_scenario(std::string(kTiny) + extra, "tiny.toml");
  RunOptions o;
  o.threads = 1;
  o.progress = [](const std::string&) {};
  return run_scenario(s, o);
}

const LevelSummary& level(const RunResult& r, int l) {
  for (const auto& s : r.levels) {
    if (s.level == l) return s;
  }
  FAIL("no level " << l);
  return r.levels.front();
}

}  // namespace

TEST_CASE("the same scenario and seed give identical metrics.csv") {
  auto a = run_tiny();
  auto b = run_tiny();
  auto csv = metrics_csv(a);
  CHECK(csv == metrics_csv(b));
  // One row per node for each single-shot level, one per round and node for 4 and 5.
  std::size_t lines = std::count(csv.begin(), csv.end(), '\n');
  CHECK(lines == 1 + 5 * 3 + 2 * 2 * 3);

  fedge::testing::TempDir dir;
  auto s = parse_scenario(kTiny, "tiny.toml");
  write_results(s, a, dir.path);
  std::ifstream in(dir.path / "metrics.csv");
  std::stringstream text;
  text << in.rdbuf();
  CHECK(text.str() == csv);
  CHECK(std::filesystem::exists(dir.path / "summary.json"));
  CHECK(std::filesystem::exists(dir.path / "summary.md"));
}

TEST_CASE("levels expose, move and survive outages as designed") {
  auto r = run_tiny();
  REQUIRE(r.levels.size() == 7);
  for (int l = 0; l <= 3; ++l) {
    CHECK(level(r, l).raw_bytes_left > 0);
    CHECK(level(r, l).aggregator_saw == "raw data");
  }
  for (int l = 4; l <= 6; ++l) CHECK(level(r, l).raw_bytes_left == 0);
  CHECK(level(r, 4).aggregator_saw == "sums only");
  CHECK(level(r, 5).aggregator_saw == "sums only");
  CHECK(level(r, 6).aggregator_saw == "nothing");
  CHECK(level(r, 6).bytes_up_per_node == 0);
  CHECK(level(r, 4).bytes_up_per_node > 0);
  CHECK(level(r, 4).rounds_completed == 2);
  // The outage covers the second half of serving: remote inference fails there.
  for (int l = 0; l <= 2; ++l) CHECK(level(r, l).outage_served_share == 0.0);
  for (int l = 3; l <= 6; ++l) CHECK(level(r, l).outage_served_share == 1.0);
  // Split inference sends hidden states up, far more than the prompt text.
  CHECK(level(r, 1).bytes_up_per_node > level(r, 0).bytes_up_per_node);
  // On-device inference on a Pi is slower per token than the cloud.
  CHECK(level(r, 3).tpot_p50_ms > level(r, 0).tpot_p50_ms);
}

TEST_CASE("the scenario's fedprox_mu reaches the virtual nodes' training (FedProx differs from FedAvg)") {
  // The simulator once had its own copy of the node's local step, which never
  // applied the plan's mu: every FedProx simulation was plain FedAvg. It now
  // trains through node::train_local_round, the node's own step.
  auto run = [](double mu) {
    auto s = parse_scenario(kTiny, "tiny.toml");
    s.levels = {4};
    s.training.fedprox_mu = mu;
    RunOptions o;
    o.threads = 1;
    o.progress = [](const std::string&) {};
    return run_scenario(s, o);
  };
  const auto fedavg = run(0.0), fedprox = run(50.0);
  CHECK(metrics_csv(fedprox) != metrics_csv(fedavg));
  // A strong pull towards the global keeps the adapter nearer the start, so the
  // rounds move held-out quality less than FedAvg does.
  const double base = fedavg.base_perplexity;
  CHECK(std::abs(level(fedprox, 4).mean_perplexity - base) < std::abs(level(fedavg, 4).mean_perplexity - base));
}

TEST_CASE("a federated level-4 run over a base held in Q4_0 (model quant key) trains QLoRA adapters", "[quant]") {
  auto run = [](const std::string& quant) {
    auto s = parse_scenario(kTiny, "tiny.toml");
    s.levels = {4};
    s.model.quant = quant;
    RunOptions o;
    o.threads = 1;
    o.progress = [](const std::string&) {};
    return run_scenario(s, o);
  };
  const auto f32 = run("f32"), q4 = run("q4_0");
  // The nodes' base really is the quantized one (another base perplexity),
  // and federated rounds over it move held-out quality as over f32.
  CHECK(q4.base_perplexity != f32.base_perplexity);
  CHECK(std::abs(q4.base_perplexity / f32.base_perplexity - 1.0) < 0.10);
  CHECK(level(q4, 4).mean_perplexity < q4.base_perplexity);
  CHECK(level(f32, 4).mean_perplexity < f32.base_perplexity);
  CHECK(level(q4, 4).rounds_completed == 2);
}

TEST_CASE("a scenario's base can be a GGUF file: the same Q4_0 blocks give the same run", "[quant]") {
  fedge::testing::TempDir dir;
  auto s = parse_scenario(kTiny, "tiny.toml");
  s.levels = {4};
  s.model.quant = "q4_0";
  RunOptions o;
  o.threads = 1;
  o.progress = [](const std::string&) {};
  const auto from_random = run_scenario(s, o);

  // The scenario's tiny-random base (the preset with the scenario's seed), in Q4_0, written as GGUF.
  fedge::inference::LoadOptions q4;
  q4.weights = fedge::inference::WeightType::kQ4_0;
  const auto tok = fedge::inference::Tokenizer::byte_level_tiny();
  const auto gguf = dir.path / "base-q4_0.gguf";
  fedge::inference::write_model_gguf(
      gguf, fedge::inference::Model::random(fedge::inference::ModelConfig::tiny(), s.seed, q4), &tok, {"base", ""});
  s.model.base = gguf.string();
  const auto from_gguf = run_scenario(s, o);
  CHECK(from_gguf.base_perplexity == from_random.base_perplexity);
  CHECK(level(from_gguf, 4).mean_perplexity == level(from_random, 4).mean_perplexity);
  CHECK(level(from_gguf, 4).rounds_completed == 2);
}

TEST_CASE("a plug-in strategy named in the scenario runs the federated rounds (examples/strategies/normclip.cpp)") {
  // The scenario names the example plug-in and its parameter; secure
  // aggregation is off because it clips each node's update on its own.
  auto run = [](const std::string& strategy_lines) {
    std::string text = kTiny;
    auto put = [&](const std::string& from, const std::string& to) {
      const auto at = text.find(from);
      REQUIRE(at != std::string::npos);
      text.replace(at, from.size(), to);
    };
    put("[secagg]\nenabled = true\n", "[secagg]\nenabled = false\n");
    put("min_nodes = 3\n", "min_nodes = 3\n" + strategy_lines);
    auto s = parse_scenario(text, "tiny.toml");
    s.levels = {4};
    RunOptions o;
    o.threads = 1;
    o.progress = [](const std::string&) {};
    return run_scenario(s, o);
  };
  const auto fedavg = run("strategy = \"fedavg\"\n");
  // A bound no update reaches: every update passes unscaled, so the rounds are FedAvg's.
  const auto loose = run("strategy = \"normclip\"\nstrategy_params = { max_norm = 1e9 }\n");
  CHECK(metrics_csv(loose) == metrics_csv(fedavg));
  // A tight bound holds every update to a tiny step: held-out quality stays
  // at the base's, while FedAvg moves it.
  const auto tight = run("strategy = \"normclip\"\nstrategy_params = { max_norm = 1e-7 }\n");
  REQUIRE(level(tight, 4).rounds_completed == 2);
  const double base = fedavg.base_perplexity;
  CHECK(std::abs(level(tight, 4).mean_perplexity - base) < 1e-3 * base);
  CHECK(std::abs(level(fedavg, 4).mean_perplexity - base) > std::abs(level(tight, 4).mean_perplexity - base));
  // Its parameters are checked like a built-in's.
  CHECK_THROWS_WITH(run("strategy = \"normclip\"\nstrategy_params = { eta = 1 }\n"),
                    Catch::Contains("training.strategy") && Catch::Contains("no parameter 'eta'"));
}
