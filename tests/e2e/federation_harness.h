// A federation on loopback for end-to-end tests: CurveZMQ keys, synthetic
// per-site data, config files, and the real `fedge coordinator` / `fedge node`
// processes. The test then reads what they left on disk.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "e2e/process.h"
#include "fedge/common/param_vector.h"
#include "fedge/common/safetensors.h"
#include "fedge/protocol/keys.h"
#include "fedge/training/synth_data.h"
#include "test_util.h"

namespace fedge::testing {

namespace fs = std::filesystem;

inline std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class FederationHarness {
 public:
  // `allowed` of the `nodes` node keys go on the coordinator's allow-list.
  explicit FederationHarness(int nodes, int allowed = -1) : nodes_(nodes) {
    if (allowed < 0) allowed = nodes;
    fs::create_directories(root() / "keys");
    protocol::write_key_files(root() / "keys/coordinator", protocol::generate_curve_keypair());
    std::ofstream allow(root() / "keys/allowed.txt");
    for (int id = 1; id <= nodes; ++id) {
      const auto pair = protocol::generate_curve_keypair();
      protocol::write_key_files(root() / ("keys/node" + std::to_string(id)), pair);
      if (id <= allowed) allow << pair.public_z85 << " node" << id << "\n";
    }
    training::SynthOptions synth;
    synth.sites = nodes;
    synth.days = 12;
    synth.public_records = 10;
    synth.seed = 11;
    training::write_synth_dataset(training::make_synth_dataset(synth), root() / "data");
  }

  const fs::path& root() const { return dir_.path; }
  fs::path coordinator_state() const { return root() / "coordinator"; }
  fs::path node_state(int id) const { return root() / ("node" + std::to_string(id)); }
  fs::path adapter_file(std::uint64_t version) const {
    return coordinator_state() / "adapters" / ("v" + std::to_string(version)) / "adapter_model.safetensors";
  }
  fs::path update_file(int node, std::uint64_t round) const {
    return node_state(node) / "updates" / ("round_" + std::to_string(round) + ".safetensors");
  }
  fs::path site_file(int node, const std::string& name) const {
    char site[32];
    std::snprintf(site, sizeof site, "site_%02d", node - 1);
    return root() / "data" / site / name;
  }

  // [federation] settings are appended to the defaults below; `sections`
  // (whole tables, e.g. "[http]\n...") after them.
  std::unique_ptr<Process> start_coordinator(const std::string& federation_extra,
                                             const std::string& bind = "tcp://127.0.0.1:0",
                                             const std::string& sections = "") {
    const fs::path config = root() / "coordinator.toml";
    std::ofstream(config) << "[coordinator]\n"
                          << "bind = \"" << bind << "\"\n"
                          << "key = \"keys/coordinator.key\"\n"
                          << "allow_list = \"keys/allowed.txt\"\n"
                          << "state_dir = \"coordinator\"\n"
                          << "initial_adapter = \"initial_adapter\"\n"
                          << "endpoint_file = \"endpoint.txt\"\n"
                          << "finish_linger_ms = 2000\n"
                          << "[adapter]\nmodel = \"tiny\"\nrank = 4\nalpha = 8\n"
                          << "[federation]\n" << federation_extra << "\n" << sections << "\n";
    fs::remove(root() / "endpoint.txt");
    auto p = std::make_unique<Process>(
        std::vector<std::string>{FEDGE_BINARY, "--threads", "1", "coordinator", "--config", config.string()},
        root() / "coordinator.log");
    if (!eventually([&] { return fs::exists(root() / "endpoint.txt"); }, std::chrono::seconds(60))) {
      throw std::runtime_error("coordinator did not start:\n" + p->log_text());
    }
    endpoint_ = read_file(root() / "endpoint.txt");
    while (!endpoint_.empty() && (endpoint_.back() == '\n' || endpoint_.back() == ' ')) endpoint_.pop_back();
    return p;
  }

  // `node_extra`: lines of the [node] table; `train_extra`: of the [train] table.
  std::unique_ptr<Process> start_node(int id, const std::string& node_extra = "", const std::string& train_extra = "") {
    const fs::path config = root() / ("node" + std::to_string(id) + ".toml");
    std::ofstream(config) << "[node]\n"
                          << "id = " << id << "\n"
                          << "key = \"keys/node" << id << ".key\"\n"
                          << "state_dir = \"node" << id << "\"\n"
                          << "save_updates = true\n"
                          << node_extra << "\n"
                          << "[coordinator]\nendpoint = \"" << endpoint_ << "\"\n"
                          << "public_key = \"keys/coordinator.pub\"\n"
                          << "[data]\ntrain = \"" << site_file(id, "train.jsonl").string() << "\"\n"
                          << "eval = \"" << site_file(id, "eval.jsonl").string() << "\"\n"
                          << "seq_len = 96\n"
                          << "[train]\nlora_alpha = 8\n" << train_extra;
    return std::make_unique<Process>(
        std::vector<std::string>{FEDGE_BINARY, "--threads", "1", "node", "--config", config.string()},
        root() / ("node" + std::to_string(id) + ".log"));
  }

  const std::string& endpoint() const { return endpoint_; }
  int nodes() const { return nodes_; }

 private:
  TempDir dir_{"fedge_e2e_"};
  int nodes_;
  std::string endpoint_;
};

// The [federation] settings of two secure rounds of three nodes (6 local
// steps each), with `extra` lines of the [federation] table and whole
// `tables` (e.g. "[federation.strategy_params]\n...") after them.
inline std::string two_secure_rounds_of_three(const std::string& extra, const std::string& tables = "") {
  return "rounds = 2\nmin_nodes = 3\nheartbeat_interval_ms = 200\nliveness_timeout_ms = 4000\nretry_delay_ms = 300\n" +
         extra + tables +
         "[federation.train]\nlocal_steps = 6\nlearning_rate = 0.02\nbatch_size = 4\n"
         "[federation.deadlines]\ntrain_ms = 60000\n"
         "[federation.secagg]\nexpected_dropout = 0.001\nfailure_probability = 0.01\ncorrupt_fraction = 0.0\n"
         "clip_range = 4.0\n";
}

// Waits for the coordinator to run its rounds and exit, then for every node
// (each with exit_after_versions set); all must exit with 0. The logs are
// shown when one does not.
inline void require_clean_exits(Process& coordinator, std::vector<std::unique_ptr<Process>>& nodes) {
  const auto rc = coordinator.wait_for_exit(std::chrono::seconds(240));
  INFO("coordinator log:\n" << coordinator.log_text());
  REQUIRE(rc == 0);
  for (auto& n : nodes) {
    INFO("node log:\n" << n->log_text());
    CHECK(n->wait_for_exit(std::chrono::seconds(30)) == 0);
  }
}

// The FedAvg step the coordinator should have taken: global + the
// example-weighted mean of the given nodes' saved updates (matched by name).
inline std::vector<float> fedavg(const ParamVector& global, const std::vector<ParamVector>& updates,
                                 const std::vector<double>& weights) {
  std::vector<double> sum(global.size(), 0.0);
  double total = 0;
  for (std::size_t i = 0; i < updates.size(); ++i) {
    const ParamVector u = updates[i].remapped(global.layout());
    for (std::size_t j = 0; j < sum.size(); ++j) sum[j] += weights[i] * u.values()[j];
    total += weights[i];
  }
  std::vector<float> out(global.size());
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = global.values()[j] + static_cast<float>(sum[j] / total);
  return out;
}

// How far the global of `round` is from the previous global plus FedAvg of
// the `included` nodes' saved updates (weighted by their saved example counts),
// and how far it moved at all (largest absolute differences).
struct FedAvgCheck {
  double worst = 0;
  double moved = 0;
};
// What a round started from and produced, and the updates (with their example
// counts) these nodes saved for it.
struct RoundFiles {
  ParamVector before, after;  // globals of round - 1 and round, in before's layout
  std::vector<ParamVector> updates;
  std::vector<double> weights;
};
inline RoundFiles load_round(const FederationHarness& h, std::uint64_t round, const std::vector<int>& included) {
  RoundFiles r;
  r.before = ParamVector::load(h.adapter_file(round - 1));
  r.after = ParamVector::load(h.adapter_file(round)).remapped(r.before.layout());
  for (int id : included) {
    r.updates.push_back(ParamVector::load(h.update_file(id, round)));
    r.weights.push_back(std::stod(SafetensorsFile::open(h.update_file(id, round)).metadata().at("num_examples")));
  }
  return r;
}

inline FedAvgCheck compare_with_fedavg(const FederationHarness& h, std::uint64_t round,
                                       const std::vector<int>& included) {
  const RoundFiles files = load_round(h, round, included);
  const ParamVector& before = files.before;
  const ParamVector& after = files.after;
  const auto expected = fedavg(before, files.updates, files.weights);
  FedAvgCheck check;
  for (std::size_t j = 0; j < expected.size(); ++j) {
    check.worst = std::max(check.worst, std::abs(double(expected[j]) - after.values()[j]));
    check.moved = std::max(check.moved, std::abs(double(after.values()[j]) - before.values()[j]));
  }
  return check;
}

}  // namespace fedge::testing
