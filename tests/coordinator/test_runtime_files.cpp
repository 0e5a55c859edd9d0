// The coordinator's adapter files against power loss (issue 16, finding 9): a
// real CoordinatorRuntime (ROUTER, SQLite, adapter files; plain TCP) runs one
// plain round with one in-process node, while a probe records every fsync.
// When the round's row becomes visible in the store, the new version's
// adapter file and adapter_config.json must already be flushed, each through
// the atomic write (temporary file, fsync, rename, fsync of the directory),
// and so must the adapters/ directory that holds the new version's folder.
// Power loss itself cannot be simulated here; the flushes and their order
// relative to the row are what decide what survives it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "fedge/common/clock.h"
#include "fedge/common/param_vector.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/coordinator/store.h"
#include "fedge/federation/round_client.h"
#include "fedge/protocol/transport.h"
#include "fsync_probe.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace fedge;
using namespace std::chrono_literals;

namespace {

// One node without a model: registers, answers its TrainCommand at once.
void run_node(const std::string& endpoint, const std::atomic<bool>& stop) {
  protocol::Context ctx;
  protocol::Dealer dealer(ctx, endpoint);
  federation::NodeIdentity identity;
  identity.node_id = 1;
  identity.name = "n1";
  identity.capabilities.num_examples = 10;
  federation::RoundClient client(identity);
  auto apply = [&](federation::NodeActions actions) {
    while (true) {
      for (const auto& env : actions.send) dealer.send(protocol::encode(env));
      if (!actions.train) return;
      const std::vector<float> update(actions.train->update_length, 0.01F);
      actions = client.on_update_ready(unix_ms(), {actions.train->ticket, update, 10, 1.0});
    }
  };
  apply(client.start(unix_ms()));
  while (!stop.load()) {
    if (auto bytes = dealer.recv(20ms)) apply(client.on_message(unix_ms(), protocol::decode(*bytes, {})));
    apply(client.on_tick(unix_ms()));
  }
}

coordinator::CoordinatorRuntimeConfig one_plain_round(const fs::path& root) {
  fs::create_directories(root / "initial");
  ParamLayout layout;
  layout.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 8});
  ParamVector(layout).save(root / "initial/adapter_model.safetensors");
  std::ofstream(root / "initial/adapter_config.json") << "{\"r\": 2}\n";
  coordinator::CoordinatorRuntimeConfig c;
  c.bind = "tcp://127.0.0.1:0";
  c.insecure = true;
  c.state_dir = root / "state";
  c.initial_adapter = root / "initial";
  c.finish_linger_ms = 200;
  c.federation.rounds = 1;
  c.federation.min_nodes = 1;
  c.federation.secure = false;
  c.federation.heartbeat_interval_ms = 100;
  return c;
}

std::size_t index_of(const std::vector<fs::path>& flushed, const std::function<bool(const fs::path&)>& match,
                     std::size_t from = 0) {
  for (std::size_t i = from; i < flushed.size(); ++i)
    if (match(flushed[i])) return i;
  return flushed.size();
}

bool starts_with(const fs::path& p, const std::string& prefix) { return p.filename().string().rfind(prefix, 0) == 0; }

}  // namespace

TEST_CASE("coordinator: a new version's files and folders are on disk before the round's row") {
  testing::TempDir tmp("fedge_runtime_files_");
  const fs::path root = fs::canonical(tmp.path);
  const auto config = one_plain_round(root);
  const fs::path adapters = root / "state" / "adapters";
  const fs::path v1 = adapters / "v1";

  coordinator::CoordinatorRuntime runtime(config);  // writes version 0
  testing::FsyncProbe probe;
  // Watches the store from its own connection: what was flushed when the
  // round's row became visible, and which files existed then.
  std::optional<std::vector<fs::path>> flushed_at_row;
  bool files_at_row = false;
  std::atomic<bool> stop{false};
  std::thread watcher([&] {
    auto store = coordinator::Store::open(config.state_dir / "coordinator.db");
    while (!stop.load()) {
      if (store.completed_round(1)) {
        flushed_at_row = probe.paths();
        files_at_row = fs::exists(v1 / "adapter_model.safetensors") && fs::exists(v1 / "adapter_config.json");
        return;
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::thread node([&] { run_node(runtime.endpoint(), stop); });
  const int rc = runtime.run();
  stop.store(true);
  node.join();
  watcher.join();
  REQUIRE(rc == 0);
  REQUIRE(flushed_at_row.has_value());
  CHECK(files_at_row);

  const auto& flushed = *flushed_at_row;
  std::string list;
  for (const auto& p : flushed) list += "\n  " + p.string();
  INFO("flushed before the row was visible:" << list);
  const auto in_v1 = [&](const std::string& prefix) {
    return [&v1, prefix](const fs::path& p) { return p.parent_path() == v1 && starts_with(p, prefix); };
  };
  const auto is = [](const fs::path& dir) { return [dir](const fs::path& p) { return p == dir; }; };
  // v1's entry in adapters/, then each file's bytes under its temporary name
  // followed by v1 itself (which holds the rename).
  const std::size_t v1_entry = index_of(flushed, is(adapters));
  const std::size_t model = index_of(flushed, in_v1("adapter_model.safetensors.tmp"));
  const std::size_t model_renamed = index_of(flushed, is(v1), model);
  const std::size_t cfg = index_of(flushed, in_v1("adapter_config.json.tmp"));
  const std::size_t cfg_renamed = index_of(flushed, is(v1), cfg);
  CHECK(v1_entry < flushed.size());
  CHECK(model < flushed.size());
  CHECK(model_renamed < flushed.size());
  CHECK(cfg < flushed.size());
  CHECK(cfg_renamed < flushed.size());
  CHECK(v1_entry < model);
  // The row became visible through a commit that SQLite flushed (WAL,
  // synchronous = FULL) after all of the above.
  const std::size_t last_file = std::max(model_renamed, cfg_renamed);
  CHECK(index_of(flushed, is(root / "state" / "coordinator.db-wal"), last_file) < flushed.size());

  // Nothing half-written or temporary is left, and the config is the initial one.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(v1)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"});
  std::ifstream in(v1 / "adapter_config.json");
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == "{\"r\": 2}\n");
}

namespace {

// Runs `config`'s round(s) with the in-process node; returns the exit code.
int run_with_node(const coordinator::CoordinatorRuntimeConfig& config) {
  coordinator::CoordinatorRuntime runtime(config);
  std::atomic<bool> stop{false};
  std::thread node([&] { run_node(runtime.endpoint(), stop); });
  const int rc = runtime.run();
  stop.store(true);
  node.join();
  return rc;
}

// A whole LoRA pair (A 2x8, B 4x2, B non-zero) as the initial adapter.
void write_whole_initial(const fs::path& dir) {
  ParamLayout layout;
  layout.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 8});
  layout.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {4, 2});
  ParamVector initial(layout);
  for (std::size_t i = 0; i < initial.size(); ++i) initial.values()[i] = 0.5F + static_cast<float>(i);
  initial.save(dir / "adapter_model.safetensors");
}

}  // namespace

TEST_CASE("coordinator: under shared-a the rounds federate the initial adapter's A matrices only") {
  testing::TempDir tmp("fedge_runtime_shared_a_");
  const fs::path root = fs::canonical(tmp.path);
  auto config = one_plain_round(root);
  write_whole_initial(root / "initial");
  config.shared_a = true;
  REQUIRE(run_with_node(config) == 0);

  // v0 is the initial adapter as given; v1 holds A alone, moved by the node's
  // update (0.01 per float, the only one in the round).
  const auto v0 = ParamVector::load(root / "state/adapters/v0/adapter_model.safetensors");
  const auto v1 = ParamVector::load(root / "state/adapters/v1/adapter_model.safetensors");
  REQUIRE(v0.layout().entries().size() == 2);
  REQUIRE(v1.layout().entries().size() == 1);
  const std::string a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  REQUIRE(v1.layout().entries()[0].name == a);
  REQUIRE(v1.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) CHECK(v1.tensor(a)[i] == Approx(v0.tensor(a)[i] + 0.01F).margin(1e-6));

  // A restart under shared-a goes on from v1's A.
  config.federation.rounds = 2;
  REQUIRE(run_with_node(config) == 0);
  const auto v2 = ParamVector::load(root / "state/adapters/v2/adapter_model.safetensors");
  REQUIRE(v2.size() == 16);
  CHECK(v2.values()[0] == Approx(v0.values()[0] + 0.02F).margin(1e-6));
}

TEST_CASE("coordinator: switching a running federation to shared-a is refused naming the setting") {
  testing::TempDir tmp("fedge_runtime_shared_a_switch_");
  const fs::path root = fs::canonical(tmp.path);
  auto config = one_plain_round(root);
  write_whole_initial(root / "initial");
  REQUIRE(run_with_node(config) == 0);  // v1: a whole adapter
  config.shared_a = true;
  config.federation.rounds = 2;
  CHECK_THROWS_WITH(coordinator::CoordinatorRuntime(config),
                    Catch::Contains("v1 is a whole adapter") && Catch::Contains("personalization"));
}

TEST_CASE("coordinator: shared-a refuses an initial adapter that is not LoRA pairs") {
  testing::TempDir tmp("fedge_runtime_shared_a_bad_");
  const fs::path root = fs::canonical(tmp.path);
  auto config = one_plain_round(root);
  ParamLayout layout;
  layout.add("lm_head.weight", {4, 2});
  ParamVector(layout).save(root / "initial/adapter_model.safetensors");
  config.shared_a = true;
  CHECK_THROWS_WITH(coordinator::CoordinatorRuntime(config),
                    Catch::Contains("shared-a") && Catch::Contains("'lm_head.weight', has no partner"));
}
