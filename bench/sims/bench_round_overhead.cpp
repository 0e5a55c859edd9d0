// Protocol overhead of a federated round: everything but local training.
// A real coordinator (CoordinatorRuntime: ROUTER + CurveZMQ + SQLite + adapter
// files) and N node drivers (RoundClient + DEALER + CurveZMQ, one thread each)
// on loopback TCP. "Training" returns a fixed random update at once, so the
// round time is registration-free protocol work: plan, four SecAgg+ stages,
// aggregation, the adapter write and the new global's broadcast.
//
//   bench_round_overhead [--nodes 4,16,64] [--d 1048576] [--rounds 3] [--plain] [--prg chacha20|aes256ctr]
//
// Prints per node count: mean round time of rounds 2..R (round 1 also waits for
// registration), bytes up/down per node per round on the wire (encoded
// messages), and their ratio to the raw update (d float32).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "fedge/common/clock.h"
#include "fedge/common/machine.h"
#include "fedge/common/param_vector.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/coordinator/store.h"
#include "fedge/node/round_client.h"
#include "fedge/protocol/keys.h"
#include "fedge/protocol/transport.h"

namespace {

namespace fs = std::filesystem;
using namespace fedge;

// Bytes each way, summed over nodes, counted from the moment each node
// receives the plan of round 2 (registration, the first global and round 1
// excluded): rounds 2..R and the R-1 globals broadcast after them.
struct Traffic {
  std::atomic<std::uint64_t> up{0}, down{0};
};

// A node without a model: answers every TrainCommand at once with a fixed update.
void run_node(protocol::NodeId id, const std::string& endpoint, const protocol::CurveKeyPair& keys,
              const std::string& server_public, std::uint64_t d, Traffic& traffic, std::atomic<bool>& stop) {
  protocol::Context ctx;
  protocol::Dealer dealer(ctx, endpoint, {}, protocol::CurveClient{keys, server_public});
  node::NodeIdentity identity;
  identity.node_id = id;
  identity.name = "bench-" + std::to_string(id);
  identity.public_key = protocol::z85_to_key(keys.public_z85, "bench key");
  identity.capabilities.num_examples = 100;
  node::NodeClientConfig config;
  privacy::Key32 seed{};
  seed[0] = static_cast<std::uint8_t>(id);
  config.noise_seed = seed;
  node::RoundClient client(identity, config);
  std::mt19937 rng(id);
  std::uniform_real_distribution<float> uniform(-0.01f, 0.01f);
  std::vector<float> update(d);
  for (auto& x : update) x = uniform(rng);

  bool counting = false;
  std::uint64_t up = 0, down = 0;
  auto apply = [&](node::NodeActions actions) {
    while (true) {
      for (const auto& env : actions.send) {
        const auto bytes = protocol::encode(env);
        if (counting) up += bytes.size();
        dealer.send(bytes);
      }
      if (!actions.train) return;
      actions = client.on_update_ready(unix_ms(), node::LocalUpdate{actions.train->ticket, update, 100, 1.0});
    }
  };
  apply(client.start(unix_ms()));
  while (!stop.load()) {
    if (auto bytes = dealer.recv(std::chrono::milliseconds(20))) {
      const auto env = protocol::decode(*bytes, protocol::Limits{});
      if (std::holds_alternative<protocol::RoundPlan>(env.body) && env.round >= 2) counting = true;
      if (counting) down += bytes->size();
      apply(client.on_message(unix_ms(), env));
    }
    apply(client.on_tick(unix_ms()));
  }
  traffic.up += up;
  traffic.down += down;
}

struct Result {
  double round_s = 0;
  double up_per_node = 0, down_per_node = 0;
};

Result run(int nodes, std::uint64_t d, int rounds, bool secure, privacy::PrgKind prg, const fs::path& dir) {
  fs::remove_all(dir);
  fs::create_directories(dir / "initial");
  // The coordinator is layout-agnostic: one d-element tensor stands for an adapter.
  ParamLayout layout;
  layout.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {1, static_cast<std::int64_t>(d)});
  ParamVector(layout).save(dir / "initial/adapter_model.safetensors");
  std::ofstream(dir / "initial/adapter_config.json") << "{}\n";

  const auto server = protocol::generate_curve_keypair();
  protocol::write_key_files(dir / "coordinator", server);
  std::vector<protocol::CurveKeyPair> node_keys;
  {
    std::ofstream allow(dir / "allowed.txt");
    for (int i = 0; i < nodes; ++i) {
      node_keys.push_back(protocol::generate_curve_keypair());
      allow << node_keys.back().public_z85 << "\n";
    }
  }
  coordinator::CoordinatorRuntimeConfig config;
  config.bind = "tcp://127.0.0.1:0";
  config.key_file = dir / "coordinator.key";
  config.allow_list = dir / "allowed.txt";
  config.state_dir = dir / "state";
  config.initial_adapter = dir / "initial";
  config.finish_linger_ms = 500;
  config.federation.rounds = rounds;
  config.federation.min_nodes = nodes;
  config.federation.secure = secure;
  config.federation.corrupt_fraction = 0.0;
  config.federation.expected_dropout = 0.01;
  config.federation.failure_probability = 0.01;
  config.federation.heartbeat_interval_ms = 1000;
  config.federation.liveness_timeout_ms = 30000;
  config.federation.secagg_threads = 0;
  config.federation.secagg_prg = prg;

  config.federation.deadlines = {120000, 60000, 60000, 120000, 60000};
  coordinator::CoordinatorRuntime coordinator(config);
  const std::string endpoint = coordinator.endpoint();

  Traffic traffic;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < nodes; ++i) {
    threads.emplace_back(run_node, static_cast<protocol::NodeId>(i + 1), endpoint, node_keys[i], server.public_z85, d,
                         std::ref(traffic), std::ref(stop));
  }
  coordinator.run();
  stop.store(true);
  for (auto& t : threads) t.join();

  auto store = coordinator::Store::open(config.state_dir / "coordinator.db");
  double total_ms = 0;
  for (int r = 2; r <= rounds; ++r) {
    const auto round = store.completed_round(r);
    total_ms += static_cast<double>(round->finished_ms - round->started_ms);
  }
  Result result;
  const int measured = rounds - 1;
  result.round_s = total_ms / 1000.0 / measured;
  result.up_per_node = static_cast<double>(traffic.up.load()) / nodes / measured;
  result.down_per_node = static_cast<double>(traffic.down.load()) / nodes / measured;
  return result;
}

std::vector<int> parse_list(const std::string& text) {
  std::vector<int> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> node_counts = {4, 16, 64};
  std::uint64_t d = 1 << 20;
  int rounds = 3;
  bool secure = true;
  privacy::PrgKind prg = privacy::PrgKind::kChaCha20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--nodes" && i + 1 < argc) node_counts = parse_list(argv[++i]);
    else if (arg == "--d" && i + 1 < argc) d = std::stoull(argv[++i]);
    else if (arg == "--rounds" && i + 1 < argc) rounds = std::max(2, std::stoi(argv[++i]));
    else if (arg == "--plain") secure = false;
    else if (arg == "--prg" && i + 1 < argc)
      prg = std::string(argv[++i]) == "aes256ctr" ? privacy::PrgKind::kAes256Ctr : privacy::PrgKind::kChaCha20;
    else {
      std::fprintf(stderr, "usage: bench_round_overhead [--nodes 4,16,64] [--d N] [--rounds R] [--plain] "
                           "[--prg chacha20|aes256ctr]\n");
      return 2;
    }
  }
  spdlog::set_level(std::getenv("BENCH_DEBUG") ? spdlog::level::debug : spdlog::level::warn);
  std::printf("machine: %s\n", fedge::machine_summary().c_str());
  std::printf("workload: one %s round on loopback TCP + CurveZMQ, d = %llu floats (%.1f MB raw), instant training, "
              "mean of rounds 2..%d, masks %s\n",
              secure ? "SecAgg+" : "plain", static_cast<unsigned long long>(d), d * 4.0 / 1e6, rounds,
              privacy::prg_name(prg));
  std::printf("%6s %12s %16s %16s %10s %10s\n", "nodes", "round s", "up MB/node", "down MB/node", "up/raw",
              "down/raw");
  const fs::path dir = fs::temp_directory_path() / ("fedge_bench_round_" + std::to_string(::getpid()));
  for (int n : node_counts) {
    const auto r = run(n, d, rounds, secure, prg, dir);
    const double raw = d * 4.0;
    std::printf("%6d %12.3f %16.2f %16.2f %10.3f %10.3f\n", n, r.round_s, r.up_per_node / 1e6,
                r.down_per_node / 1e6, r.up_per_node / raw, r.down_per_node / raw);
    std::fflush(stdout);
  }
  if (!std::getenv("BENCH_KEEP")) fs::remove_all(dir);
  std::printf("peak RSS %.0f MB\n", fedge::peak_rss_megabytes());
  return 0;
}
