// `fedge sim SCENARIO.toml --out DIR`: runs a simulation scenario (sims/) and
// writes metrics.csv, summary.json, summary.md and plots; prints the table.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

namespace fedge::apps {

namespace {
struct SimArgs {
  std::string scenario;
  std::string out = "results/sim";
  std::vector<int> levels;  // overrides the scenario's levels when given
};
}  // namespace

void add_sim_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  auto args = std::make_shared<SimArgs>();
  auto* sub = app.add_subcommand("sim", "Run a simulation scenario: virtual nodes, paradigm levels 0-6, results folder");
  sub->add_option("scenario", args->scenario, "scenario TOML (see sims/scenarios/)")->required();
  sub->add_option("--out", args->out, "results folder (metrics.csv, summary.json, summary.md, plots)");
  sub->add_option("--levels", args->levels, "run only these levels (e.g. --levels 0 4 6)")->check(CLI::Range(0, 6));
  sub->callback([&chosen, &global, args] {
    chosen = [&global, args] {
      auto scenario = sims::load_scenario(args->scenario);
      if (!args->levels.empty()) scenario.levels = args->levels;
      sims::RunOptions options;
      options.threads = global.threads;
      options.progress = [](const std::string& line) {
        std::fprintf(stderr, "[sim] %s\n", line.c_str());
        std::fflush(stderr);
      };
      auto result = sims::run_scenario(scenario, options);
      sims::write_results(scenario, result, args->out);
      std::printf("%s", sims::summary_markdown(result).c_str());
      std::printf("\nresults: %s (wall time %.1f s)\n", args->out.c_str(), result.wall_s);
      return 0;
    };
  });
}

}  // namespace fedge::apps
