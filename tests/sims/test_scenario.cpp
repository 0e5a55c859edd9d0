// Scenario files: every mistake is an error naming file:line and the key,
// before any work starts.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/sims/scenario.h"

using fedge::sims::parse_scenario;
using fedge::sims::Scenario;

namespace {

const std::string kGood = R"(
name = "t"
seed = 3
levels = [0, 6]
[model]
base = "tiny-random"
lora_rank = 4
targets = ["q", "v"]
[data]
sites = 4
days = 4
[nodes]
count = 4
devices = ["jetson", "raspberry-pi"]
network = "cellular"
[partition]
kind = "dirichlet"
alpha = 0.3
[outage]
start_s = 10
duration_s = 5
)";

std::string error_of(const std::string& text) {
  try {
    parse_scenario(text, "bad.toml");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error for:\n" << text);
  return "";
}

}  // namespace

TEST_CASE("a good scenario reads back every setting") {
  Scenario s = parse_scenario(kGood, "good.toml");
  CHECK(s.name == "t");
  CHECK(s.seed == 3);
  CHECK(s.levels == std::vector<int>{0, 6});
  CHECK(s.model.lora_rank == 4);
  CHECK(s.model.targets == std::vector<std::string>{"q_proj", "v_proj"});
  CHECK(s.nodes == 4);
  REQUIRE(s.node_devices.size() == 2);
  CHECK(s.node_devices[0].name == "jetson");
  CHECK(s.node_network.name == "cellular");
  CHECK(s.edge_network.name == "edge-lan");
  CHECK(s.partition.kind == fedge::sims::PartitionKind::kDirichlet);
  CHECK(s.partition.alpha == 0.3);
  CHECK(s.outage.contains(12));
  // q and v of 4 layers, rank 4: q 256->256, v 256->128.
  CHECK(fedge::sims::adapter_length(s) == 4u * 4u * ((256 + 256) + (256 + 128)));
}

TEST_CASE("custom profiles can be defined and used") {
  auto s = parse_scenario(kGood + R"(
[[device_profiles]]
name = "phone"
gflops = 50
power_w = 4
[[network_profiles]]
name = "5g"
up_mbps = 50
down_mbps = 300
latency_ms = 20
)", "p.toml");
  (void)s;
  auto t = parse_scenario(R"(
[model]
base = "tiny-random"
[nodes]
count = 2
device = "phone"
network = "5g"
[secagg]
enabled = false
[[device_profiles]]
name = "phone"
gflops = 50
[[network_profiles]]
name = "5g"
up_mbps = 50
down_mbps = 300
)", "p.toml");
  CHECK(t.node_devices[0].flops == 50e9);
  CHECK(t.node_network.up_bps == 50e6);
}

TEST_CASE("a node device without the memory for on-device levels is an error naming it") {
  const std::string small_device = R"(
[model]
base = "tiny-random"
[nodes]
count = 2
devices = ["jetson", "watch"]
[secagg]
enabled = false
[[device_profiles]]
name = "watch"
gflops = 5
memory_gb = 0.002
)";
  auto e = error_of("levels = [3, 4, 6]\n" + small_device);
  CHECK_THAT(e, Catch::StartsWith("bad.toml:") && Catch::Contains("'nodes.devices'") && Catch::Contains("'watch'") &&
                    Catch::Contains("0.00 GB") && Catch::Contains("training on the node"));
  // Inference alone needs less; cloud-side levels need nothing on the node.
  CHECK_THAT(error_of("levels = [3]\n" + small_device), Catch::Contains("inference on the node"));
  CHECK(parse_scenario("levels = [0, 1, 2]\n" + small_device, "ok.toml").node_devices[1].name == "watch");

  // The estimate: the tiny base in f32 plus a KV cache; training adds LoRA
  // state and activations, which grow with the batch.
  auto s = parse_scenario("levels = [0]\n" + small_device, "ok.toml");
  const auto config = fedge::inference::ModelConfig::tiny();
  const auto need = device_memory_need(s, config, adapter_length(s));
  CHECK(need.inference_bytes > 4.0 * config.vocab_size * config.hidden_size);
  CHECK(need.training_bytes > need.inference_bytes);
  s.training.batch_size *= 2;
  CHECK(device_memory_need(s, config, adapter_length(s)).training_bytes > need.training_bytes);
}

TEST_CASE("the model quant key names how the nodes hold the base and smaller types need less memory", "[quant]") {
  const std::string plain = "[secagg]\nenabled = false\n[model]\nbase = \"tiny-random\"\n";
  CHECK(parse_scenario(plain, "ok.toml").model.quant == "f32");
  for (const char* type : {"f32", "bf16", "f16", "q8_0", "q4_0"}) {
    CHECK(parse_scenario(plain + "quant = \"" + type + "\"\n", "ok.toml").model.quant == type);
  }
  CHECK_THAT(error_of("[model]\nquant = \"q3_k\"\n"),
             Catch::StartsWith("bad.toml:2:") && Catch::Contains("model.quant") && Catch::Contains("q4_0"));
  CHECK_THAT(error_of("[model]\nquant = 4\n"), Catch::Contains("model.quant") && Catch::Contains("string"));

  auto s = parse_scenario(plain, "ok.toml");
  const auto config = fedge::inference::ModelConfig::tiny();
  auto need = [&](const char* quant) {
    s.model.quant = quant;
    return device_memory_need(s, config, adapter_length(s)).training_bytes;
  };
  CHECK(need("q4_0") < need("q8_0"));
  CHECK(need("q8_0") < need("bf16"));
  CHECK(need("bf16") < need("f32"));
}

TEST_CASE("unknown level is an error naming the line") {
  auto e = error_of("levels = [0, 7]\n");
  CHECK_THAT(e, Catch::StartsWith("bad.toml:1:") && Catch::Contains("'levels'") && Catch::Contains("level 7"));
  CHECK_THAT(error_of("levels = [2, 2]\n"), Catch::Contains("twice"));
  CHECK_THAT(error_of("levels = []\n"), Catch::Contains("no level"));
  CHECK_THAT(error_of("levels = [\"zero\"]\n"), Catch::Contains("integer"));
}

TEST_CASE("unknown keys are errors naming the key") {
  CHECK_THAT(error_of("[training]\nroundz = 3\n"), Catch::StartsWith("bad.toml:2:") && Catch::Contains("roundz"));
  CHECK_THAT(error_of("colour = 1\n"), Catch::Contains("colour"));
}

TEST_CASE("wrong types and ranges are errors") {
  CHECK_THAT(error_of("[training]\nrounds = \"five\"\n"), Catch::Contains("training.rounds") && Catch::Contains("integer"));
  CHECK_THAT(error_of("[training]\nrounds = 0\n"), Catch::Contains("training.rounds"));
  CHECK_THAT(error_of("[nodes]\ncount = -1\n"), Catch::Contains("nodes.count"));
  CHECK_THAT(error_of("[nodes]\ndevice = \"toaster\"\n"), Catch::StartsWith("bad.toml:2:") && Catch::Contains("toaster"));
  CHECK_THAT(error_of("[nodes]\nnetwork = \"pigeon\"\n"), Catch::Contains("pigeon"));
  CHECK_THAT(error_of("[partition]\nkind = \"random\"\n"), Catch::Contains("partition.kind"));
  CHECK_THAT(error_of("[model]\ntargets = [\"qq\"]\n"), Catch::Contains("model.targets"));
  CHECK_THAT(error_of("[training]\nstrategy = \"fedfoo\"\n"), Catch::Contains("training.strategy"));
  CHECK_THAT(error_of("[training]\nstrategy = \"krum\"\n[secagg]\nenabled = true\n"),
             Catch::Contains("training.strategy"));
  CHECK_THAT(error_of("[nodes]\ncount = 4\n"
                      "[training]\nmin_nodes = 5\n[secagg]\nenabled = false\n[model]\nbase = \"tiny-random\"\n"),
             Catch::Contains("min_nodes"));
  CHECK_THAT(error_of("name = \n"), Catch::StartsWith("bad.toml:1"));  // TOML syntax
}

TEST_CASE("more nodes than data is an error before any work") {
  auto e = error_of("[data]\nsites = 2\ndays = 4\nwells_per_site = 1\n[nodes]\ncount = 5\n[model]\nbase = \"tiny-random\"\n");
  CHECK_THAT(e, Catch::StartsWith("bad.toml:6:") && Catch::Contains("nodes.count") && Catch::Contains("only 4"));
  CHECK_THAT(error_of("[data]\nsites = 2\ndays = 4\n[nodes]\ncount = 4\n[partition]\nmin_per_node = 4\n"
                      "[model]\nbase = \"tiny-random\"\n"),
             Catch::Contains("nodes.count"));
}

TEST_CASE("impossible secure-aggregation settings are errors naming the secagg key") {
  // 4 nodes cannot promise a 1e-6 failure rate when a third of them may drop.
  auto e = error_of("levels = [4]\n[model]\nbase = \"tiny-random\"\n[nodes]\ncount = 4\n"
                    "[secagg]\nenabled = true\ndropout_rate = 0.3\n");
  CHECK_THAT(e, Catch::StartsWith("bad.toml:8:") && Catch::Contains("secagg.dropout_rate") &&
                    Catch::Contains("secure aggregation"));
  // Without a federated level the same settings are not checked.
  CHECK_NOTHROW(parse_scenario("levels = [0]\n[model]\nbase = \"tiny-random\"\n[nodes]\ncount = 4\n"
                               "[secagg]\nenabled = true\ndropout_rate = 0.3\n", "ok.toml"));
  // SecAgg needs 3 clients a round.
  CHECK_THAT(error_of("levels = [4]\n[model]\nbase = \"tiny-random\"\n[nodes]\ncount = 2\n"),
             Catch::Contains("secagg") || Catch::Contains("min_nodes"));
}

TEST_CASE("the shipped scenarios parse") {
  auto q = fedge::sims::load_scenario(std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/quickstart.toml");
  CHECK(q.nodes == 8);
  CHECK(q.levels.size() == 7);
  CHECK(q.secagg.enabled);
  auto s = fedge::sims::load_scenario(std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/scale.toml");
  CHECK(s.nodes == 1000);
  auto st = fedge::sims::load_scenario(std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/stragglers.toml");
  CHECK(st.training.fedbuff());
  CHECK(st.training.compare_sync);
}

TEST_CASE("a device profile's memory is given in memory_mb (MiB, as a node's budget) or memory_gb, not both") {
  const std::string device = R"(
levels = [0]
[model]
base = "tiny-random"
[nodes]
count = 2
devices = ["board"]
[secagg]
enabled = false
[[device_profiles]]
name = "board"
gflops = 5
)";
  CHECK(parse_scenario(device + "memory_mb = 512\n", "ok.toml").node_devices[0].memory_bytes == 512.0 * 1024 * 1024);
  CHECK(parse_scenario(device + "memory_gb = 2\n", "ok.toml").node_devices[0].memory_bytes == 2e9);
  CHECK_THAT(error_of(device + "memory_mb = 512\nmemory_gb = 2\n"), Catch::Contains("memory_mb") && Catch::Contains("not both"));
  CHECK_THAT(error_of(device + "memory_mb = 0\n"), Catch::Contains("memory_mb"));
}

TEST_CASE("the run seeds key reads back, is checked, and seed indices derive their seeds from the scenario seed") {
  const std::string plain = "seed = 9\n[secagg]\nenabled = false\n";
  auto one = parse_scenario(plain, "ok.toml");
  CHECK(one.seeds == 1);
  CHECK(one.seed == 9);
  CHECK(one.scenario_seed == 9);
  auto s = parse_scenario(plain + "[run]\nseeds = 4\n", "ok.toml");
  CHECK(s.seeds == 4);
  CHECK_THAT(error_of("[run]\nseeds = 0\n"), Catch::StartsWith("bad.toml:2:") && Catch::Contains("run.seeds"));
  CHECK_THAT(error_of("[run]\nseeds = 1001\n"), Catch::Contains("run.seeds"));
  CHECK_THAT(error_of("[run]\nseeds = \"3\"\n"), Catch::Contains("run.seeds") && Catch::Contains("integer"));
  CHECK_THAT(error_of("[run]\nseedz = 3\n"), Catch::Contains("seedz"));

  // Index 0 is the scenario itself; other indices get distinct seeds derived
  // from the scenario's, and keep the scenario's seed for the data and base.
  auto s0 = fedge::sims::for_seed_index(s, 0);
  CHECK(s0.seed == 9);
  CHECK(s0.partition.seed == 9);
  std::set<std::uint64_t> seen{s0.seed};
  for (int k = 1; k < 4; ++k) {
    auto sk = fedge::sims::for_seed_index(s, k);
    CHECK(sk.seed_index == k);
    CHECK(sk.seed == fedge::derive_seed(9, "seeds/" + std::to_string(k)));
    CHECK(sk.partition.seed == sk.seed);
    CHECK(sk.scenario_seed == 9);
    seen.insert(sk.seed);
  }
  CHECK(seen.size() == 4);
  CHECK_THROWS_AS(fedge::sims::seed_for_index(9, -1), fedge::Error);
}

TEST_CASE("personalization keys read back and are checked") {
  const std::string plain = "[secagg]\nenabled = false\n";
  auto s = parse_scenario(plain + "[training]\nlocal_steps = 7\npersonalization = \"ditto\"\nditto_lambda = 0.5\n", "ok.toml");
  CHECK(s.training.personalization == "ditto");
  CHECK(s.training.personalizes());
  CHECK(s.training.ditto_lambda == 0.5);
  CHECK(s.training.personal_step_count() == 7);  // defaults to local_steps
  CHECK(parse_scenario(plain + "[training]\npersonal_steps = 3\n", "ok.toml").training.personal_step_count() == 3);
  CHECK_FALSE(parse_scenario(plain, "ok.toml").training.personalizes());
  CHECK_THAT(error_of("[training]\npersonalization = \"fedper\"\n"), Catch::Contains("training.personalization"));
  CHECK_THAT(error_of("[training]\npersonalization = \"fedper\"\n"), Catch::Contains("'shared-a'"));  // names the known ones
  CHECK_THAT(error_of("[training]\nditto_lambda = -1\n"), Catch::Contains("training.ditto_lambda"));
  CHECK_THAT(error_of("[training]\npersonal_steps = -2\n"), Catch::Contains("training.personal_steps"));
}

TEST_CASE("shared-a personalization: the federated vector is every A alone and what it is not built with is refused") {
  const std::string tiny = "[model]\nbase = \"tiny-random\"\nlora_rank = 2\ntargets = [\"q\", \"v\"]\n";
  const std::string plain = tiny + "[secagg]\nenabled = false\n";
  auto s = parse_scenario(plain + "[training]\npersonalization = \"shared-a\"\n", "ok.toml");
  CHECK(s.training.personalization == "shared-a");
  CHECK(s.training.personalizes());
  CHECK(s.training.personal_step_count() == 0);  // B trains in the rounds, nothing after them
  // The tiny preset's 4 layers, q (256 -> 256) and v (256 -> 128) at rank 2:
  // A is 2 x 256 per target and layer, B 256 x 2 or 128 x 2.
  CHECK(fedge::sims::federated_length(s) == 4 * (2 * 256 + 2 * 256));
  CHECK(fedge::sims::adapter_length(s) == 4 * (2 * (256 + 256) + 2 * (256 + 128)));
  // As ditto: not with FedBuff nor with heterogeneous ranks (yet).
  CHECK_THAT(error_of(plain + "[training]\npersonalization = \"shared-a\"\nmode = \"fedbuff\"\n"),
             Catch::Contains("training.mode") && Catch::Contains("personalization"));
  const std::string pi2 = "[nodes]\ncount = 4\ndevices = [\"raspberry-pi\", \"jetson\"]\n"
                          "[[device_profiles]]\nname = \"raspberry-pi\"\nlora_rank = 1\n";
  CHECK_THAT(error_of(plain + pi2 + "[training]\npersonalization = \"shared-a\"\nrank_aggregation = \"hetlora\"\n"),
             Catch::Contains("training.rank_aggregation") && Catch::Contains("\"shared-a\""));
}

TEST_CASE("heterogeneous LoRA ranks: device profiles set their rank, bad ranks and methods are refused naming the key") {
  const std::string nodes =
      "[nodes]\ncount = 4\ndevices = [\"raspberry-pi\", \"jetson\"]\n[model]\nlora_rank = 16\n[secagg]\nenabled = false\n";
  const std::string pi4 = "[[device_profiles]]\nname = \"raspberry-pi\"\nlora_rank = 4\n";
  auto s = parse_scenario(nodes + "[training]\nrank_aggregation = \"hetlora\"\n" + pi4, "ok.toml");
  CHECK(s.training.rank_aggregation == "hetlora");
  REQUIRE(s.node_devices.size() == 2);
  // A preset named with only lora_rank keeps the preset's speed and memory.
  CHECK(s.node_devices[0].lora_rank == 4);
  CHECK(s.node_devices[0].flops == fedge::sims::device_preset("raspberry-pi").flops);
  CHECK(fedge::sims::device_rank(s, s.node_devices[0]) == 4);
  CHECK(fedge::sims::device_rank(s, s.node_devices[1]) == 16);  // jetson: the maximum
  CHECK(parse_scenario(nodes, "ok.toml").training.rank_aggregation == "none");
  // FlexLoRA's federated vector is the dense products: tiny preset, q and v of every layer.
  auto flex = parse_scenario(nodes + "[training]\nrank_aggregation = \"flexlora\"\n" + pi4, "ok.toml");
  CHECK(fedge::sims::federated_length(flex) > fedge::sims::adapter_length(flex));
  CHECK(fedge::sims::federated_length(s) == fedge::sims::adapter_length(s));

  const std::string het = "[training]\nrank_aggregation = \"hetlora\"\n";
  CHECK_THAT(error_of(nodes + het + "[[device_profiles]]\nname = \"jetson\"\nlora_rank = 32\n"),
             Catch::Contains("device_profiles") && Catch::Contains("lora_rank") && Catch::Contains("rank 32") &&
                 Catch::Contains("above [model] lora_rank 16"));
  CHECK_THAT(error_of(nodes + het + "[[device_profiles]]\nname = \"jetson\"\nlora_rank = 0\n"),
             Catch::Contains("lora_rank"));
  CHECK_THAT(error_of(nodes + "[training]\nrank_aggregation = \"svd\"\n"),
             Catch::Contains("training.rank_aggregation") && Catch::Contains("hetlora"));
  CHECK_THAT(error_of(nodes + pi4),
             Catch::Contains("lora_rank") && Catch::Contains("rank_aggregation is \"none\""));
  CHECK_THAT(error_of(nodes + "[training]\nrank_aggregation = \"hetlora\"\nstrategy = \"fedmedian\"\n" + pi4),
             Catch::Contains("training.rank_aggregation") && Catch::Contains("fedmedian"));
  CHECK_THAT(error_of(nodes + "[training]\nrank_aggregation = \"flexlora\"\npersonalization = \"finetune\"\n" + pi4),
             Catch::Contains("training.rank_aggregation") && Catch::Contains("personalization"));
}

TEST_CASE("FedBuff keys read back and are checked") {
  const std::string plain = "[secagg]\nenabled = false\n";
  auto s = parse_scenario(plain + "[training]\nmode = \"fedbuff\"\nbuffer_size = 2\nmax_staleness = 4\n"
                                  "server_lr = 0.5\nstaleness_exponent = 1.0\ncompare_sync = true\nrounds = 3\n",
                          "ok.toml");
  CHECK(s.training.fedbuff());
  CHECK(s.training.buffer_size == 2);
  CHECK(s.training.max_staleness == 4);
  CHECK(s.training.server_lr == 0.5);
  CHECK(s.training.staleness_exponent == 1.0);
  CHECK(s.training.compare_sync);
  // 3 rounds of 8 nodes = 24 updates = 12 buffers of 2.
  CHECK(fedge::sims::federated_rounds(s) == 12);
  // Its own update budget: 25 updates = 13 buffers of 2 (the last one full).
  auto budget = parse_scenario(plain + "[training]\nmode = \"fedbuff\"\nbuffer_size = 2\nfedbuff_updates = 25\n",
                               "ok.toml");
  CHECK(budget.training.fedbuff_updates == 25);
  CHECK(fedge::sims::federated_rounds(budget) == 13);
  auto sync = parse_scenario(plain, "ok.toml");
  CHECK_FALSE(sync.training.fedbuff());
  CHECK(fedge::sims::federated_rounds(sync) == sync.training.rounds);
  const std::string fb = "[training]\nmode = \"fedbuff\"\n";
  CHECK_THAT(error_of("[training]\nmode = \"gossip\"\n"), Catch::Contains("training.mode"));
  CHECK_THAT(error_of("[training]\nbuffer_size = 3\n"),
             Catch::Contains("training.buffer_size") && Catch::Contains("only with mode = \"fedbuff\""));
  CHECK_THAT(error_of(plain + fb + "buffer_size = 0\n"), Catch::Contains("training.buffer_size"));
  CHECK_THAT(error_of(plain + fb + "fedbuff_updates = -4\n"), Catch::Contains("training.fedbuff_updates"));
  CHECK_THAT(error_of("[training]\nfedbuff_updates = 96\n"),
             Catch::Contains("training.fedbuff_updates") && Catch::Contains("only with mode = \"fedbuff\""));
  CHECK_THAT(error_of(plain + fb + "buffer_size = 9\n"),
             Catch::Contains("training.buffer_size") && Catch::Contains("8 nodes"));
  CHECK_THAT(error_of(plain + fb + "server_lr = 0\n"), Catch::Contains("training.server_lr"));
  CHECK_THAT(error_of(plain + fb + "max_staleness = -1\n"), Catch::Contains("training.max_staleness"));
  CHECK_THAT(error_of(plain + fb + "strategy = \"fedadam\"\n"),
             Catch::Contains("training.mode") && Catch::Contains("fedadam"));
  CHECK_THAT(error_of(plain + fb + "personalization = \"ditto\"\n"), Catch::Contains("training.mode"));
  CHECK_THAT(error_of(plain + fb + "[dp]\nenabled = true\n"), Catch::Contains("dp.enabled"));
  // Under SecAgg+ each buffer is a round among its contributors: 2 are too few.
  CHECK_THAT(error_of("[secagg]\nenabled = true\n" + fb + "buffer_size = 2\n"),
             Catch::Contains("training.buffer_size") && Catch::Contains("SecAgg+"));
}
