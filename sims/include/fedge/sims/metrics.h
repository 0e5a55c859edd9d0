// One row of metrics.csv, on its own so the node-host wire (host_wire.h),
// which carries rows between processes, builds without the runner and its
// libtorch-linked dependencies.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

namespace fedge::sims {

// The most seeds one run covers ([run] seeds, fedge sim --seeds).
inline constexpr int kMaxSeeds = 1000;

// One row of metrics.csv: a level, a round and a node. Serving columns are
// filled on the level's last round only.
struct MetricsRow {
  // Seed index (fedge sim --seeds; 0 with one seed). The coordinator process
  // sets it on every row of a seed; the node-host wire does not carry it.
  int seed = 0;
  int level = 0;
  int round = 0;
  int node = 0;
  double perplexity = 0;
  std::optional<double> accuracy;
  bool participated = true;          // levels 4/5: the node's update is in this round's sum
  std::uint64_t bytes_up = 0, bytes_down = 0;  // cumulative up to this round
  std::uint64_t raw_bytes_left = 0;  // raw site data (records, prompts) that left the node
  double node_compute_s = 0;         // simulated, cumulative
  double node_energy_j = 0;
  double sim_time_s = 0;             // simulated time at the end of this round
  bool serving = false;              // serving columns below are meaningful
  double ttft_p50_ms = 0, ttft_p95_ms = 0, tpot_p50_ms = 0, tpot_p95_ms = 0;
  int outage_requests = 0, outage_served = 0;
  // Personalization (levels 4/5 with [training] personalization, last round;
  // NaN otherwise): the global adapter on the pooled held-out rows of every
  // node, and the node's personal adapter on its own and on the pooled rows.
  static constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();
  double global_pooled_perplexity = kNotMeasured;
  double personal_perplexity = kNotMeasured;
  double personal_pooled_perplexity = kNotMeasured;
};

}  // namespace fedge::sims
