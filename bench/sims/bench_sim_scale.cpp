// Scale benchmark: a federated scenario with many virtual nodes (default
// sims/scenarios/scale.toml: 1000 nodes, 5 rounds, SecAgg+), run in a child
// process per node count so each peak RSS is its own. Prints wall time, peak
// RSS and RSS per extra node (from a smaller run of the same scenario).
//   bench_sim_scale [SCENARIO.toml] [small_nodes=100] [threads=1] [big_nodes=scenario's]
// threads > 1 hung in the forked child here (libtorch's thread pool does not
// survive fork); spawning a fresh process per run would lift that limit.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <string>

#include "fedge/common/machine.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

namespace {

struct Figures {
  double wall_s = 0, peak_rss_mb = 0;
  int rounds = 0, failed = 0;
  double perplexity = 0;
};

// Runs the scenario with `nodes` nodes in a child; the child writes its figures to a pipe.
Figures run_child(const std::string& path, int nodes, int threads) {
  int fd[2];
  if (pipe(fd) != 0) std::exit(1);
  std::fflush(stdout);  // or the child would print the parent's buffered lines again
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    auto s = fedge::sims::load_scenario(path);
    s.nodes = nodes;
    s.training.min_nodes = std::min(s.training.min_nodes, nodes);
    fedge::sims::RunOptions o;
    o.threads = threads;
    o.progress = [](const std::string& line) { std::fprintf(stderr, "  [sim] %s\n", line.c_str()); };
    auto t0 = std::chrono::steady_clock::now();
    auto r = fedge::sims::run_scenario(s, o);
    Figures f;
    f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    f.peak_rss_mb = fedge::peak_rss_megabytes();
    f.rounds = r.levels.front().rounds_completed;
    f.failed = r.levels.front().rounds_failed;
    f.perplexity = r.levels.front().mean_perplexity;
    if (write(fd[1], &f, sizeof f) != sizeof f) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  Figures f;
  bool ok = read(fd[0], &f, sizeof f) == sizeof f;
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "the run with %d nodes failed\n", nodes);
    std::exit(1);
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/scale.toml";
  int small = argc > 2 ? std::atoi(argv[2]) : 100;
  int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  auto scenario = fedge::sims::load_scenario(path);  // validates before any run
  if (argc > 4) scenario.nodes = std::atoi(argv[4]);
  std::printf("machine: %s, %d threads\nscenario: %s (%d nodes, %d rounds, secure aggregation %s)\n",
              fedge::machine_summary().c_str(), threads, path.c_str(), scenario.nodes, scenario.training.rounds,
              scenario.secagg.enabled ? "on" : "off");
  Figures a = run_child(path, small, threads);
  Figures b = run_child(path, scenario.nodes, threads);
  std::printf("| nodes | wall s | peak RSS MB | rounds ok / failed attempts | mean perplexity |\n|---|---|---|---|---|\n");
  std::printf("| %d | %.1f | %.0f | %d / %d | %.3f |\n", small, a.wall_s, a.peak_rss_mb, a.rounds, a.failed, a.perplexity);
  std::printf("| %d | %.1f | %.0f | %d / %d | %.3f |\n", scenario.nodes, b.wall_s, b.peak_rss_mb, b.rounds, b.failed,
              b.perplexity);
  std::printf("RSS per extra node: %.3f MB; wall time per extra node: %.3f s (ratio of wall times %.2fx for %.1fx nodes)\n",
              (b.peak_rss_mb - a.peak_rss_mb) / (scenario.nodes - small), (b.wall_s - a.wall_s) / (scenario.nodes - small),
              b.wall_s / a.wall_s, static_cast<double>(scenario.nodes) / small);
  return 0;
}
