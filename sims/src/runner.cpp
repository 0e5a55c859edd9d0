#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "context.h"
#include "federation_sim.h"
#include "host_pool.h"
#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/common/rng.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/sims/runner.h"

#include <spdlog/spdlog.h>

namespace fedge::sims {
namespace {

using detail::Context;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The mean of a column over the final rows (serving) where it was measured.
std::optional<double> mean_measured(const std::vector<MetricsRow>& rows, double MetricsRow::*column) {
  double sum = 0;
  int n = 0;
  for (const auto& r : rows) {
    if (r.serving && !std::isnan(r.*column)) sum += r.*column, ++n;
  }
  if (n == 0) return std::nullopt;
  return sum / n;
}

LevelSummary summarise(const Scenario& s, int level, const std::vector<MetricsRow>& rows,
                       const std::vector<double>& ttft, const std::vector<double>& tpot) {
  LevelSummary sum;
  sum.level = level;
  sum.name = level_name(level);
  int n = 0, evaluated = 0, acc_n = 0, outage_req = 0, outage_ok = 0;
  double acc = 0;
  for (const auto& r : rows) {
    if (!r.serving) continue;
    ++n;
    if (!std::isnan(r.perplexity)) sum.mean_perplexity += r.perplexity, ++evaluated;
    if (r.accuracy) acc += *r.accuracy, ++acc_n;
    sum.bytes_up_per_node += static_cast<double>(r.bytes_up);
    sum.bytes_down_per_node += static_cast<double>(r.bytes_down);
    sum.raw_bytes_left += r.raw_bytes_left;
    sum.node_compute_s += r.node_compute_s;
    sum.energy_j += r.node_energy_j;
    outage_req += r.outage_requests;
    outage_ok += r.outage_served;
    sum.sim_time_s = std::max(sum.sim_time_s, r.sim_time_s);
  }
  if (evaluated > 0) sum.mean_perplexity /= evaluated;  // over the nodes whose quality was measured
  sum.global_pooled_perplexity = mean_measured(rows, &MetricsRow::global_pooled_perplexity);
  sum.personal_perplexity = mean_measured(rows, &MetricsRow::personal_perplexity);
  sum.personal_pooled_perplexity = mean_measured(rows, &MetricsRow::personal_pooled_perplexity);
  if (n > 0) {
    sum.bytes_up_per_node /= n;
    sum.bytes_down_per_node /= n;
  }
  if (acc_n > 0) sum.mean_accuracy = acc / acc_n;
  sum.outage_served_share = outage_req ? static_cast<double>(outage_ok) / outage_req : 1.0;
  sum.ttft_p50_ms = 1e3 * detail::percentile(ttft, 0.5);
  sum.ttft_p95_ms = 1e3 * detail::percentile(ttft, 0.95);
  sum.tpot_p50_ms = 1e3 * detail::percentile(tpot, 0.5);
  sum.tpot_p95_ms = 1e3 * detail::percentile(tpot, 0.95);
  (void)s;
  return sum;
}

// Adds the serving columns of `level` to a node's final row.
void add_serving(Context& ctx, int level, MetricsRow& row, LevelSummary& sum, std::vector<double>& ttft,
                 std::vector<double>& tpot) {
  const auto& node = ctx.node(row.node);
  auto sv = detail::serve(ctx, level, node);
  row.serving = true;
  row.ttft_p50_ms = 1e3 * detail::percentile(sv.ttft_s, 0.5);
  row.ttft_p95_ms = 1e3 * detail::percentile(sv.ttft_s, 0.95);
  row.tpot_p50_ms = 1e3 * detail::percentile(sv.tpot_s, 0.5);
  row.tpot_p95_ms = 1e3 * detail::percentile(sv.tpot_s, 0.95);
  row.outage_requests = sv.outage_requests;
  row.outage_served = sv.outage_served;
  row.bytes_up += sv.bytes_up;
  row.bytes_down += sv.bytes_down;
  row.raw_bytes_left += sv.raw_bytes;
  row.node_compute_s += sv.node_compute_s;
  row.node_energy_j = energy_joules(node.device, row.node_compute_s);
  sum.cloud_compute_s += sv.server_compute_s;
  sum.energy_j += energy_joules(level == 2 ? ctx.scenario().edge_server : ctx.scenario().cloud, sv.server_compute_s);
  ttft.insert(ttft.end(), sv.ttft_s.begin(), sv.ttft_s.end());
  tpot.insert(tpot.end(), sv.tpot_s.begin(), sv.tpot_s.end());
}

// Levels 0-3: one adapter trained in the cloud on every node's uploaded records.
struct CentralAdapter {
  ParamVector params;
  double cloud_compute_s = 0;
  double upload_s = 0;  // the slowest node's upload of its raw data
};

CentralAdapter train_central(Context& ctx) {
  const Scenario& s = ctx.scenario();
  std::vector<training::Record> pooled;
  CentralAdapter c;
  for (const auto& node : ctx.nodes()) {
    pooled.insert(pooled.end(), node.train.begin(), node.train.end());
    c.upload_s = std::max(c.upload_s, transfer_seconds(s.node_network, node.raw_bytes, true));
  }
  // The pooled set is tokenised from the same records the nodes hold.
  std::vector<training::Sequence> seqs;
  for (const auto& node : ctx.nodes()) {
    for (std::size_t i = 0; i < node.train_set.size(); ++i) seqs.push_back(node.train_set[i]);
  }
  auto data = training::TokenDataset::from_sequences(std::move(seqs));
  ctx.progress("cloud: training one adapter on " + std::to_string(pooled.size()) + " pooled raw records, " +
               std::to_string(s.training.central_steps) + " steps");
  auto out = ctx.train(ctx.initial_adapter(), data, s.training.central_steps, derive_seed(s.seed, "central"), "cosine");
  c.params = std::move(out.params);
  c.cloud_compute_s = compute_seconds(s.cloud, train_flops(ctx.base_parameters(), out.tokens));
  return c;
}

std::vector<MetricsRow> central_level_rows(Context& ctx, int level, const CentralAdapter& central,
                                           const std::vector<detail::Quality>& quality) {
  const Scenario& s = ctx.scenario();
  std::vector<MetricsRow> rows;
  for (const auto& node : ctx.nodes()) {
    MetricsRow r;
    r.level = level;
    r.round = s.training.rounds;
    r.node = node.index;
    r.perplexity = quality[node.index].perplexity;
    r.accuracy = quality[node.index].accuracy;
    r.bytes_up = node.raw_bytes;
    r.raw_bytes_left = node.raw_bytes;
    // Level 3 sends the trained adapter down to every node.
    if (level == 3) r.bytes_down = ctx.adapter_floats() * 4;
    r.sim_time_s = central.upload_s + central.cloud_compute_s +
                   (level == 3 ? transfer_seconds(s.node_network, r.bytes_down, false) : 0.0);
    rows.push_back(r);
  }
  return rows;
}

// The synchronous run's curve (compare_sync): per round, the mean held-out
// perplexity of its global, when it was published, after how many updates.
std::vector<CurvePoint> sync_curve(const std::vector<MetricsRow>& rows, int level) {
  struct Round {
    double sum = 0, time = 0;
    int evaluated = 0, updates = 0;
  };
  std::map<int, Round> rounds;
  for (const auto& r : rows) {
    auto& rd = rounds[r.round];
    rd.time = std::max(rd.time, r.sim_time_s);
    rd.updates += r.participated ? 1 : 0;
    if (!std::isnan(r.perplexity)) rd.sum += r.perplexity, ++rd.evaluated;
  }
  std::vector<CurvePoint> curve;
  int updates = 0;
  for (const auto& [round, rd] : rounds) {
    updates += rd.updates;
    if (rd.evaluated > 0) curve.push_back({0, level, "sync", round, updates, rd.time, rd.sum / rd.evaluated});
  }
  return curve;
}

// Levels 4/5 with [training] mode = "fedbuff"; with compare_sync the same
// level synchronously first, for its curve only (metrics.csv and the table
// show the FedBuff run).
detail::FederatedOutcome run_fedbuff_level(Context& ctx, int level, const std::vector<detail::HostLink*>& hosts,
                                           std::vector<CurvePoint>& curve) {
  if (ctx.scenario().training.compare_sync) {
    ctx.progress("level " + std::to_string(level) + ": the synchronous run first (compare_sync)");
    auto sync = detail::run_federated(ctx, level, hosts);
    auto points = sync_curve(sync.rows, level);
    curve.insert(curve.end(), points.begin(), points.end());
  }
  auto fed = detail::run_fedbuff(ctx, level);
  curve.insert(curve.end(), fed.curve.begin(), fed.curve.end());
  return fed;
}

// One seed index of a run: every level of `s` (s.seed is that index's seed).
// With node hosts, `pool` has assigned them this seed index already.
RunResult run_one_seed(const Scenario& s, const RunOptions& options, detail::HostPool* pool) {
  auto context = detail::build_context(s);
  Context& ctx = *context;
  ctx.progress_sink = options.progress;
  ctx.wire_tap = options.on_wire;
  bool both_federated = std::count(s.levels.begin(), s.levels.end(), 4) && std::count(s.levels.begin(), s.levels.end(), 5);
  ctx.enable_memo(both_federated);
  // Levels 4-6 run their virtual nodes in blocks: node hosts, or this process.
  std::vector<std::unique_ptr<detail::HostLink>> local;
  std::vector<detail::HostLink*> hosts;
  if (pool) {
    hosts = pool->links(ctx);
  } else {
    int blocks = std::clamp(options.blocks, 1, std::max(1, s.nodes));
    for (int b = 0; b < blocks; ++b) {
      auto [first, end] = detail::block_range(s.nodes, blocks, b);
      local.push_back(std::make_unique<detail::LocalHost>(ctx, first, end));
      hosts.push_back(local.back().get());
    }
  }

  RunResult result;
  for (const auto& node : ctx.nodes()) {
    if (ctx.evaluated(node.index)) result.base_perplexity += ctx.base_perplexity(node) / ctx.evaluated_nodes();
  }
  ctx.progress("base model: mean held-out perplexity " + std::to_string(result.base_perplexity) +
               (ctx.evaluated_nodes() < ctx.num_nodes()
                    ? " (over a sample of " + std::to_string(ctx.evaluated_nodes()) + " nodes, [training] eval_nodes)"
                    : std::string()));

  std::optional<CentralAdapter> central;
  std::vector<detail::Quality> central_quality;
  for (int level : s.levels) {
    auto tl = std::chrono::steady_clock::now();
    std::vector<MetricsRow> rows;
    LevelSummary extra;
    if (level <= 3) {
      if (!central) {
        central = train_central(ctx);
        for (const auto& node : ctx.nodes()) {
          central_quality.push_back(ctx.evaluated(node.index) ? ctx.evaluate(central->params, node, true)
                                                              : detail::Quality{std::nan(""), {}});
        }
      }
      rows = central_level_rows(ctx, level, *central, central_quality);
      extra.cloud_compute_s = central->cloud_compute_s;
      extra.energy_j = energy_joules(s.cloud, central->cloud_compute_s);
      extra.aggregator_saw = "raw data";
    } else if (level == 6) {
      rows = detail::run_local_only(hosts);
      extra.aggregator_saw = "nothing";
    } else {
      auto fed = s.training.fedbuff() ? run_fedbuff_level(ctx, level, hosts, result.curve)
                                      : detail::run_federated(ctx, level, hosts);
      rows = std::move(fed.rows);
      extra.cloud_compute_s = fed.server_compute_s;
      extra.energy_j = energy_joules(level == 4 ? s.cloud : s.edge_server, fed.server_compute_s);
      extra.aggregator_saw = fed.individual_updates_seen ? "single updates" : "sums only";
      extra.epsilon = fed.epsilon;
      extra.rounds_completed = fed.rounds_completed;
      extra.rounds_failed = fed.rounds_failed;
      if (!pool && ctx.node_state.nodes > 0) {
        const auto& st = ctx.node_state;
        extra.node_state_bytes = static_cast<double>(st.state_bytes) / static_cast<double>(st.nodes);
        extra.node_data_bytes = static_cast<double>(st.data_bytes) / static_cast<double>(st.nodes);
        extra.nodes_with_model = st.nodes_with_model;
        extra.models_installed = st.models_installed;
      }
    }
    std::vector<double> ttft, tpot;
    LevelSummary sum;
    const int last_round = level == 4 || level == 5 ? federated_rounds(s) : s.training.rounds;
    for (auto& r : rows) {
      if (r.round == last_round) add_serving(ctx, level, r, extra, ttft, tpot);
    }
    sum = summarise(s, level, rows, ttft, tpot);
    sum.cloud_compute_s = extra.cloud_compute_s;
    sum.energy_j += extra.energy_j;
    sum.aggregator_saw = extra.aggregator_saw;
    sum.epsilon = extra.epsilon;
    sum.rounds_completed = extra.rounds_completed;
    sum.rounds_failed = extra.rounds_failed;
    sum.node_state_bytes = extra.node_state_bytes;
    sum.node_data_bytes = extra.node_data_bytes;
    sum.nodes_with_model = extra.nodes_with_model;
    sum.models_installed = extra.models_installed;
    sum.wall_s = seconds_since(tl);
    ctx.progress("level " + sum.name + ": perplexity " + std::to_string(sum.mean_perplexity) + ", served in outage " +
                 std::to_string(static_cast<int>(100 * sum.outage_served_share)) + "%");
    result.rows.insert(result.rows.end(), rows.begin(), rows.end());
    result.levels.push_back(std::move(sum));
  }
  for (auto& row : result.rows) row.seed = s.seed_index;
  for (auto& lv : result.levels) lv.seed = s.seed_index;
  for (auto& p : result.curve) p.seed = s.seed_index;
  return result;
}

}  // namespace

RunResult run_scenario(const Scenario& s, const RunOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  if (s.training.fedbuff() && (options.node_hosts > 0 || options.mpi))
    throw Error(ErrorKind::kInvalidInput, s.source + ": [training] mode = \"fedbuff\" runs every node in this "
                                          "process; run it without --node-hosts or --mpi");
  inference::setup_torch(options.threads);
  // Node hosts connect while the data is split and the base loads here.
  std::unique_ptr<detail::HostPool> pool;
  if (options.node_hosts > 0 || options.mpi) pool = std::make_unique<detail::HostPool>(s, options);
  RunResult result;
  result.seeds = std::max(1, s.seeds);
  result.personalization = s.training.personalization;
  result.personal_steps = s.training.personal_step_count();
  for (int k = 0; k < result.seeds; ++k) {
    // Index 0 is the scenario as given, so a run of one seed is today's run.
    const Scenario sk = k == 0 ? s : for_seed_index(s, k);
    RunOptions ok = options;
    if (result.seeds > 1) {
      const std::string tag = "seed " + std::to_string(k + 1) + "/" + std::to_string(result.seeds) + ": ";
      auto sink = options.progress;
      ok.progress = [sink, tag](const std::string& line) {
        if (sink) {
          sink(tag + line);
        } else {
          spdlog::info("{}{}", tag, line);
        }
      };
      if (pool && k > 0) pool->assign_seed(k);
    }
    auto one = run_one_seed(sk, ok, pool.get());
    result.seed_values.push_back(sk.seed);
    result.seed_base_perplexity.push_back(one.base_perplexity);
    result.base_perplexity += one.base_perplexity / result.seeds;
    result.rows.insert(result.rows.end(), one.rows.begin(), one.rows.end());
    result.levels.insert(result.levels.end(), one.levels.begin(), one.levels.end());
    result.curve.insert(result.curve.end(), one.curve.begin(), one.curve.end());
  }
  if (pool) pool->shutdown("the run is over");
  result.wall_s = seconds_since(t0);
  result.peak_rss_mb = peak_rss_megabytes();
  return result;
}

}  // namespace fedge::sims
