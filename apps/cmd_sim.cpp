// `fedge sim SCENARIO.toml --out DIR`: runs a simulation scenario (sims/) and
// writes metrics.csv, summary.json, summary.md and plots; prints the table.
// `--node-hosts H --bind EP` spreads levels 4-6's virtual nodes over H
// `fedge sim --node-host EP` processes; under an MPI launcher (`mpirun -n H+1
// fedge sim SCENARIO`) rank 0 runs the scenario and ranks 1..H are its node
// hosts (docs/SIMULATOR.md, "Across machines"). `--seeds N` runs every level
// with N seeds and reports mean ± 95% confidence half-width ("Seeds and
// confidence intervals").
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "commands.h"
#include "fedge/common/error.h"
#include "fedge/sims/mpi.h"
#include "fedge/sims/node_host.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

namespace fedge::apps {

namespace {
struct SimArgs {
  std::string scenario;
  std::string out = "results/sim";
  std::vector<int> levels;  // overrides the scenario's levels when given
  int seeds = 0;            // overrides the scenario's [run] seeds when given
  int node_hosts = 0;
  std::string bind = "tcp://*:7000";
  double host_wait_s = 600;
  std::string node_host;    // this process is a node host of the coordinator at this endpoint
  std::string host_name;
  bool mpi = false;          // --mpi: this process must be one rank of an MPI job
};

// How long a failed node-host rank leaves rank 0 to end the job before it does.
constexpr int kHostGraceS = 20;

void print_progress(const std::string& line) {
  std::fprintf(stderr, "[sim] %s\n", line.c_str());
  std::fflush(stderr);
}

// The scenario in this process (alone, or as the coordinator of node hosts).
int run_coordinator(const SimArgs& args, const GlobalOptions& global, bool over_mpi) {
  if (args.scenario.empty()) {
    throw Error(ErrorKind::kInvalidInput, "fedge sim: give a scenario file (or --node-host ENDPOINT)");
  }
  auto scenario = sims::load_scenario(args.scenario);
  if (!args.levels.empty()) scenario.levels = args.levels;
  if (args.seeds > 0) scenario.seeds = args.seeds;
  sims::RunOptions options;
  options.threads = global.threads;
  options.progress = print_progress;
  options.node_hosts = args.node_hosts;
  options.bind = args.bind;
  options.host_wait_s = args.host_wait_s;
  options.mpi = over_mpi;
  auto result = sims::run_scenario(scenario, options);
  sims::write_results(scenario, result, args.out);
  std::printf("%s", sims::summary_markdown(result).c_str());
  std::printf("\nresults: %s (wall time %.1f s, peak RSS %.0f MB)\n", args.out.c_str(), result.wall_s,
              result.peak_rss_mb);
  return 0;
}

// Whether to start MPI: asked for (--mpi), or started by an MPI launcher. A
// launcher's job of several ranks and a build without MPI is an error, not
// several copies of the whole run writing the same folder.
bool wants_mpi(const SimArgs& args) {
  if (args.mpi) return true;
  auto launch = sims::mpi_launch_from_env();
  if (!launch) return false;
  if (!sims::mpi_built() && (launch->size > 1 || launch->rank > 0)) {
    throw Error(ErrorKind::kInvalidInput,
                "fedge sim was started by an MPI launcher (" + launch->variable +
                    ") but this fedge was built without MPI: install OpenMPI (scripts/install-deps.sh) and rebuild, "
                    "or spread the run with --node-hosts over ZeroMQ");
  }
  return sims::mpi_built();
}

// One rank of `mpirun -n H+1 fedge sim SCENARIO`: rank 0 runs the scenario,
// ranks 1..H are its node hosts. A failed run ends every rank through
// MPI_Abort, which MPI_Finalize (waiting for ranks that never come) would not.
int run_mpi_rank(const SimArgs& args, const GlobalOptions& global) {
  sims::MpiSession mpi;
  if (mpi.size() == 1) return run_coordinator(args, global, false);  // one rank: a run in one process
  if (args.node_hosts > 0 || !args.node_host.empty()) {
    throw Error(ErrorKind::kInvalidInput, "fedge sim under MPI: the ranks 1.." + std::to_string(mpi.size() - 1) +
                                              " are the node hosts; leave out --node-hosts and --node-host");
  }
  try {
    if (mpi.rank() == 0) return run_coordinator(args, global, true);
    sims::NodeHostOptions options;
    options.name = args.host_name;
    options.threads = global.threads;
    const std::string tag = "[sim rank " + std::to_string(mpi.rank()) + "] ";
    options.progress = [tag](const std::string& line) {
      std::fprintf(stderr, "%s%s\n", tag.c_str(), line.c_str());
      std::fflush(stderr);
    };
    sims::run_mpi_node_host(options);
    return 0;
  } catch (const std::exception& e) {
    const auto* error = dynamic_cast<const Error*>(&e);
    const int code = error ? exit_code_for(error->kind()) : 1;
    spdlog::error("rank {} of {} on {}: {}", mpi.rank(), mpi.size(), mpi.processor_name(), e.what());
    if (mpi.rank() != 0) {
      // Rank 0 has this host's HostError (or failed itself) and ends the job
      // with its own message first; it may be busy with a level of its own.
      std::this_thread::sleep_for(std::chrono::seconds(kHostGraceS));
    }
    mpi.abort(code);
  }
}
}  // namespace

void add_sim_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  auto args = std::make_shared<SimArgs>();
  auto* sub = app.add_subcommand("sim", "Run a simulation scenario: virtual nodes, paradigm levels 0-6, results folder");
  sub->add_option("scenario", args->scenario, "scenario TOML (see sims/scenarios/); not needed with --node-host");
  sub->add_option("--out", args->out, "results folder (metrics.csv, summary.json, summary.md, plots)");
  sub->add_option("--levels", args->levels, "run only these levels (e.g. --levels 0 4 6)")->check(CLI::Range(0, 6));
  sub->add_option("--seeds", args->seeds,
                  "run every level with this many seeds (data split, initialisation, dropouts); the table shows "
                  "mean ± 95% confidence half-width, metrics.csv one row per seed (default: the scenario's [run] seeds, 1)")
      ->check(CLI::Range(1, sims::kMaxSeeds));
  sub->add_option("--node-hosts", args->node_hosts,
                  "run levels 4-6's virtual nodes in this many `fedge sim --node-host` processes")
      ->check(CLI::Range(0, 4096));
  sub->add_option("--bind", args->bind, "where node hosts connect (ZeroMQ endpoint, with --node-hosts)");
  sub->add_option("--host-wait", args->host_wait_s, "seconds to wait for node hosts to connect and load")
      ->check(CLI::PositiveNumber);
  sub->add_option("--node-host", args->node_host,
                  "be a node host of the simulation coordinator at this endpoint (e.g. tcp://10.0.0.5:7000)");
  sub->add_option("--host-name", args->host_name, "this node host's name in the coordinator's logs");
  sub->add_flag("--mpi", args->mpi,
                "run as one rank of an MPI job: rank 0 runs the scenario, the others are its node hosts "
                "(implied when started by mpirun or srun)");
  sub->callback([&chosen, &global, args] {
    chosen = [&global, args] {
      if (wants_mpi(*args)) return run_mpi_rank(*args, global);
      if (!args->node_host.empty()) {
        sims::NodeHostOptions options;
        options.connect = args->node_host;
        options.name = args->host_name;
        options.threads = global.threads;
        options.progress = print_progress;
        sims::run_node_host(options);
        return 0;
      }
      return run_coordinator(*args, global, false);
    };
  });
}

}  // namespace fedge::apps
