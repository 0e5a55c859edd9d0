// `fedge sim SCENARIO.toml --out DIR`: runs a simulation scenario (sims/) and
// writes metrics.csv, summary.json, summary.md and plots; prints the table.
// `--node-hosts H --bind EP` spreads levels 4-6's virtual nodes over H
// `fedge sim --node-host EP` processes (docs/SIMULATOR.md, "Across machines").
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "fedge/common/error.h"
#include "fedge/sims/node_host.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

namespace fedge::apps {

namespace {
struct SimArgs {
  std::string scenario;
  std::string out = "results/sim";
  std::vector<int> levels;  // overrides the scenario's levels when given
  int node_hosts = 0;
  std::string bind = "tcp://*:7000";
  double host_wait_s = 600;
  std::string node_host;    // this process is a node host of the coordinator at this endpoint
  std::string host_name;
};

void print_progress(const std::string& line) {
  std::fprintf(stderr, "[sim] %s\n", line.c_str());
  std::fflush(stderr);
}
}  // namespace

void add_sim_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  auto args = std::make_shared<SimArgs>();
  auto* sub = app.add_subcommand("sim", "Run a simulation scenario: virtual nodes, paradigm levels 0-6, results folder");
  sub->add_option("scenario", args->scenario, "scenario TOML (see sims/scenarios/); not needed with --node-host");
  sub->add_option("--out", args->out, "results folder (metrics.csv, summary.json, summary.md, plots)");
  sub->add_option("--levels", args->levels, "run only these levels (e.g. --levels 0 4 6)")->check(CLI::Range(0, 6));
  sub->add_option("--node-hosts", args->node_hosts,
                  "run levels 4-6's virtual nodes in this many `fedge sim --node-host` processes")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--bind", args->bind, "where node hosts connect (ZeroMQ endpoint, with --node-hosts)");
  sub->add_option("--host-wait", args->host_wait_s, "seconds to wait for node hosts to connect and load")
      ->check(CLI::PositiveNumber);
  sub->add_option("--node-host", args->node_host,
                  "be a node host of the simulation coordinator at this endpoint (e.g. tcp://10.0.0.5:7000)");
  sub->add_option("--host-name", args->host_name, "this node host's name in the coordinator's logs");
  sub->callback([&chosen, &global, args] {
    chosen = [&global, args] {
      if (!args->node_host.empty()) {
        sims::NodeHostOptions options;
        options.connect = args->node_host;
        options.name = args->host_name;
        options.threads = global.threads;
        options.progress = print_progress;
        sims::run_node_host(options);
        return 0;
      }
      if (args->scenario.empty()) {
        throw Error(ErrorKind::kInvalidInput, "fedge sim: give a scenario file (or --node-host ENDPOINT)");
      }
      auto scenario = sims::load_scenario(args->scenario);
      if (!args->levels.empty()) scenario.levels = args->levels;
      sims::RunOptions options;
      options.threads = global.threads;
      options.progress = print_progress;
      options.node_hosts = args->node_hosts;
      options.bind = args->bind;
      options.host_wait_s = args->host_wait_s;
      auto result = sims::run_scenario(scenario, options);
      sims::write_results(scenario, result, args->out);
      std::printf("%s", sims::summary_markdown(result).c_str());
      std::printf("\nresults: %s (wall time %.1f s)\n", args->out.c_str(), result.wall_s);
      return 0;
    };
  });
}

}  // namespace fedge::apps
