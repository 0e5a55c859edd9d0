// `fedge sim` over three real processes: a coordinator and two node hosts on
// loopback TCP produce the same metrics.csv as one process running the
// scenario alone.
#include <catch2/catch.hpp>

#include <fstream>

#include "e2e/process.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
using fedge::testing::Process;
namespace fs = std::filesystem;

const char* kScenario = R"(
name = "hosts-e2e"
seed = 3
levels = [0, 4, 6]
[model]
base = "tiny-random"
lora_rank = 2
targets = ["q", "v"]
seq_len = 48
[data]
sites = 3
days = 4
wells_per_site = 1
[nodes]
count = 6
devices = ["raspberry-pi", "jetson"]
[partition]
kind = "by-site"
[training]
rounds = 2
local_steps = 2
batch_size = 2
central_steps = 2
local_only_steps = 2
min_nodes = 3
[secagg]
enabled = true
dropout_rate = 0.01
failure_probability = 0.001
[serving]
requests_per_node = 2
duration_s = 100
max_new_tokens = 2
accuracy_records = 1
)";

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> sim(const fs::path& scenario, const fs::path& out) {
  return {FEDGE_BINARY, "--threads", "1", "sim", scenario.string(), "--out", out.string()};
}

}  // namespace

TEST_CASE("fedge sim over a coordinator and two node-host processes matches one process", "[long]") {
  fedge::testing::TempDir dir;
  const fs::path scenario = dir.path / "hosts.toml";
  std::ofstream(scenario) << kScenario;

  auto args = sim(scenario, dir.path / "spread");
  args.insert(args.end(), {"--node-hosts", "2", "--bind", "tcp://127.0.0.1:*"});
  Process coordinator(args, dir.path / "coordinator.log");
  // The coordinator prints the command for the hosts, with the port it bound.
  std::string endpoint;
  REQUIRE(fedge::testing::eventually(
      [&] {
        auto log = coordinator.log_text();
        auto at = log.find("--node-host tcp://");
        if (at == std::string::npos) return false;
        at += std::string("--node-host ").size();
        endpoint = log.substr(at, log.find('`', at) - at);
        return true;
      },
      60s));
  Process host_a({FEDGE_BINARY, "--threads", "1", "sim", "--node-host", endpoint, "--host-name", "a"},
                 dir.path / "host_a.log");
  Process host_b({FEDGE_BINARY, "--threads", "1", "sim", "--node-host", endpoint, "--host-name", "b"},
                 dir.path / "host_b.log");
  auto rc = coordinator.wait_for_exit(300s);
  INFO(coordinator.log_text() << host_a.log_text() << host_b.log_text());
  REQUIRE(rc == 0);
  CHECK(host_a.wait_for_exit(30s) == 0);
  CHECK(host_b.wait_for_exit(30s) == 0);
  // Each host ran its own block: nodes 0..2 and 3..5.
  CHECK_THAT(coordinator.log_text(), Catch::Contains("node host a (nodes 0..2)") || Catch::Contains("node host b (nodes 0..2)"));
  CHECK_THAT(host_a.log_text() + host_b.log_text(), Catch::Contains("level 6: node 5 trained alone"));
  CHECK_THAT(host_a.log_text() + host_b.log_text(), Catch::Contains("the coordinator ended the run"));

  Process alone(sim(scenario, dir.path / "alone"), dir.path / "alone.log");
  INFO(alone.log_text());
  REQUIRE(alone.wait_for_exit(300s) == 0);
  const auto spread_csv = read(dir.path / "spread" / "metrics.csv");
  CHECK(spread_csv.size() > 100);
  CHECK(spread_csv == read(dir.path / "alone" / "metrics.csv"));
}
