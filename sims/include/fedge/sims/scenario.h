// A simulation scenario, read from TOML and fully validated before any work
// starts: unknown keys, unknown levels or presets, impossible secure-aggregation
// settings and more nodes than data are errors naming file:line:col and the key.
// sims/scenarios/quickstart.toml documents every key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/inference/model_config.h"
#include "fedge/sims/clock.h"
#include "fedge/sims/metrics.h"
#include "fedge/sims/partition.h"

namespace fedge::sims {

struct ModelSettings {
  // "tiny-pretrained": the tiny preset pretrained on the public corpus and cached
  // in $FEDGE_CACHE (default ~/.cache/fedge)/tiny-base-v1, as scripts/quickstart.sh
  // does; "tiny-random": the untrained tiny preset (tests); else a HF folder.
  std::string base = "tiny-pretrained";
  std::int64_t pretrain_steps = 300;
  // How the nodes hold the base in memory: "f32", "bf16", "f16", "q8_0" or
  // "q4_0" (GGUF's blocks; LoRA then trains over the quantized base: QLoRA).
  std::string quant = "f32";
  int lora_rank = 16;
  double lora_alpha = 32.0;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  int seq_len = 128;
};

struct DataSettings {
  // "synthetic": the built-in well generator (sites, days, wells_per_site);
  // "files": the user's own records (docs/SIMULATOR.md, "Your own data").
  std::string source = "synthetic";
  int sites = 8, days = 12, wells_per_site = 3;
  double eval_fraction = 0.5;  // files: of each site's records, held out by a seeded shuffle
  int public_records = 6000;
  bool instructions = true;  // train on the status questions too; report accuracy
  // source = "files": one site per file (`files`), or one file whose
  // `site_column` names each record's site (`file`). Paths are relative to
  // the scenario file. format "auto" tells JSONL, CSV and fortune files by
  // their extension (training::record_format_of).
  std::vector<std::filesystem::path> files;
  std::filesystem::path file;
  std::string site_column;
  std::string format = "auto";
  int max_records_per_site = 0;  // a seeded sample of at most this many per site (0: all)
  bool from_files() const { return source == "files"; }
};

struct TrainingSettings {
  int rounds = 5;
  int local_steps = 20;         // per round, levels 4/5
  int batch_size = 8;
  double lr = 3e-3;
  int central_steps = 200;      // levels 0-3: one adapter on pooled raw data
  int local_only_steps = 100;   // level 6: each node alone
  std::string strategy = "fedavg";  // a built-in or plug-in name (aggregation::make_strategy)
  std::map<std::string, double> strategy_params;  // [training.strategy_params]
  // "scaffold" (docs/SIMULATOR.md, "SCAFFOLD"): the federated vector is the
  // adapter and the server control variate, [x ; c], twice the adapter's length.
  bool scaffold() const { return strategy == "scaffold"; }
  double fraction = 1.0;        // share of nodes picked per round
  int min_nodes = 2;
  double fedprox_mu = 0.0;
  // Levels 4/5: the coordinator's caps on self-reported example counts
  // (federation::WeightCaps): a count above max_examples counts as it, and no
  // node weighs more than max_weight_share of a round (1 = weights by examples).
  std::int64_t max_examples = 1'000'000;
  double max_weight_share = 0.5;
  bool eval_every_round = true;  // levels 4/5: held-out quality after every round, or the last only
  // Cross-device: false ("selected") sends the global only to the nodes a
  // round selects, so idle virtual nodes neither download nor hold it
  // (federation::FederationConfig::send_global_to_all). Default: "all" when
  // fraction = 1, "selected" when fewer nodes take part in a round.
  bool send_global_to_all = true;
  // Held-out quality (the base's, each round's, levels 0-3's and 6's) on a
  // fixed, seeded sample of this many nodes; 0 = every node. Evaluating every
  // one of 10,000 nodes would cost more than their training.
  int eval_nodes = 0;
  // Levels 4/5: each node's personal adapter on top of the federation
  // (docs/SIMULATOR.md, "Personalization"). "finetune": personal_steps local
  // steps from the final global on the node's own records; "ditto": after each
  // round it took part in, personal_steps steps of the node's own adapter with
  // the proximal term ditto_lambda/2 * ||v - w_global||^2. The global adapter
  // and its federation are the same as with "none". "shared-a" (FedSA-LoRA):
  // the rounds aggregate only LoRA's A matrices; each node keeps the B it
  // trains in them, which never leaves it (no personal steps of its own).
  std::string personalization = "none";
  int personal_steps = 0;      // 0: local_steps ("finetune", "ditto")
  double ditto_lambda = 0.1;
  bool personalizes() const { return personalization != "none"; }
  // Heterogeneous LoRA ranks (docs/SIMULATOR.md, "Heterogeneous ranks"): how
  // levels 4/5 combine the nodes' adapters when device profiles set their own
  // lora_rank: "hetlora" (zero-padding, rank-wise weights) or "flexlora" (SVD
  // of the mean product); "none": every node trains [model] lora_rank.
  std::string rank_aggregation = "none";
  // Levels 4/5 (docs/SIMULATOR.md, "Asynchronous rounds (FedBuff)"): "sync"
  // rounds wait for every selected node; "fedbuff" nodes train continuously
  // and the coordinator takes a server step (aggregation/fedbuff.h) whenever
  // buffer_size updates are buffered (a SecAgg+ instance among them when
  // [secagg] is on); `rounds` then counts server steps (global versions).
  std::string mode = "sync";
  int buffer_size = 4;            // K
  // Local updates FedBuff aggregates before it stops; 0: the synchronous
  // run's rounds * nodes_per_round (equal training compute). Time-to-quality
  // comparisons give FedBuff more: its updates are cheaper in time but stale.
  int fedbuff_updates = 0;
  int max_staleness = 10;         // updates staler than this many versions are dropped
  double server_lr = 1.0;         // eta_g
  double staleness_exponent = 0.5;  // w(s) = (1 + s)^-exponent
  // "fedbuff": also run each federated level synchronously and write both
  // quality-against-simulated-time curves to quality_time.csv.
  bool compare_sync = false;
  bool fedbuff() const { return mode == "fedbuff"; }
  // Steps of one personal update: 0 under "shared-a" (its B trains in the rounds).
  int personal_step_count() const {
    if (personalization == "shared-a") return 0;
    return personal_steps > 0 ? personal_steps : local_steps;
  }
};

struct SecAggSettings {
  bool enabled = true;
  double dropout_rate = 0.1;      // expected, for choosing degree and threshold
  double corrupt_fraction = 0.2;  // clients that may collude with the server
  double failure_probability = 1e-6;  // of a round failing at the expected dropout
};

struct DpSettings {
  bool enabled = false;
  double clip_norm = 1.0;
  double noise_multiplier = 0.0;  // central Gaussian noise on the mean, in units of clip/n
  double delta = 1e-5;
};

struct ServingSettings {
  int requests_per_node = 20;  // spread evenly over duration_s of serving
  double duration_s = 3600.0;
  int max_new_tokens = 16;
  int eval_accuracy_records = 6;  // instruction records per node for exact match (0: none)
};

struct Scenario {
  std::string source;  // file name, for messages
  std::string text;    // the TOML it was read from (node hosts get it from the coordinator)
  std::string name = "scenario";
  // This run's seed: the data split, adapter initialisation, training order,
  // node keys and dropouts derive from it. Seed index 0 is the scenario's
  // `seed`; index s > 0 is derive_seed(scenario_seed, "seeds/<s>") (for_seed_index).
  std::uint64_t seed = 1;
  // The scenario file's `seed`: the generated site data and a random base model
  // derive from it, so every seed index sees the same records and base.
  std::uint64_t scenario_seed = 1;
  int seeds = 1;       // [run] seeds (or fedge sim --seeds): how many seed indices a run covers
  int seed_index = 0;  // which of them this Scenario is
  std::vector<int> levels = {0, 1, 2, 3, 4, 5, 6};
  int nodes = 8;
  std::vector<DeviceProfile> node_devices;  // one per node (a list cycles)
  NetworkProfile node_network;              // node <-> cloud (WAN)
  NetworkProfile edge_network;              // node <-> edge server (edge LAN)
  DeviceProfile cloud, edge_server;
  int split_layers = 1;                     // level 1: layers run on the node
  ModelSettings model;
  DataSettings data;
  PartitionOptions partition;
  TrainingSettings training;
  SecAggSettings secagg;
  DpSettings dp;
  ServingSettings serving;
  OutageWindow outage;  // in serving time
  std::filesystem::path cache_dir;  // where the pretrained tiny base lives
};

Scenario load_scenario(const std::filesystem::path& path);

// The scenario as seed index `index` (0 <= index < seeds) runs it: seed and
// partition seed from scenario_seed and the index (index 0 is the scenario itself).
Scenario for_seed_index(const Scenario& scenario, int index);
std::uint64_t seed_for_index(std::uint64_t scenario_seed, int index);
Scenario parse_scenario(std::string_view text, const std::string& source_name);

// The number of trainable floats of the scenario's adapter (for secagg checks).
std::uint64_t adapter_length(const Scenario& scenario);
// The floats of one federated update (levels 4/5): the adapter; under
// FlexLoRA the dense products B A of every LoRA pair; under personalization
// "shared-a" every A (rank x in) alone; under SCAFFOLD the adapter and its
// control variate (twice the adapter).
std::uint64_t federated_length(const Scenario& scenario);
// A node's LoRA rank: its device profile's lora_rank, else [model] lora_rank.
int device_rank(const Scenario& scenario, const DeviceProfile& device);

// What a node's device needs in memory to run the scenario's base on the node
// (an estimate, documented in docs/SIMULATOR.md): inference holds the f32
// weights and a KV cache; training adds the LoRA state and one batch's
// activations. Scenarios whose node devices cannot hold it are refused.
struct MemoryNeed {
  double inference_bytes = 0;
  double training_bytes = 0;
};
MemoryNeed device_memory_need(const Scenario& scenario, const inference::ModelConfig& config,
                              std::uint64_t adapter_floats);

std::string level_name(int level);

// Nodes a synchronous round selects: max(min_nodes, ceil(fraction * nodes)).
int nodes_per_round(const Scenario& scenario);
// How many global versions levels 4/5 publish (the `round` of their rows):
// `rounds` when synchronous; with FedBuff as many server steps as aggregate
// fedbuff_updates local updates, ceil(updates / buffer_size), where 0 means
// the synchronous run's rounds * nodes_per_round (the same training compute).
int federated_rounds(const Scenario& scenario);

}  // namespace fedge::sims
