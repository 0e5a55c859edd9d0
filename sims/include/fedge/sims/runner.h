// The paradigm runner: one scenario, the same base model, data split and seed
// for every level 0..6 (DESIGN.md), real training and inference on this
// machine, simulated time/energy from device profiles, traffic from the real
// encoded messages (levels 4/5) or the real payload sizes (other levels).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fedge/sims/metrics.h"
#include "fedge/sims/scenario.h"

namespace fedge::sims {

struct Delivery;  // fedge/sims/host_wire.h

struct LevelSummary {
  int level = 0;
  int seed = 0;  // seed index (fedge sim --seeds)
  std::string name;
  double mean_perplexity = 0;
  std::optional<double> mean_accuracy;
  double ttft_p50_ms = 0, ttft_p95_ms = 0, tpot_p50_ms = 0, tpot_p95_ms = 0;
  double bytes_up_per_node = 0, bytes_down_per_node = 0;
  std::uint64_t raw_bytes_left = 0;
  std::string aggregator_saw;        // "raw data", "single updates", "sums only", "nothing"
  std::optional<double> epsilon;     // DP epsilon at delta (none: no DP guarantee)
  double node_compute_s = 0, cloud_compute_s = 0;  // simulated, summed over nodes / servers
  double energy_j = 0;
  double outage_served_share = 0;    // of requests that fell in the outage window
  int rounds_completed = 0, rounds_failed = 0;     // levels 4/5
  double sim_time_s = 0;             // simulated training time
  double wall_s = 0;                 // real time this level took here (not in metrics.csv)
  // Levels 4/5 with the nodes in this process (node hosts log their own):
  // per virtual node, the heap its state held when the level ended and its
  // data; how many nodes ever held a global model, and how many installs.
  std::optional<double> node_state_bytes, node_data_bytes;
  std::uint64_t nodes_with_model = 0, models_installed = 0;
  // Personalization (levels 4/5; none elsewhere): means over the nodes of the
  // last round's global adapter on the pooled held-out rows, and of each
  // node's personal adapter on its own and on the pooled held-out rows.
  std::optional<double> global_pooled_perplexity, personal_perplexity, personal_pooled_perplexity;
};

// One point of a quality-against-simulated-time curve (quality_time.csv,
// written when [training] mode = "fedbuff"): global version `version` of a
// federated level, published at sim_time_s after `updates` node updates were
// aggregated in all, with its mean held-out perplexity over the evaluated nodes.
struct CurvePoint {
  int seed = 0;
  int level = 0;
  std::string mode;  // "sync" or "fedbuff"
  int version = 0;
  int updates = 0;
  double sim_time_s = 0;
  double mean_perplexity = 0;
};

struct RunResult {
  std::vector<CurvePoint> curve;      // [training] mode = "fedbuff" only; every seed's
  std::vector<MetricsRow> rows;       // every seed's, seed-major
  std::vector<LevelSummary> levels;   // one per level and seed index, seed-major
  // The shared base before any adapter, mean over the evaluated nodes (and
  // over the seeds: each seed's split gives the nodes other held-out rows).
  double base_perplexity = 0;
  std::string personalization = "none";      // the scenario's [training] personalization
  int personal_steps = 0;                     // its steps per personal update
  int seeds = 1;                              // seed indices run (Scenario::seeds)
  std::vector<std::uint64_t> seed_values;     // the seed of each index (for_seed_index)
  std::vector<double> seed_base_perplexity;   // base_perplexity of each seed
  double wall_s = 0;
  double peak_rss_mb = 0;      // this process's high-water resident set (node hosts log theirs)
};

struct RunOptions {
  int threads = 0;
  // One line per round (and per phase); default logs through spdlog.
  std::function<void(const std::string&)> progress;
  // Across processes or machines: with node_hosts > 0, levels 4-6 run their
  // virtual nodes in that many `fedge sim --node-host` processes, which connect
  // to `bind` (ZeroMQ, e.g. "tcp://*:7000"); each gets an equal block of nodes.
  // Levels 0-3, serving and the report stay here. Results equal a one-process run.
  int node_hosts = 0;
  std::string bind = "tcp://*:7000";
  // Or over MPI: this process is rank 0 of MPI_COMM_WORLD and ranks 1..size-1
  // are the node hosts (run_mpi_node_host); node_hosts and bind are not used.
  // Needs an MpiSession (fedge/sims/mpi.h).
  bool mpi = false;
  double host_wait_s = 600;      // for hosts to connect, and to load data and base
  double host_timeout_s = 3600;  // for any one answer of a host during the run
  std::function<void(const std::string& endpoint)> on_bound;  // the bound endpoint (real port)
  // In one process: split the nodes into this many blocks (same results; tests).
  int blocks = 1;
  // Levels 4/5 in synchronous rounds: every protocol message between a
  // virtual node and the coordinator, as encoded for the wire (one Envelope,
  // host_wire.h's Delivery), when the coordinator receives it from a node
  // (from_node) or sends it to one. For audits and tests of what leaves the
  // nodes (that shared-a sends no B: docs/SIMULATOR.md, "Personalization").
  // Called on this thread as the coordinator side takes each one over, window by window.
  std::function<void(int level, bool from_node, const Delivery& message)> on_wire;
};

// Partitions first (so a split that cannot work fails before any training),
// then loads or pretrains the base and runs each level of the scenario; with
// scenario.seeds > 1, all of that once per seed index (for_seed_index), the
// node hosts reassigned for each.
RunResult run_scenario(const Scenario& scenario, const RunOptions& options = {});

// metrics.csv, summary.json, summary.md and (with gnuplot) PNG plots in `dir`.
void write_results(const Scenario& scenario, const RunResult& result, const std::filesystem::path& dir);
std::string metrics_csv(const RunResult& result);
// quality_time.csv: seed,level,mode,version,updates,sim_time_s,mean_perplexity,
// one line per CurvePoint (empty result.curve: the header only).
std::string quality_time_csv(const RunResult& result);
// With several seeds, the table shows each metric as mean ± 95% half-width
// over the seeds (stats.h) and a column with their number.
std::string summary_markdown(const RunResult& result);

// A level's summaries over the seeds of a run (levels in the order the run
// ran them), for the table's mean ± 95% half-width (stats.h).
struct LevelStatistics {
  int level = 0;
  std::string name;
  std::vector<const LevelSummary*> per_seed;  // into RunResult::levels
};
std::vector<LevelStatistics> levels_over_seeds(const RunResult& result);

}  // namespace fedge::sims
