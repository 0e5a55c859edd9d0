// Results of a run on disk: metrics.csv (one row per level, round and node),
// summary.json, summary.md and gnuplot PNGs.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/stats.h"

namespace fedge::sims {
namespace {

namespace fs = std::filesystem;

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  return (u == 0 ? fixed(b, 0) : fixed(b, b < 10 ? 2 : 1)) + " " + units[u];
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error(ErrorKind::kIo, "cannot write " + path.string());
}

bool is_round_level(const RunResult& r, int level) {
  int n = 0;
  for (const auto& row : r.rows) n += row.level == level && row.node == 0 && row.seed == 0;
  return n > 1;
}

// A metric of the table: its name and how to read it from a level's summary
// (NaN: not measured for that seed).
struct Metric {
  const char* key;
  double (*get)(const LevelSummary&);
};

const Metric kMetrics[] = {
    {"mean_perplexity", [](const LevelSummary& l) { return l.mean_perplexity; }},
    {"mean_accuracy", [](const LevelSummary& l) { return l.mean_accuracy.value_or(NAN); }},
    {"ttft_p50_ms", [](const LevelSummary& l) { return l.ttft_p50_ms; }},
    {"ttft_p95_ms", [](const LevelSummary& l) { return l.ttft_p95_ms; }},
    {"per_token_p50_ms", [](const LevelSummary& l) { return l.tpot_p50_ms; }},
    {"per_token_p95_ms", [](const LevelSummary& l) { return l.tpot_p95_ms; }},
    {"bytes_up_per_node", [](const LevelSummary& l) { return l.bytes_up_per_node; }},
    {"bytes_down_per_node", [](const LevelSummary& l) { return l.bytes_down_per_node; }},
    {"raw_bytes_left_sites", [](const LevelSummary& l) { return static_cast<double>(l.raw_bytes_left); }},
    {"dp_epsilon", [](const LevelSummary& l) { return l.epsilon.value_or(NAN); }},
    {"node_compute_s", [](const LevelSummary& l) { return l.node_compute_s; }},
    {"cloud_compute_s", [](const LevelSummary& l) { return l.cloud_compute_s; }},
    {"energy_j", [](const LevelSummary& l) { return l.energy_j; }},
    {"outage_served_share", [](const LevelSummary& l) { return l.outage_served_share; }},
    {"sim_training_time_s", [](const LevelSummary& l) { return l.sim_time_s; }},
    {"global_pooled_perplexity", [](const LevelSummary& l) { return l.global_pooled_perplexity.value_or(NAN); }},
    {"personal_perplexity", [](const LevelSummary& l) { return l.personal_perplexity.value_or(NAN); }},
    {"personal_pooled_perplexity", [](const LevelSummary& l) { return l.personal_pooled_perplexity.value_or(NAN); }},
};

MeanInterval interval_of(const LevelStatistics& st, double (*get)(const LevelSummary&)) {
  std::vector<double> v;
  for (const auto* lv : st.per_seed) v.push_back(get(*lv));
  return mean_interval(v);
}

MeanInterval interval_of(const LevelStatistics& st, const char* key) {
  for (const auto& m : kMetrics) {
    if (std::string(m.key) == key) return interval_of(st, m.get);
  }
  throw Error(ErrorKind::kRuntime, std::string("no metric ") + key);
}

// One summary per level with each numeric field the mean over the seeds (the
// plots draw these); with one seed, the run's own summaries.
std::vector<LevelSummary> mean_levels(const RunResult& result) {
  if (result.seeds <= 1) return result.levels;
  std::vector<LevelSummary> out;
  for (const auto& st : levels_over_seeds(result)) {
    LevelSummary m = *st.per_seed.front();
    const auto mean = [&st](const char* key) { return interval_of(st, key).mean; };
    m.mean_perplexity = mean("mean_perplexity");
    m.ttft_p50_ms = mean("ttft_p50_ms");
    m.tpot_p50_ms = mean("per_token_p50_ms");
    m.bytes_up_per_node = mean("bytes_up_per_node");
    m.bytes_down_per_node = mean("bytes_down_per_node");
    if (m.epsilon) m.epsilon = mean("dp_epsilon");
    out.push_back(m);
  }
  return out;
}

// Mean perplexity per (level, round); single-round levels repeat their final
// value on every round so they read as a reference line.
std::string quality_rounds_data(const RunResult& result, const std::vector<LevelSummary>& levels, int rounds) {
  std::ostringstream out;
  for (const auto& lv : levels) {
    std::map<int, std::pair<double, int>> per_round;
    for (const auto& row : result.rows) {
      if (row.level != lv.level || std::isnan(row.perplexity)) continue;
      auto& [sum, n] = per_round[row.round];
      sum += row.perplexity, ++n;
    }
    out << "# level " << lv.level << "\n";
    bool rounds_level = is_round_level(result, lv.level);
    for (int r = 1; r <= rounds; ++r) {
      double v = rounds_level ? (per_round.count(r) ? per_round[r].first / per_round[r].second : NAN)
                              : lv.mean_perplexity;
      if (!std::isnan(v)) out << r << " " << num(v) << "\n";
    }
    out << "\n\n";
  }
  return out.str();
}

std::string quote(const std::string& s) { return "\"" + s + "\""; }

// quality_vs_time.png: each (level, mode) curve of the first seed against simulated time.
void add_quality_time_plot(const RunResult& result, std::ostringstream& gp, const fs::path& dir) {
  std::map<std::pair<int, std::string>, std::string> curves;
  for (const auto& p : result.curve) {
    if (p.seed == 0) curves[{p.level, p.mode}] += num(p.sim_time_s) + " " + num(p.mean_perplexity) + "\n";
  }
  std::ostringstream dat;
  gp << "set output 'quality_vs_time.png'\nset style data linespoints\nset key inside top right\n"
     << "set title 'held-out perplexity against simulated time'\nset xlabel 'simulated seconds'\n"
     << "set ylabel 'perplexity'\nset xtics autofreq\nplot ";
  int i = 0;
  for (const auto& [key, points] : curves) {
    dat << "# level " << key.first << " " << key.second << "\n" << points << "\n\n";
    gp << (i ? ", " : "") << "'quality_time.dat' index " << i << " using 1:2 title "
       << quote("L" + std::to_string(key.first) + " " + key.second);
    ++i;
  }
  gp << "\n";
  write_file(dir / "quality_time.dat", dat.str());
}

void make_plots(const RunResult& result, int rounds, const fs::path& dir) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    spdlog::warn("gnuplot not found: skipping the plots (apt-get install gnuplot-nox)");
    return;
  }
  const auto levels = mean_levels(result);  // over the seeds (one seed: the run's own)
  write_file(dir / "quality_rounds.dat", quality_rounds_data(result, levels, rounds));
  std::ostringstream levels_dat, eps_dat;
  double max_eps = 0;
  for (const auto& lv : levels) {
    if (lv.epsilon) max_eps = std::max(max_eps, *lv.epsilon);
  }
  double inf_x = max_eps > 0 ? max_eps * 1.5 : 10.0;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const auto& lv = levels[i];
    levels_dat << i << " " << quote(std::to_string(lv.level)) << " " << num(lv.ttft_p50_ms) << " "
               << num(lv.tpot_p50_ms) << " " << num(std::max(1.0, lv.bytes_up_per_node)) << " "
               << num(std::max(1.0, lv.bytes_down_per_node)) << "\n";
    eps_dat << num(lv.epsilon ? *lv.epsilon : inf_x) << " " << num(lv.mean_perplexity) << " "
            << quote("L" + std::to_string(lv.level)) << "\n";
  }
  write_file(dir / "levels.dat", levels_dat.str());
  write_file(dir / "epsilon.dat", eps_dat.str());
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,560 noenhanced\n"
     << "set output 'quality_per_round.png'\nset title 'held-out perplexity per round (mean over nodes)'\n"
     << "set xlabel 'round'\nset xtics 1\nset ylabel 'perplexity'\nset key outside right\nset grid\nplot ";
  for (std::size_t i = 0; i < levels.size(); ++i) {
    gp << (i ? ", " : "") << "'quality_rounds.dat' index " << i << " using 1:2 with linespoints title "
       << quote(levels[i].name);
  }
  gp << "\nset output 'latency_traffic.png'\nset multiplot layout 1,2\nset style data histograms\n"
     << "set style fill solid 0.8\nset boxwidth 0.8\nunset key\nset xlabel 'level'\n"
     << "set title 'TTFT p50 (ms)'\nset ylabel 'ms'\nset logscale y\n"
     << "plot 'levels.dat' using 3:xtic(2)\n"
     << "set title 'bytes per node (up + down)'\nset ylabel 'bytes'\n"
     << "plot 'levels.dat' using ($5+$6):xtic(2)\nunset multiplot\nunset logscale y\n"
     << "set output 'quality_vs_epsilon.png'\nset style data points\nset title 'quality vs DP epsilon (right edge: no DP)'\n"
     << "set xlabel 'epsilon'\nset ylabel 'perplexity'\nunset key\n"
     << "plot 'epsilon.dat' using 1:2 with points pt 7 ps 1.5, '' using 1:2:3 with labels offset 1,1\n";
  if (!result.curve.empty()) add_quality_time_plot(result, gp, dir);
  write_file(dir / "plots.gp", gp.str());
  std::string cmd = "cd " + quote(dir.string()) + " && gnuplot plots.gp 2> gnuplot.log";
  if (std::system(cmd.c_str()) != 0) spdlog::warn("gnuplot failed: see {}", (dir / "gnuplot.log").string());
}

nlohmann::json levels_over_seeds_json(const RunResult& result) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& st : levels_over_seeds(result)) {
    nlohmann::json l;
    l["level"] = st.level;
    l["name"] = st.name;
    l["seeds"] = st.per_seed.size();
    for (const auto& m : kMetrics) {
      const auto ci = interval_of(st, m.get);
      if (ci.n == 0) {
        l[m.key] = nullptr;
      } else {
        l[m.key] = {{"mean", ci.mean}, {"ci95_half_width", ci.half_width}, {"n", ci.n}};
      }
    }
    out.push_back(l);
  }
  return out;
}

nlohmann::json summary_json(const Scenario& s, const RunResult& result) {
  nlohmann::json j;
  j["scenario"] = s.name;
  j["source"] = s.source;
  j["seed"] = s.seed;
  j["nodes"] = s.nodes;
  j["rounds"] = s.training.rounds;
  j["secure_aggregation"] = s.secagg.enabled;
  j["base_perplexity"] = result.base_perplexity;
  j["wall_seconds"] = result.wall_s;
  j["peak_rss_mb"] = result.peak_rss_mb;
  j["machine"] = machine_summary();
  if (result.personalization != "none") {
    j["personalization"] = {{"kind", result.personalization}, {"steps", result.personal_steps}};
  }
  if (result.seeds > 1) {
    j["seeds"] = result.seeds;
    j["seed_values"] = result.seed_values;
    j["seed_base_perplexity"] = result.seed_base_perplexity;
    j["levels_over_seeds"] = levels_over_seeds_json(result);
  }
  for (const auto& lv : result.levels) {
    nlohmann::json l;
    l["level"] = lv.level;
    if (result.seeds > 1) l["seed"] = lv.seed;
    l["name"] = lv.name;
    l["mean_perplexity"] = lv.mean_perplexity;
    l["mean_accuracy"] = lv.mean_accuracy ? nlohmann::json(*lv.mean_accuracy) : nlohmann::json(nullptr);
    l["ttft_ms"] = {{"p50", lv.ttft_p50_ms}, {"p95", lv.ttft_p95_ms}};
    l["per_token_ms"] = {{"p50", lv.tpot_p50_ms}, {"p95", lv.tpot_p95_ms}};
    l["bytes_up_per_node"] = lv.bytes_up_per_node;
    l["bytes_down_per_node"] = lv.bytes_down_per_node;
    l["raw_bytes_left_sites"] = lv.raw_bytes_left;
    l["aggregator_saw"] = lv.aggregator_saw;
    l["dp_epsilon"] = lv.epsilon ? nlohmann::json(*lv.epsilon) : nlohmann::json(nullptr);
    l["node_compute_s"] = lv.node_compute_s;
    l["cloud_compute_s"] = lv.cloud_compute_s;
    l["energy_j"] = lv.energy_j;
    l["outage_served_share"] = lv.outage_served_share;
    l["rounds_completed"] = lv.rounds_completed;
    l["rounds_failed"] = lv.rounds_failed;
    l["sim_training_time_s"] = lv.sim_time_s;
    l["wall_seconds"] = lv.wall_s;
    if (lv.personal_perplexity) {
      l["personalization"] = {{"global_pooled_perplexity", lv.global_pooled_perplexity.value_or(NAN)},
                              {"personal_perplexity", *lv.personal_perplexity},
                              {"personal_pooled_perplexity", lv.personal_pooled_perplexity.value_or(NAN)}};
    }
    if (lv.node_state_bytes) {
      l["node_memory"] = {{"state_bytes_per_node", *lv.node_state_bytes},
                          {"data_bytes_per_node", *lv.node_data_bytes},
                          {"nodes_with_model", lv.nodes_with_model},
                          {"models_installed", lv.models_installed}};
    }
    j["levels"].push_back(l);
  }
  return j;
}

}  // namespace

std::string metrics_csv(const RunResult& result) {
  std::ostringstream out;
  out << "level,round,node,perplexity,accuracy,participated,bytes_up,bytes_down,raw_bytes_left,node_compute_s,"
         "node_energy_j,sim_time_s,ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,tpot_p95_ms,outage_requests,outage_served";
  // Several seeds add a last column, so readers that pick columns by name or
  // position keep working; one seed writes the file as it always was.
  const bool seed_column = result.seeds > 1;
  const bool personal_columns = result.personalization != "none";
  if (personal_columns) out << ",global_pooled_perplexity,personal_perplexity,personal_pooled_perplexity";
  out << (seed_column ? ",seed\n" : "\n");
  for (const auto& r : result.rows) {
    out << r.level << ',' << r.round << ',' << r.node << ',' << (std::isnan(r.perplexity) ? "" : num(r.perplexity)) << ','
        << (r.accuracy ? num(*r.accuracy) : "") << ',' << (r.participated ? 1 : 0) << ',' << r.bytes_up << ','
        << r.bytes_down << ',' << r.raw_bytes_left << ',' << num(r.node_compute_s) << ',' << num(r.node_energy_j)
        << ',' << num(r.sim_time_s);
    if (r.serving) {
      out << ',' << num(r.ttft_p50_ms) << ',' << num(r.ttft_p95_ms) << ',' << num(r.tpot_p50_ms) << ','
          << num(r.tpot_p95_ms) << ',' << r.outage_requests << ',' << r.outage_served;
    } else {
      out << ",,,,,,";
    }
    if (personal_columns) {
      for (double v : {r.global_pooled_perplexity, r.personal_perplexity, r.personal_pooled_perplexity}) {
        out << ',' << (std::isnan(v) ? "" : num(v));
      }
    }
    if (seed_column) out << ',' << r.seed;
    out << '\n';
  }
  return out.str();
}

std::string quality_time_csv(const RunResult& result) {
  std::ostringstream out;
  out << "seed,level,mode,version,updates,sim_time_s,mean_perplexity\n";
  for (const auto& p : result.curve) {
    out << p.seed << ',' << p.level << ',' << p.mode << ',' << p.version << ',' << p.updates << ','
        << num(p.sim_time_s) << ',' << num(p.mean_perplexity) << '\n';
  }
  return out.str();
}

std::vector<LevelStatistics> levels_over_seeds(const RunResult& result) {
  std::vector<LevelStatistics> out;
  for (const auto& lv : result.levels) {
    auto it = std::find_if(out.begin(), out.end(), [&](const LevelStatistics& st) { return st.level == lv.level; });
    if (it == out.end()) {
      out.push_back({lv.level, lv.name, {}});
      it = std::prev(out.end());
    }
    it->per_seed.push_back(&lv);
  }
  return out;
}

namespace {

// "mean ± half-width" with `digits` decimals, or "-" when no seed measured it.
std::string with_ci(const MeanInterval& ci, int digits) {
  if (ci.n == 0) return "-";
  return fixed(ci.mean, digits) + " ± " + fixed(ci.half_width, digits);
}

std::string bytes_with_ci(const MeanInterval& ci) {
  return human_bytes(ci.mean) + " ± " + human_bytes(ci.half_width);
}

// Levels 4/5 with personalization: the global adapter and the nodes' personal
// ones on each node's own held-out rows and on the pooled held-out rows (means
// over the nodes; with several seeds, mean ± 95% half-width over the seeds).
std::string personalization_markdown(const RunResult& result) {
  std::ostringstream out;
  bool any = false;
  for (const auto& st : levels_over_seeds(result)) {
    if (interval_of(st, "personal_perplexity").n == 0) continue;
    if (!any) {
      out << "\npersonalization \"" << result.personalization << "\" ("
          << (result.personalization == "shared-a"
                  ? std::string("A aggregated, each node's B kept on the node; global: the aggregated A with the "
                                "initial B, personal: the aggregated A with the node's own B")
                  : std::to_string(result.personal_steps) + " steps per personal update")
          << "): held-out perplexity, mean over the nodes\n\n"
          << "| level | global, own held-out | global, pooled held-out | personal, own held-out | "
             "personal, pooled held-out |\n|---|---|---|---|---|\n";
      any = true;
    }
    auto cell = [&](const char* key) {
      const auto ci = interval_of(st, key);
      return result.seeds > 1 ? with_ci(ci, 3) : (ci.n ? fixed(ci.mean, 3) : std::string("-"));
    };
    out << "| " << st.name << " | " << cell("mean_perplexity") << " | " << cell("global_pooled_perplexity") << " | "
        << cell("personal_perplexity") << " | " << cell("personal_pooled_perplexity") << " |\n";
  }
  return out.str();
}

// Accuracy is exact match on held-out instructions; plain text data (the
// user's own files of text) has none, and its tables leave the column out.
bool any_accuracy(const RunResult& result) {
  return std::any_of(result.levels.begin(), result.levels.end(),
                     [](const LevelSummary& l) { return l.mean_accuracy.has_value(); });
}

// The table of a run of several seeds: each metric as mean ± 95% half-width
// over the seeds (Student t, seeds - 1 degrees of freedom).
std::string seeds_markdown(const RunResult& result) {
  const bool accuracy = any_accuracy(result);
  std::ostringstream out;
  out << "mean ± 95% confidence half-width over " << result.seeds
      << " seeds (Student t with seeds - 1 degrees of freedom)\n\n"
      << "| level | seeds | perplexity | " << (accuracy ? "accuracy | " : "")
      << "TTFT p50 ms | TTFT p95 ms | per-token p50 ms | per-token p95 ms | "
         "up per node | down per node | raw bytes left sites | aggregator saw | DP ε | node compute s | "
         "cloud compute s | energy J | served in outage |\n"
         "|---|---|---|" << (accuracy ? "---|" : "") << "---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& st : levels_over_seeds(result)) {
    auto ci = [&](const char* key) { return interval_of(st, key); };
    const auto eps = ci("dp_epsilon");
    const auto outage = ci("outage_served_share");
    out << "| " << st.name << " | " << st.per_seed.size() << " | " << with_ci(ci("mean_perplexity"), 3) << " | "
        << (accuracy ? with_ci(ci("mean_accuracy"), 2) + " | " : "") << with_ci(ci("ttft_p50_ms"), 1) << " | "
        << with_ci(ci("ttft_p95_ms"), 1) << " | " << with_ci(ci("per_token_p50_ms"), 2) << " | "
        << with_ci(ci("per_token_p95_ms"), 2) << " | " << bytes_with_ci(ci("bytes_up_per_node")) << " | "
        << bytes_with_ci(ci("bytes_down_per_node")) << " | " << bytes_with_ci(ci("raw_bytes_left_sites")) << " | "
        << st.per_seed.front()->aggregator_saw << " | " << (eps.n ? with_ci(eps, 2) : "∞ (no DP)") << " | "
        << with_ci(ci("node_compute_s"), 1) << " | " << with_ci(ci("cloud_compute_s"), 2) << " | "
        << with_ci(ci("energy_j"), 0) << " | " << fixed(100 * outage.mean, 0) << "% ± " << fixed(100 * outage.half_width, 0)
        << "% |\n";
  }
  out << personalization_markdown(result);
  const auto base = mean_interval(result.seed_base_perplexity);
  out << "\nbase model before any adapter: mean held-out perplexity " << with_ci(base, 3) << "\nseeds:";
  for (std::size_t i = 0; i < result.seed_values.size(); ++i) out << " " << i << "=" << result.seed_values[i];
  out << " (index 0 is the scenario's seed)\n";
  out << "\npeak RSS of this process: " << fixed(result.peak_rss_mb, 0) << " MB\n";
  return out.str();
}

}  // namespace

std::string summary_markdown(const RunResult& result) {
  if (result.seeds > 1) return seeds_markdown(result);
  const bool accuracy = any_accuracy(result);
  std::ostringstream out;
  out << "| level | perplexity | " << (accuracy ? "accuracy | " : "")
      << "TTFT p50/p95 ms | per-token p50/p95 ms | up/down per node | "
         "raw bytes left sites | aggregator saw | DP ε | node compute s | cloud compute s | energy J | "
         "served in outage |\n|---|---|" << (accuracy ? "---|" : "") << "---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& lv : result.levels) {
    out << "| " << lv.name << " | " << fixed(lv.mean_perplexity, 3) << " | "
        << (accuracy ? (lv.mean_accuracy ? fixed(*lv.mean_accuracy, 2) : "-") + " | " : "") << fixed(lv.ttft_p50_ms, 1) << " / "
        << fixed(lv.ttft_p95_ms, 1) << " | " << fixed(lv.tpot_p50_ms, 2) << " / " << fixed(lv.tpot_p95_ms, 2)
        << " | " << human_bytes(lv.bytes_up_per_node) << " / " << human_bytes(lv.bytes_down_per_node) << " | "
        << human_bytes(static_cast<double>(lv.raw_bytes_left)) << " | " << lv.aggregator_saw << " | "
        << (lv.epsilon ? fixed(*lv.epsilon, 2) : "∞ (no DP)") << " | " << fixed(lv.node_compute_s, 1) << " | "
        << fixed(lv.cloud_compute_s, 2) << " | " << fixed(lv.energy_j, 0) << " | "
        << fixed(100 * lv.outage_served_share, 0) << "% |\n";
  }
  out << personalization_markdown(result);
  out << "\nbase model before any adapter: mean held-out perplexity " << fixed(result.base_perplexity, 3) << "\n";
  for (const auto& lv : result.levels) {
    if (!lv.node_state_bytes) continue;
    out << "\n" << lv.name << ": per virtual node " << fixed(*lv.node_state_bytes, 0) << " bytes of state and "
        << human_bytes(*lv.node_data_bytes) << " of data at the end; " << lv.nodes_with_model
        << " nodes ever held a global model (" << lv.models_installed << " installs)\n";
  }
  out << "\npeak RSS of this process: " << fixed(result.peak_rss_mb, 0) << " MB\n";
  return out.str();
}

void write_results(const Scenario& s, const RunResult& result, const fs::path& dir) {
  fs::create_directories(dir);
  write_file(dir / "metrics.csv", metrics_csv(result));
  if (!result.curve.empty()) write_file(dir / "quality_time.csv", quality_time_csv(result));
  write_file(dir / "summary.json", summary_json(s, result).dump(2) + "\n");
  write_file(dir / "summary.md", "# " + s.name + "\n\n" + summary_markdown(result));
  make_plots(result, std::max(s.training.rounds, federated_rounds(s)), dir);
}

}  // namespace fedge::sims
