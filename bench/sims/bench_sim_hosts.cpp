// A simulation in one process against the same simulation spread over a
// coordinator process and H node-host processes on loopback TCP (the
// `fedge sim --node-hosts` / `--node-host` path). Every run is its own child
// process, so each peak RSS is its own. Prints wall time, peak RSS per
// process, the speed-up, and whether metrics.csv is identical.
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
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/sims/node_host.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

namespace {

struct Child {
  pid_t pid = -1;
  int result_fd = -1;
};

struct Figures {
  double wall_s = 0;
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

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

Figures run(fedge::sims::Scenario s, fedge::sims::RunOptions o, const char* tag) {
  o.threads = 1;
  o.progress = [tag](const std::string& line) { std::fprintf(stderr, "  [%s] %s\n", tag, line.c_str()); };
  auto t0 = std::chrono::steady_clock::now();
  auto r = fedge::sims::run_scenario(s, o);
  Figures f;
  f.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (char c : fedge::sims::metrics_csv(r)) f.csv_hash = (f.csv_hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  for (const auto& l : r.levels) f.rounds += l.rounds_completed, f.failed += l.rounds_failed;
  return f;
}

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

  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
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
  std::printf("speed-up of the spread run: %.2fx; metrics.csv identical: %s\n", alone.first.wall_s / coord.first.wall_s,
              alone.first.csv_hash == coord.first.csv_hash ? "yes" : "NO");
  return alone.first.csv_hash == coord.first.csv_hash ? 0 : 1;
}
