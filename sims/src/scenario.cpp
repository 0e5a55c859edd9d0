#include "fedge/sims/scenario.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "fedge/aggregation/secagg.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/common/config.h"
#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model_config.h"
#include "fedge/inference/model_gguf.h"
#include "fedge/training/commands.h"
#include "fedge/training/data_files.h"

namespace fedge::sims {
namespace {

using config::Range;
using config::Table;

std::filesystem::path default_cache_dir() {
  if (const char* c = std::getenv("FEDGE_CACHE"); c && *c) return c;
  if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache" / "fedge";
  return std::filesystem::temp_directory_path() / "fedge-cache";
}

// Custom profiles ([[device_profiles]] / [[network_profiles]]) shadow presets.
struct Profiles {
  std::map<std::string, DeviceProfile> devices;
  std::map<std::string, NetworkProfile> networks;
};

bool preset_named(const std::string& name) {
  const auto names = device_preset_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

DeviceProfile with_preset_defaults(const Table& t, const DeviceProfile& read) {
  DeviceProfile d = device_preset(read.name);
  d.lora_rank = read.lora_rank;
  if (t.has("memory_mb") && t.has("memory_gb")) t.fail("memory_mb", "set memory_mb or memory_gb, not both");
  if (t.has("memory_mb")) d.memory_bytes = t.number("memory_mb", 0.0, {1.0, 1e9}) * 1024.0 * 1024.0;
  if (t.has("memory_gb")) d.memory_bytes = t.number("memory_gb", 8.0, {0.001, 1e6}) * 1e9;
  d.power_w = t.number("power_w", d.power_w, {0.0, 1e6});
  return d;
}

Profiles read_profiles(const Table& root) {
  Profiles p;
  for (const auto& t : root.tables("device_profiles")) {
    DeviceProfile d;
    d.name = t.required_string("name");
    d.lora_rank = static_cast<int>(t.integer("lora_rank", 0, {1, 1024}));
    if (!t.has("gflops") && preset_named(d.name)) {
      // A preset with changes (e.g. only its lora_rank): what is not set stays the preset's.
      d = with_preset_defaults(t, d);
      p.devices[d.name] = d;
      continue;
    }
    d.flops = t.required_number("gflops", {1e-6, 1e9}) * 1e9;
    // memory_mb (MiB, as a node's [node] memory_mb) or memory_gb (1e9 bytes).
    if (t.has("memory_mb") && t.has("memory_gb"))
      t.fail("memory_mb", "set memory_mb or memory_gb, not both");
    d.memory_bytes = t.has("memory_mb") ? t.number("memory_mb", 0.0, {1.0, 1e9}) * 1024.0 * 1024.0
                                        : t.number("memory_gb", 8.0, {0.001, 1e6}) * 1e9;
    d.power_w = t.number("power_w", 10.0, {0.0, 1e6});
    p.devices[d.name] = d;
  }
  for (const auto& t : root.tables("network_profiles")) {
    NetworkProfile n;
    n.name = t.required_string("name");
    n.up_bps = t.required_number("up_mbps", {1e-6, 1e7}) * 1e6;
    n.down_bps = t.required_number("down_mbps", {1e-6, 1e7}) * 1e6;
    n.latency_s = t.number("latency_ms", 10.0, {0.0, 1e7}) / 1e3;
    n.loss = t.number("loss", 0.0, {0.0, 0.9});
    n.dropout = t.number("dropout", 0.0, {0.0, 1.0});
    p.networks[n.name] = n;
  }
  return p;
}

DeviceProfile device_at(const Profiles& p, const Table& t, const std::string& key, const std::string& name) {
  if (auto it = p.devices.find(name); it != p.devices.end()) return it->second;
  try {
    return device_preset(name);
  } catch (const Error& e) {
    t.fail(key, e.what());
  }
}

NetworkProfile network_at(const Profiles& p, const Table& t, const std::string& key, const std::string& name) {
  if (auto it = p.networks.find(name); it != p.networks.end()) return it->second;
  try {
    return network_preset(name);
  } catch (const Error& e) {
    t.fail(key, e.what());
  }
}

void read_model(const Table& t, ModelSettings& m) {
  m.base = t.string("base", m.base);
  m.pretrain_steps = t.integer("pretrain_steps", m.pretrain_steps, {1, 1000000});
  m.quant = t.string("quant", m.quant, inference::weight_type_names());
  m.lora_rank = static_cast<int>(t.integer("lora_rank", m.lora_rank, {1, 1024}));
  m.lora_alpha = t.number("lora_alpha", m.lora_alpha, {1e-6, 1e6});
  if (t.has("targets")) {
    auto list = t.strings("targets", {});
    std::string joined;
    for (const auto& s : list) joined += (joined.empty() ? "" : ",") + s;
    try {
      m.targets = training::parse_lora_targets(joined);
      inference::LoraConfig probe;
      probe.target_modules = m.targets;
      probe.validate("targets");
    } catch (const Error& e) {
      t.fail("targets", e.what());
    }
  }
  m.seq_len = static_cast<int>(t.integer("seq_len", m.seq_len, {8, 512}));
}

// A data file's path: relative ones from the scenario file's folder. A file
// that is not there is an error at the scenario key that names it.
std::filesystem::path data_path(const Table& t, const std::string& key, const std::string& name,
                                const std::filesystem::path& scenario_dir) {
  if (name.empty()) t.fail(key, "names an empty path");
  std::filesystem::path p(name);
  if (p.is_relative()) p = scenario_dir / p;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec)) {
    t.fail(key, "data file " + p.string() + " does not exist or is not a file" +
                    (p.string().find("/usr/share/games/fortunes") == 0
                         ? " (Debian's fortunes package: scripts/install-deps.sh installs it)"
                         : ""));
  }
  if (t.string("format", "auto") == "auto") {
    try {
      training::record_format_of(p);
    } catch (const Error& e) {
      t.fail(key, e.what());
    }
  }
  return p;
}

// [data] source = "files": the generator's keys do not apply, and exactly one
// of files (a site per file) or file + site_column (a site per column value).
void read_data_files(const Table& t, DataSettings& d, const std::filesystem::path& scenario_dir) {
  for (const char* key : {"sites", "days", "wells_per_site", "public_records", "instructions"}) {
    if (t.has(key)) t.fail(key, "belongs to the synthetic generator; with source = \"files\" the sites are the files");
  }
  d.format = t.string("format", d.format, {"auto", "jsonl", "csv", "fortune"});
  d.max_records_per_site = static_cast<int>(t.integer("max_records_per_site", 0, {0, 100000000}));
  if (t.has("files") == t.has("file")) {
    t.fail(t.has("file") ? "file" : "source",
           "source = \"files\" needs either files = [...] (one site per file) or file = \"...\" with site_column");
  }
  if (t.has("files")) {
    if (t.has("site_column")) t.fail("site_column", "applies to one file (file = \"...\"), not to a list of files");
    const auto names = t.strings("files", {});
    if (names.empty()) t.fail("files", "names no file");
    std::set<std::filesystem::path> seen;
    for (const auto& name : names) {
      d.files.push_back(data_path(t, "files", name, scenario_dir));
      if (!seen.insert(d.files.back().lexically_normal()).second) t.fail("files", "names " + name + " twice");
    }
  } else {
    d.file = data_path(t, "file", t.string("file", ""), scenario_dir);
    if (!t.has("site_column")) t.fail("file", "one file needs site_column, the field or column naming each record's site");
    d.site_column = t.string("site_column", "");
    if (d.site_column.empty()) t.fail("site_column", "is empty");
  }
}

void read_data(const Table& t, DataSettings& d, const std::filesystem::path& scenario_dir) {
  d.source = t.string("source", d.source, {"synthetic", "files"});
  d.eval_fraction = t.number("eval_fraction", d.eval_fraction, {0.01, 0.99});
  if (d.from_files()) return read_data_files(t, d, scenario_dir);
  for (const char* key : {"files", "file", "site_column", "format", "max_records_per_site"}) {
    if (t.has(key)) t.fail(key, "applies to source = \"files\" (this scenario uses the synthetic generator)");
  }
  d.sites = static_cast<int>(t.integer("sites", d.sites, {1, 100000}));
  d.days = static_cast<int>(t.integer("days", d.days, {2, 100000}));
  d.wells_per_site = static_cast<int>(t.integer("wells_per_site", d.wells_per_site, {1, 1000}));
  d.public_records = static_cast<int>(t.integer("public_records", d.public_records, {0, 10000000}));
  d.instructions = t.boolean("instructions", d.instructions);
}

void read_training(const Table& t, TrainingSettings& s) {
  s.rounds = static_cast<int>(t.integer("rounds", s.rounds, {1, 100000}));
  s.local_steps = static_cast<int>(t.integer("local_steps", s.local_steps, {1, 1000000}));
  s.batch_size = static_cast<int>(t.integer("batch_size", s.batch_size, {1, 4096}));
  s.lr = t.number("lr", s.lr, {1e-9, 10.0});
  s.central_steps = static_cast<int>(t.integer("central_steps", s.central_steps, {1, 10000000}));
  s.local_only_steps = static_cast<int>(t.integer("local_only_steps", s.local_only_steps, {1, 10000000}));
  s.strategy = t.string("strategy", s.strategy);
  const Table params = t.table("strategy_params");  // checked against the strategy by make_strategy
  for (const std::string& key : params.keys()) s.strategy_params[key] = params.number(key, 0.0);
  if (s.scaffold() && params.has("num_nodes"))
    params.fail("num_nodes", "scaffold's N is set by the simulator from [nodes] count; remove it");
  s.fraction = t.number("fraction", s.fraction, {1e-6, 1.0});
  s.min_nodes = static_cast<int>(t.integer("min_nodes", s.min_nodes, {1, 1000000}));
  s.fedprox_mu = t.number("fedprox_mu", s.fedprox_mu, {0.0, 1e6});
  s.max_examples = t.integer("max_examples", s.max_examples, {1, std::numeric_limits<std::int64_t>::max()});
  s.max_weight_share = t.number("max_weight_share", s.max_weight_share, {1e-9, 1.0});
  s.eval_every_round = t.boolean("eval_every_round", s.eval_every_round);
  // "all": every live node gets each new global; "selected": only the nodes a round selects, with its plan.
  const std::string send = t.string("send_global", s.fraction < 1.0 ? "selected" : "all", {"all", "selected"});
  s.send_global_to_all = send == "all";
  s.eval_nodes = static_cast<int>(t.integer("eval_nodes", s.eval_nodes, {0, 1000000}));
  s.personalization = t.string("personalization", s.personalization, {"none", "finetune", "ditto", "shared-a"});
  s.personal_steps = static_cast<int>(t.integer("personal_steps", s.personal_steps, {0, 1000000}));
  s.ditto_lambda = t.number("ditto_lambda", s.ditto_lambda, {0.0, 1e6});
  s.rank_aggregation = t.string("rank_aggregation", s.rank_aggregation, {"none", "hetlora", "flexlora"});
  s.mode = t.string("mode", s.mode, {"sync", "fedbuff"});
  s.buffer_size = static_cast<int>(t.integer("buffer_size", s.buffer_size, {1, 1000000}));
  s.fedbuff_updates = static_cast<int>(t.integer("fedbuff_updates", s.fedbuff_updates, {0, 100000000}));
  s.max_staleness = static_cast<int>(t.integer("max_staleness", s.max_staleness, {0, 1000000}));
  s.server_lr = t.number("server_lr", s.server_lr, {1e-9, 1e3});
  s.staleness_exponent = t.number("staleness_exponent", s.staleness_exponent, {0.0, 100.0});
  s.compare_sync = t.boolean("compare_sync", s.compare_sync);
  if (!s.fedbuff()) {
    for (const char* key :
         {"buffer_size", "fedbuff_updates", "max_staleness", "server_lr", "staleness_exponent", "compare_sync"})
      if (t.has(key)) t.fail(key, "applies only with mode = \"fedbuff\"");
  }
}

// Device ranks against [model] lora_rank (the maximum) and [training]
// rank_aggregation: a rank above the maximum, or below it without a method to
// combine ranks, is an error naming the profile's lora_rank.
void check_ranks(const Table& root, const Scenario& s) {
  const int max = s.model.lora_rank;
  for (const auto& t : root.tables("device_profiles")) {
    if (!t.has("lora_rank")) continue;
    const auto rank = t.integer("lora_rank", 0, {1, 1024});
    const std::string name = t.string("name", "");
    if (rank > max)
      t.fail("lora_rank", "device profile '" + name + "' asks for LoRA rank " + std::to_string(rank) +
                              ", above [model] lora_rank " + std::to_string(max) +
                              " (the maximum: the global adapter's rank)");
    const bool used = std::any_of(s.node_devices.begin(), s.node_devices.end(),
                                  [&](const DeviceProfile& d) { return d.name == name; });
    if (rank < max && used && s.training.rank_aggregation == "none")
      t.fail("lora_rank", "device profile '" + name + "' trains LoRA rank " + std::to_string(rank) + " below [model] lora_rank " +
                              std::to_string(max) + ", but [training] rank_aggregation is \"none\"; set it to "
                              "\"hetlora\" or \"flexlora\"");
  }
  if (s.training.rank_aggregation == "none") return;
  const Table training = root.table("training");
  if (s.training.personalizes())
    training.fail("rank_aggregation", "heterogeneous ranks with personalization \"" + s.training.personalization +
                                          "\" are not built yet; use personalization = \"none\"");
  if (s.training.rank_aggregation == "hetlora") {
    bool individual = false;
    try {
      individual = aggregation::make_strategy(s.training.strategy, s.training.strategy_params, s.secagg.enabled)
                       ->needs_individual_updates();
    } catch (const Error&) {
      return;  // check_feasible names the strategy's own problem
    }
    if (individual)
      training.fail("rank_aggregation", "\"hetlora\" takes rank-wise means of sums; strategy '" +
                                            s.training.strategy + "' needs each update on its own");
  }
}

// FedBuff's own limits: what it is not built with yet, and its buffer under SecAgg+.
void check_fedbuff(const Table& root, const Scenario& s) {
  const Table training = root.table("training");
  if (s.training.buffer_size > s.nodes)
    training.fail("buffer_size", std::to_string(s.training.buffer_size) + " updates per buffer, but the scenario has " +
                                     std::to_string(s.nodes) + " nodes");
  if (s.training.strategy != "fedavg")
    training.fail("mode", "\"fedbuff\" takes its own server step (server_lr); strategy must be \"fedavg\", not \"" +
                              s.training.strategy + "\"");
  if (s.training.personalizes())
    training.fail("mode", "\"fedbuff\" with personalization is not built yet; use personalization = \"none\"");
  if (s.training.rank_aggregation != "none")
    training.fail("mode", "\"fedbuff\" with heterogeneous ranks (rank_aggregation) is not built yet");
  if (s.dp.enabled) root.table("dp").fail("enabled", "differential privacy with mode = \"fedbuff\" is not built yet");
  if (!s.secagg.enabled) return;
  try {
    aggregation::validate(aggregation::choose_secagg_params(static_cast<std::uint32_t>(s.training.buffer_size),
                                                            adapter_length(s) + 2, s.secagg.dropout_rate,
                                                            s.secagg.corrupt_fraction, s.secagg.failure_probability));
  } catch (const Error& e) {
    training.fail("buffer_size", "each buffer is a SecAgg+ round among its " + std::to_string(s.training.buffer_size) +
                                     " contributors, which cannot run: " + e.what() +
                                     " (raise buffer_size or lower [secagg] dropout_rate)");
  }
}

// SCAFFOLD's limits: what it is not built with yet (each would need the
// control variate's half of the vector handled on its own).
void check_scaffold(const Table& root, const Scenario& s) {
  const Table training = root.table("training");
  const std::string not_yet = "strategy \"scaffold\" with ";
  if (s.training.fedbuff())
    training.fail("mode", not_yet + "mode = \"fedbuff\" is not built yet; use mode = \"sync\"");
  if (s.training.personalizes())
    training.fail("personalization", not_yet + "personalization \"" + s.training.personalization +
                                         "\" is not built yet; use personalization = \"none\"");
  if (s.training.rank_aggregation != "none")
    training.fail("rank_aggregation", not_yet + "heterogeneous ranks (rank_aggregation = \"" +
                                          s.training.rank_aggregation + "\") is not built yet; use \"none\"");
  if (s.dp.enabled)
    root.table("dp").fail("enabled", not_yet + "differential privacy is not built yet (one clip norm would bind the "
                                     "adapter's update and the control variate's together)");
}

std::vector<int> read_levels(const Table& root) {
  auto levels = root.integers("levels", {0, 1, 2, 3, 4, 5, 6});
  std::set<int> seen;
  for (auto l : levels) {
    if (l < 0 || l > 6) root.fail("levels", "unknown paradigm level " + std::to_string(l) + " (levels are 0 to 6)");
    if (!seen.insert(static_cast<int>(l)).second) root.fail("levels", "level " + std::to_string(l) + " twice");
  }
  if (levels.empty()) root.fail("levels", "names no level (levels are 0 to 6)");
  return {seen.begin(), seen.end()};
}

void read_nodes(const Table& t, const Profiles& p, Scenario& s) {
  s.nodes = static_cast<int>(t.integer("count", s.nodes, {1, 1000000}));
  auto devices = t.strings("devices", {t.string("device", "raspberry-pi")});
  for (const auto& name : devices) s.node_devices.push_back(device_at(p, t, t.has("devices") ? "devices" : "device", name));
  s.node_network = network_at(p, t, "network", t.string("network", "wan"));
  s.edge_network = network_at(p, t, "edge_network", t.string("edge_network", "edge-lan"));
  if (t.has("dropout")) s.node_network.dropout = s.edge_network.dropout = t.number("dropout", 0.0, {0.0, 1.0});
}

// Nodes against records: for the generator from its settings; file data is
// counted when it is read (sims::load_file_sites), before any model work.
void check_synthetic_counts(const Table& root, const Scenario& s) {
  const Table nodes = root.table("nodes");
  std::int64_t eval_days = std::max<std::int64_t>(1, std::llround(s.data.days * s.data.eval_fraction));
  std::int64_t train_items = static_cast<std::int64_t>(s.data.sites) * (s.data.days - eval_days) * s.data.wells_per_site;
  if (train_items < static_cast<std::int64_t>(s.nodes) * std::max(1, s.partition.min_per_node)) {
    nodes.fail("count", std::to_string(s.nodes) + " nodes need at least " +
                            std::to_string(std::max(1, s.partition.min_per_node)) + " training record(s) each, but [data] makes only " +
                            std::to_string(train_items) + " (raise sites or days, or lower nodes or partition.min_per_node)");
  }
  if (s.partition.kind == PartitionKind::kBySite && s.nodes > s.data.sites &&
      train_items / s.data.sites < (s.nodes + s.data.sites - 1) / s.data.sites * std::max(1, s.partition.min_per_node)) {
    nodes.fail("count", "by-site split: " + std::to_string(s.nodes) + " nodes over " + std::to_string(s.data.sites) +
                            " sites leaves a node with fewer than min_per_node records");
  }
}

void check_feasible(const Table& root, Scenario& s) {
  if (!s.data.from_files()) check_synthetic_counts(root, s);
  const Table training = root.table("training");
  int selected = nodes_per_round(s);
  if (selected > s.nodes) {
    training.fail("min_nodes", "asks for " + std::to_string(selected) + " nodes per round but the scenario has " +
                                   std::to_string(s.nodes));
  }
  bool federated = std::count_if(s.levels.begin(), s.levels.end(), [](int l) { return l == 4 || l == 5; }) > 0;
  try {
    aggregation::make_strategy(s.training.strategy, s.training.strategy_params, s.secagg.enabled);
  } catch (const Error& e) {
    training.fail("strategy", e.what());
  }
  if (federated && s.training.scaffold()) check_scaffold(root, s);
  if (federated && s.training.fedbuff()) check_fedbuff(root, s);
  if (federated && s.secagg.enabled && (!s.training.fedbuff() || s.training.compare_sync)) {
    const Table sa = root.table("secagg");
    try {
      auto params = aggregation::choose_secagg_params(static_cast<std::uint32_t>(selected), federated_length(s),
                                                      s.secagg.dropout_rate, s.secagg.corrupt_fraction,
                                                      s.secagg.failure_probability);
      aggregation::validate(params);
    } catch (const Error& e) {
      sa.fail(sa.has("dropout_rate") ? "dropout_rate" : "enabled",
              std::string("secure aggregation cannot run with ") + std::to_string(selected) +
                  " nodes per round: " + e.what());
    }
  }
}

inference::ModelConfig base_config(const Scenario& s) {
  const auto& base = s.model.base;
  if (base == "tiny-pretrained" || base == "tiny-random") return inference::ModelConfig::tiny();
  if (inference::is_gguf_file(base)) return inference::load_gguf_config(base);
  return inference::ModelConfig::from_dir(base);
}

std::string gigabytes(double bytes) {
  char out[32];
  std::snprintf(out, sizeof out, "%.2f GB", bytes / 1e9);
  return out;
}

// On-device levels need the base in the node's memory: 3-6 infer there, 4-6
// also train there. A device profile whose memory_gb cannot hold that is an
// error before any work, naming the device and what it would need.
void check_device_memory(const Table& nodes, const Scenario& s) {
  const bool infers = std::count_if(s.levels.begin(), s.levels.end(), [](int l) { return l >= 3; }) > 0;
  const bool trains = std::count_if(s.levels.begin(), s.levels.end(), [](int l) { return l >= 4; }) > 0;
  if (!infers) return;
  const auto need = device_memory_need(s, base_config(s), adapter_length(s));
  const double bytes = trains ? need.training_bytes : need.inference_bytes;
  for (const auto& d : s.node_devices) {
    if (d.memory_bytes >= bytes) continue;
    nodes.fail("devices", "device '" + d.name + "' has " + gigabytes(d.memory_bytes) + " of memory, but " +
                              (trains ? "training on the node (levels 4-6)" : "inference on the node (levels 3-6)") +
                              " needs about " + gigabytes(bytes) +
                              " (base weights, KV cache" + (trains ? ", LoRA state and one batch's activations" : "") +
                              "); pick a device with more memory_gb, a smaller model or batch, or other levels");
  }
}

Scenario read(const config::Document& doc) {
  Scenario s;
  s.source = doc.source_name();
  Table root = doc.root();
  s.name = root.string("name", s.name);
  s.seed = static_cast<std::uint64_t>(root.integer("seed", 1, {0, std::numeric_limits<std::int64_t>::max()}));
  s.scenario_seed = s.seed;
  s.seeds = static_cast<int>(root.table("run").integer("seeds", 1, {1, kMaxSeeds}));
  s.levels = read_levels(root);
  Profiles profiles = read_profiles(root);
  read_nodes(root.table("nodes"), profiles, s);
  Table cloud = root.table("cloud");
  s.cloud = device_at(profiles, cloud, "device", cloud.string("device", "cloud-gpu"));
  Table edge = root.table("edge_server");
  s.edge_server = device_at(profiles, edge, "device", edge.string("device", "edge-server"));
  read_model(root.table("model"), s.model);
  s.split_layers = static_cast<int>(root.table("split").integer("layers", 1, {1, 4096}));
  read_data(root.table("data"), s.data, std::filesystem::path(s.source).parent_path());
  Table part = root.table("partition");
  try {
    s.partition.kind = parse_partition_kind(part.string("kind", "by-site"));
  } catch (const Error& e) {
    part.fail("kind", e.what());
  }
  s.partition.alpha = part.number("alpha", 0.5, {1e-6, 1e6});
  s.partition.min_per_node = static_cast<int>(part.integer("min_per_node", 1, {1, 1000000}));
  s.partition.seed = s.seed;
  read_training(root.table("training"), s.training);
  Table sa = root.table("secagg");
  s.secagg.enabled = sa.boolean("enabled", true);
  s.secagg.dropout_rate = sa.number("dropout_rate", 0.1, {0.0, 0.99});
  s.secagg.corrupt_fraction = sa.number("corrupt_fraction", 0.2, {0.0, 0.99});
  s.secagg.failure_probability = sa.number("failure_probability", 1e-6, {1e-300, 0.5});
  Table dp = root.table("dp");
  s.dp.enabled = dp.boolean("enabled", false);
  s.dp.clip_norm = dp.number("clip_norm", 1.0, {1e-9, 1e9});
  s.dp.noise_multiplier = dp.number("noise_multiplier", 0.0, {0.0, 1e6});
  s.dp.delta = dp.number("delta", 1e-5, {1e-20, 0.5});
  Table serving = root.table("serving");
  s.serving.requests_per_node = static_cast<int>(serving.integer("requests_per_node", 20, {1, 1000000}));
  s.serving.duration_s = serving.number("duration_s", 3600.0, {1e-3, 1e9});
  s.serving.max_new_tokens = static_cast<int>(serving.integer("max_new_tokens", 16, {1, 4096}));
  s.serving.eval_accuracy_records = static_cast<int>(serving.integer("accuracy_records", 6, {0, 1000000}));
  Table outage = root.table("outage");
  s.outage.start_s = outage.number("start_s", 0.0, {0.0, 1e12});
  s.outage.duration_s = outage.number("duration_s", 0.0, {0.0, 1e12});
  s.cache_dir = root.string("cache_dir", default_cache_dir().string());
  doc.reject_unknown_keys();  // before the checks below, so a typo is named as such
  check_ranks(root, s);
  check_feasible(root, s);
  check_device_memory(root.table("nodes"), s);
  return s;
}

}  // namespace

int nodes_per_round(const Scenario& s) {
  return std::max(s.training.min_nodes, static_cast<int>(std::ceil(s.training.fraction * s.nodes)));
}

int federated_rounds(const Scenario& s) {
  if (!s.training.fedbuff()) return s.training.rounds;
  const std::int64_t updates = s.training.fedbuff_updates > 0
                                   ? s.training.fedbuff_updates
                                   : static_cast<std::int64_t>(s.training.rounds) * nodes_per_round(s);
  return static_cast<int>((updates + s.training.buffer_size - 1) / s.training.buffer_size);
}

Scenario load_scenario(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kNotFound, path.string() + ": cannot open the scenario file (check the path)");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scenario(text.str(), path.string());
}

Scenario parse_scenario(std::string_view text, const std::string& source_name) {
  auto s = read(config::Document::parse_string(text, source_name));
  s.text = std::string(text);
  return s;
}

MemoryNeed device_memory_need(const Scenario& s, const inference::ModelConfig& c, std::uint64_t adapter_floats) {
  const double h = c.hidden_size, layers = c.num_layers, seq = s.model.seq_len;
  const double per_layer = h * (c.q_dim() + 2.0 * c.kv_dim()) + c.q_dim() * h + 3.0 * h * c.intermediate_size + 2.0 * h;
  const double embeddings = static_cast<double>(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2);
  // As the nodes hold the base ([model] quant), block scales included.
  const double weights =
      inference::bytes_per_weight(inference::parse_weight_type(s.model.quant)) * (per_layer * layers + embeddings + h);
  const double kv_cache = 4.0 * 2.0 * layers * c.kv_dim() * (seq + s.serving.max_new_tokens);
  MemoryNeed need;
  need.inference_bytes = weights + kv_cache;
  // LoRA values, gradients and two Adam moments; per token and layer, the
  // activations kept for the backward pass (residual stream, norms, q/k/v/o,
  // the MLP's three intermediate vectors) and one row of attention scores per head.
  const double lora = 4.0 * 4.0 * static_cast<double>(adapter_floats);
  const double activations = 4.0 * s.training.batch_size * seq * layers *
                             (10.0 * h + 3.0 * c.intermediate_size + c.num_heads * seq);
  need.training_bytes = weights + lora + activations;
  return need;
}

namespace {

// Sum over the scenario's LoRA targets and layers of floats(in, out), one
// target's count per layer.
template <typename Floats>
std::uint64_t sum_over_targets(const Scenario& scenario, Floats floats) {
  const inference::ModelConfig config = base_config(scenario);
  inference::LoraConfig lora;
  lora.target_modules = scenario.model.targets;
  std::uint64_t total = 0;
  for (int t = 0; t < inference::kNumLoraTargets; ++t) {
    auto target = static_cast<inference::LoraTarget>(t);
    if (!lora.targets(target)) continue;
    auto [in, out] = inference::lora_target_shape(config, target);
    total += floats(static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(out)) * config.num_layers;
  }
  return total;
}

}  // namespace

std::uint64_t adapter_length(const Scenario& scenario) {
  const auto rank = static_cast<std::uint64_t>(scenario.model.lora_rank);
  return sum_over_targets(scenario, [rank](std::uint64_t in, std::uint64_t out) { return rank * (in + out); });
}

std::uint64_t federated_length(const Scenario& scenario) {
  if (scenario.training.personalization == "shared-a") {
    const auto rank = static_cast<std::uint64_t>(scenario.model.lora_rank);
    return sum_over_targets(scenario, [rank](std::uint64_t in, std::uint64_t) { return rank * in; });
  }
  if (scenario.training.scaffold()) return 2 * adapter_length(scenario);
  if (scenario.training.rank_aggregation != "flexlora") return adapter_length(scenario);
  return sum_over_targets(scenario, [](std::uint64_t in, std::uint64_t out) { return in * out; });
}

int device_rank(const Scenario& scenario, const DeviceProfile& device) {
  return device.lora_rank > 0 ? device.lora_rank : scenario.model.lora_rank;
}

std::uint64_t seed_for_index(std::uint64_t scenario_seed, int index) {
  if (index < 0) throw Error(ErrorKind::kInvalidInput, "seed index must be >= 0, not " + std::to_string(index));
  return index == 0 ? scenario_seed : derive_seed(scenario_seed, "seeds/" + std::to_string(index));
}

Scenario for_seed_index(const Scenario& scenario, int index) {
  Scenario s = scenario;
  s.seed_index = index;
  s.seed = seed_for_index(scenario.scenario_seed, index);
  s.partition.seed = s.seed;
  return s;
}

std::string level_name(int level) {
  static const char* names[] = {"0 cloud",          "1 cloud-edge split", "2 edge offload",   "3 on-device infer",
                                "4 fed cloud agg", "5 fed edge agg",     "6 local only"};
  if (level < 0 || level > 6) throw Error(ErrorKind::kInvalidInput, "unknown level " + std::to_string(level));
  return names[level];
}

}  // namespace fedge::sims
