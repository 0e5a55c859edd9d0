// A simulation in one process against the same simulation spread over a
// coordinator process and H node-host processes on loopback TCP (the
// `fedge sim --node-hosts` / `--node-host` path). Every run is its own child
// process, so each peak RSS is its own. Prints wall time, peak RSS per
// process, the speed-up, and whether metrics.csv is identical. With MPI built
// (FEDGE_WITH_MPI), a third run: `mpirun --oversubscribe -n H+1 fedge sim`,
// the same hosts as MPI ranks (its wall time includes starting the ranks).
//   bench_sim_hosts [SCENARIO.toml] [hosts=2] [nodes=scenario's]
// One libtorch thread per process (libtorch's thread pool does not survive fork).
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <regex>
#include <string>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/sims/node_host.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"
#include "sims/loopback_port.h"

namespace {

struct Child {
  pid_t pid = -1;
  int result_fd = -1;
};

struct Figures {
  double wall_s = 0;
  double job_s = 0;  // mpirun: the whole job, starting and ending the ranks included
  unsigned long long csv_hash = 0;
  int rounds = 0, failed = 0;
};

// Runs `work` in a child; what it returns comes back through a pipe.
Child spawn(const std::function<Figures()>& work) {
  int fd[2];
  if (pipe(fd) != 0) std::exit(1);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    Figures f = work();
    if (write(fd[1], &f, sizeof f) != sizeof f) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  return {pid, fd[0]};
}

// Waits for the child; returns its figures and peak RSS (MB).
std::pair<Figures, double> finish(const Child& c, const char* what) {
  Figures f;
  bool ok = read(c.result_fd, &f, sizeof f) == sizeof f;
  close(c.result_fd);
  int status = 0;
  rusage usage{};
  wait4(c.pid, &status, 0, &usage);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "%s failed\n", what);
    std::exit(1);
  }
  return {f, usage.ru_maxrss / 1024.0};
}

unsigned long long csv_hash(const std::string& csv) {
  unsigned long long h = 0;
  for (char c : csv) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

Figures run(fedge::sims::Scenario s, fedge::sims::RunOptions o, const char* tag) {
  o.threads = 1;
  o.progress = [tag](const std::string& line) { std::fprintf(stderr, "  [%s] %s\n", tag, line.c_str()); };
  auto t0 = std::chrono::steady_clock::now();
  auto r = fedge::sims::run_scenario(s, o);
  Figures f;
  f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.csv_hash = csv_hash(fedge::sims::metrics_csv(r));
  for (const auto& l : r.levels) f.rounds += l.rounds_completed, f.failed += l.rounds_failed;
  return f;
}

#ifdef FEDGE_MPIEXEC
// `mpirun -n hosts+1 fedge sim` on the scenario's text (run it in a child:
// the child's peak RSS is then the largest rank's); figures from its metrics.csv.
Figures run_mpi(const fedge::sims::Scenario& s, int hosts) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("bench-sim-mpi-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "scenario.toml") << s.text;
  const std::string command = std::string("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") + FEDGE_MPIEXEC +
                              " --oversubscribe -n " + std::to_string(hosts + 1) + " " + FEDGE_BINARY +
                              " --threads 1 sim " + (dir / "scenario.toml").string() + " --out " +
                              (dir / "out").string() + " > " + (dir / "mpi.log").string() + " 2>&1";
  auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system(command.c_str());
  Figures f;
  f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) {
    std::fprintf(stderr, "mpirun failed (%d); see %s\n", rc, (dir / "mpi.log").c_str());
    _exit(1);
  }
  f.job_s = f.wall_s;
  std::ifstream in(dir / "out" / "metrics.csv");
  std::stringstream csv, log;
  csv << in.rdbuf();
  f.csv_hash = csv_hash(csv.str());
  // Rank 0's own run (as the other rows): "results: DIR (wall time 12.3 s)".
  log << std::ifstream(dir / "mpi.log").rdbuf();
  std::smatch wall;
  const std::string text = log.str();
  if (std::regex_search(text, wall, std::regex(R"(\(wall time ([0-9.]+) s)"))) f.wall_s = std::stod(wall[1]);
  fs::remove_all(dir);
  return f;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/scale.toml";
  int hosts = argc > 2 ? std::atoi(argv[2]) : 2;
  auto scenario = fedge::sims::load_scenario(path);  // validates before any run
  if (argc > 3) {
    // In the TOML text too: node hosts derive their data split from the text.
    int nodes = std::atoi(argv[3]);
    std::string text = std::regex_replace(scenario.text, std::regex("\ncount = [0-9]+"), "\ncount = " + std::to_string(nodes));
    text = std::regex_replace(text, std::regex("\nmin_nodes = [0-9]+"),
                              "\nmin_nodes = " + std::to_string(std::min(scenario.training.min_nodes, nodes)));
    scenario = fedge::sims::parse_scenario(text, path);
  }
  std::printf("machine: %s, 1 libtorch thread per process\nscenario: %s (%d nodes, levels", fedge::machine_summary().c_str(),
              path.c_str(), scenario.nodes);
  for (int l : scenario.levels) std::printf(" %d", l);
  std::printf(", %d rounds, secure aggregation %s), %d node hosts on loopback TCP\n", scenario.training.rounds,
              scenario.secagg.enabled ? "on" : "off", hosts);

  auto alone = finish(spawn([&] { return run(scenario, {}, "one process"); }), "the one-process run");

  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(fedge::bench::free_loopback_port());
  fedge::sims::RunOptions spread;
  spread.node_hosts = hosts;
  spread.bind = endpoint;
  Child coordinator = spawn([&] { return run(scenario, spread, "coordinator"); });
  std::vector<Child> host_children;
  for (int h = 0; h < hosts; ++h) {
    host_children.push_back(spawn([&, h] {
      fedge::sims::NodeHostOptions o;
      o.connect = endpoint;
      o.name = "bench-host-" + std::to_string(h);
      o.threads = 1;
      o.progress = [h](const std::string& line) { std::fprintf(stderr, "  [host %d] %s\n", h, line.c_str()); };
      fedge::sims::run_node_host(o);
      return Figures{};
    }));
  }
  auto coord = finish(coordinator, "the coordinator");
  std::vector<double> host_rss;
  for (auto& c : host_children) host_rss.push_back(finish(c, "a node host").second);

  std::printf("| run | wall s | peak RSS MB | rounds ok / failed attempts |\n|---|---|---|---|\n");
  std::printf("| one process | %.1f | %.0f | %d / %d |\n", alone.first.wall_s, alone.second, alone.first.rounds,
              alone.first.failed);
  std::printf("| coordinator + %d node hosts | %.1f | %.0f (coordinator)", hosts, coord.first.wall_s, coord.second);
  double total = coord.second;
  for (std::size_t h = 0; h < host_rss.size(); ++h) {
    std::printf(" + %.0f (host %zu)", host_rss[h], h);
    total += host_rss[h];
  }
  std::printf(" = %.0f | %d / %d |\n", total, coord.first.rounds, coord.first.failed);
  bool identical = alone.first.csv_hash == coord.first.csv_hash;
#ifdef FEDGE_MPIEXEC
  auto mpi = finish(spawn([&] { return run_mpi(scenario, hosts); }), "the mpirun run");
  std::printf("| mpirun -n %d (rank 0 + %d node-host ranks) | %.1f (whole job %.1f) | %.0f (largest rank) | see metrics.csv |\n",
              hosts + 1, hosts, mpi.first.wall_s, mpi.first.job_s, mpi.second);
  std::printf("speed-up under mpirun: %.2fx; its metrics.csv identical: %s\n", alone.first.wall_s / mpi.first.wall_s,
              alone.first.csv_hash == mpi.first.csv_hash ? "yes" : "NO");
  identical = identical && alone.first.csv_hash == mpi.first.csv_hash;
#endif
  std::printf("speed-up of the spread run: %.2fx; metrics.csv identical: %s\n", alone.first.wall_s / coord.first.wall_s,
              alone.first.csv_hash == coord.first.csv_hash ? "yes" : "NO");
  return identical ? 0 : 1;
}
