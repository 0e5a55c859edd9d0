// Cross-device scale over MPI (issue 20): the many-registered, few-selected
// scenario (default sims/scenarios/scale-10k.toml: 10,000 nodes, 1,000 per
// round, 5 SecAgg+ rounds, tiny model) under `mpirun --oversubscribe -n H+1
// fedge sim` (rank 0 the coordinator process, H node-host ranks), then the
// 1,000-node scenario (sims/scenarios/scale.toml, every node selected) under
// mpirun and over the ZeroMQ node hosts (`--node-hosts H` plus H
// `fedge sim --node-host` processes on loopback), one after another in this
// run. Every process is the real `fedge` binary with 1 libtorch thread; each
// logs its own peak RSS, which this sums per run. Prints wall times, peak
// memory of all processes, memory per idle node two ways (the blocks' own
// heap accounting, and the RSS difference of 10,000 vs 1,000 registered nodes
// at 1,000 selected per round), and whether the two 1,000-node runs wrote the
// same metrics.csv.
//   bench_sim_cross_device [BIG.toml] [SMALL.toml] [hosts=2] [parts=big,mpi,zmq]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/sims/scenario.h"
#include "sims/loopback_port.h"

namespace {

namespace fs = std::filesystem;

struct RunFigures {
  bool ran = false;
  double job_s = 0;          // the whole job: starting and ending the processes included
  double rank0_wall_s = 0;   // the coordinator process's own run (its "wall time")
  std::vector<double> rss_mb;  // peak RSS per process: coordinator first
  double state_bytes = 0, data_bytes = 0;  // per node, from the hosts' block lines (node-weighted)
  std::string csv;
  double total_rss() const {
    double t = 0;
    for (double r : rss_mb) t += r;
    return t;
  }
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Reads what the processes logged: rank 0's "(wall time W s, peak RSS R MB)",
// each host's "(peak RSS of this host R MB)" and the blocks' lines
// "level 4, nodes A..B: S bytes of state and D bytes of data per node".
void parse_logs(const std::string& log, RunFigures& f) {
  std::smatch m;
  if (std::regex_search(log, m, std::regex(R"(\(wall time ([0-9.]+) s, peak RSS ([0-9.]+) MB\))"))) {
    f.rank0_wall_s = std::stod(m[1]);
    f.rss_mb.insert(f.rss_mb.begin(), std::stod(m[2]));
  }
  const std::regex host_rss(R"(peak RSS of this host ([0-9.]+) MB)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), host_rss); it != std::sregex_iterator(); ++it) {
    f.rss_mb.push_back(std::stod((*it)[1]));
  }
  const std::regex block(R"(nodes ([0-9]+)\.\.([0-9]+): ([0-9]+) bytes of state and ([0-9]+) bytes of data per node)");
  double nodes = 0, state = 0, data = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), block); it != std::sregex_iterator(); ++it) {
    const double n = std::stod((*it)[2]) - std::stod((*it)[1]) + 1;
    nodes += n;
    state += n * std::stod((*it)[3]);
    data += n * std::stod((*it)[4]);
  }
  if (nodes > 0) f.state_bytes = state / nodes, f.data_bytes = data / nodes;
}

RunFigures run_shell(const std::string& command, const fs::path& dir, const std::string& what) {
  std::fprintf(stderr, "bench: %s\n  %s\n", what.c_str(), command.c_str());
  auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system(command.c_str());
  RunFigures f;
  f.ran = true;
  f.job_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string log;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".log") log += read_text(entry.path());
  }
  if (rc != 0) {
    std::fprintf(stderr, "%s failed (%d); the logs are in %s\n", what.c_str(), rc, dir.c_str());
    std::exit(1);
  }
  parse_logs(log, f);
  f.csv = read_text(dir / "out" / "metrics.csv");
  return f;
}

const std::string kFedge = FEDGE_BINARY;

#ifdef FEDGE_MPIEXEC
RunFigures run_mpi(const std::string& scenario, int hosts, const fs::path& dir) {
  fs::create_directories(dir);
  const std::string command = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                              "OMPI_MCA_btl_vader_single_copy_mechanism=none " +
                              std::string(FEDGE_MPIEXEC) + " --oversubscribe -n " + std::to_string(hosts + 1) + " " +
                              kFedge + " --threads 1 sim " + scenario + " --out " + (dir / "out").string() + " > " +
                              (dir / "mpi.log").string() + " 2>&1";
  return run_shell(command, dir, "mpirun -n " + std::to_string(hosts + 1) + " on " + scenario);
}
#endif

RunFigures run_zmq(const std::string& scenario, int hosts, const fs::path& dir) {
  fs::create_directories(dir);
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(fedge::bench::free_loopback_port());
  std::string command = "set -e; " + kFedge + " --threads 1 sim " + scenario + " --out " + (dir / "out").string() +
                        " --node-hosts " + std::to_string(hosts) + " --bind " + endpoint + " > " +
                        (dir / "coordinator.log").string() + " 2>&1 & c=$!; ";
  for (int h = 0; h < hosts; ++h) {
    command += kFedge + " --threads 1 sim --node-host " + endpoint + " --host-name bench-host-" + std::to_string(h) +
               " > " + (dir / ("host" + std::to_string(h) + ".log")).string() + " 2>&1 & h" + std::to_string(h) +
               "=$!; ";
  }
  command += "wait $c";
  for (int h = 0; h < hosts; ++h) command += "; wait $h" + std::to_string(h);
  return run_shell("bash -c '" + command + "'", dir,
                   "coordinator + " + std::to_string(hosts) + " ZeroMQ node hosts on " + scenario);
}

void row(const char* what, const RunFigures& f) {
  if (!f.ran) return;
  std::printf("| %s | %.1f | %.1f | %.0f (", what, f.job_s, f.rank0_wall_s, f.total_rss());
  for (std::size_t i = 0; i < f.rss_mb.size(); ++i) std::printf("%s%.0f", i ? " + " : "", f.rss_mb[i]);
  std::printf(") |\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string big = argc > 1 ? argv[1] : std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/scale-10k.toml";
  const std::string small = argc > 2 ? argv[2] : std::string(FEDGE_SOURCE_DIR) + "/sims/scenarios/scale.toml";
  const int hosts = argc > 3 ? std::atoi(argv[3]) : 2;
  const std::string parts = argc > 4 ? argv[4] : "big,mpi,zmq";
  const auto big_s = fedge::sims::load_scenario(big);  // validates both before any run
  const auto small_s = fedge::sims::load_scenario(small);
  const auto selected = [](const fedge::sims::Scenario& s) {
    return std::max(s.training.min_nodes, static_cast<int>(std::ceil(s.training.fraction * s.nodes)));
  };
  std::printf("machine: %s, 1 libtorch thread per process, load average at start: %s",
              fedge::machine_summary().c_str(), read_text("/proc/loadavg").c_str());
  std::printf("big: %s (%d registered nodes, %d per round, %d rounds, SecAgg+ %s)\n", big.c_str(), big_s.nodes,
              selected(big_s), big_s.training.rounds, big_s.secagg.enabled ? "on" : "off");
  std::printf("small: %s (%d registered nodes, %d per round, %d rounds)\n", small.c_str(), small_s.nodes,
              selected(small_s), small_s.training.rounds);
  const fs::path root = fs::temp_directory_path() / ("bench-cross-device-" + std::to_string(::getpid()));
  // Each row as soon as its run ends (a long benchmark cut short keeps what it measured).
  std::printf("| run | whole job s | rank 0 wall s | peak RSS MB, all processes (coordinator + hosts) |\n"
              "|---|---|---|---|\n");
  std::fflush(stdout);
  const std::string ranks = "mpirun -n " + std::to_string(hosts + 1) + ", ";
  RunFigures big_mpi, small_mpi, small_zmq;
#ifdef FEDGE_MPIEXEC
  if (parts.find("big") != std::string::npos) {
    big_mpi = run_mpi(big, hosts, root / "big-mpi");
    row((ranks + std::to_string(big_s.nodes) + " registered").c_str(), big_mpi);
    std::printf("per node (the host blocks' heap accounting at the end of the level): %.0f bytes of state + %.0f "
                "bytes of data\n",
                big_mpi.state_bytes, big_mpi.data_bytes);
  }
  if (parts.find("mpi") != std::string::npos) {
    small_mpi = run_mpi(small, hosts, root / "small-mpi");
    row((ranks + std::to_string(small_s.nodes) + " registered").c_str(), small_mpi);
  }
#else
  std::printf("fedge was built without MPI: the mpirun runs are skipped\n");
#endif
  if (parts.find("zmq") != std::string::npos) {
    small_zmq = run_zmq(small, hosts, root / "small-zmq");
    row(("ZeroMQ, coordinator + " + std::to_string(hosts) + " node hosts, " + std::to_string(small_s.nodes) +
         " registered").c_str(),
        small_zmq);
  }
  if (big_mpi.ran && small_mpi.ran && big_s.nodes > small_s.nodes) {
    std::printf("per extra registered node (RSS of all processes, %d vs %d registered): %.0f bytes\n", big_s.nodes,
                small_s.nodes, (big_mpi.total_rss() - small_mpi.total_rss()) * 1024 * 1024 / (big_s.nodes - small_s.nodes));
  }
  if (small_mpi.ran && small_zmq.ran) {
    std::printf("%d nodes: mpirun %.1f s vs ZeroMQ hosts %.1f s (whole jobs); metrics.csv identical: %s\n",
                small_s.nodes, small_mpi.job_s, small_zmq.job_s, small_mpi.csv == small_zmq.csv ? "yes" : "NO");
  }
  std::printf("load average at the end: %s", read_text("/proc/loadavg").c_str());
  fs::remove_all(root);
  return small_mpi.ran && small_zmq.ran && small_mpi.csv != small_zmq.csv ? 1 : 0;
}
