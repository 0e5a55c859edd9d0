// `fedge sim` under OpenMPI's mpirun: rank 0 runs the scenario and ranks 1..H
// are its node hosts, with no addresses given. The run gives the same
// metrics.csv as one process; a rank that dies or runs another base ends the
// whole job at once, naming the rank. Built only with FEDGE_WITH_MPI (ctest
// lists a skipped test in its place otherwise).
// The model headers bring libtorch, whose logging defines a CHECK of its own:
// they come before Catch, so that Catch's CHECK wins.
#include "fedge/inference/generate.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "e2e/process.h"
#include "test_util.h"

#ifdef FEDGE_MPIEXEC

namespace {

using namespace std::chrono_literals;
using fedge::testing::Process;
namespace fs = std::filesystem;

// 6 nodes, levels 0, 4 (SecAgg+) and 6; `rounds` federated rounds.
std::string scenario_text(int rounds, const std::string& base = "tiny-random") {
  return "name = \"mpi-e2e\"\nseed = 3\nlevels = [0, 4, 6]\n"
         "[model]\nbase = \"" + base + "\"\nlora_rank = 2\ntargets = [\"q\", \"v\"]\nseq_len = 48\n"
         "[data]\nsites = 3\ndays = 4\nwells_per_site = 1\n"
         "[nodes]\ncount = 6\ndevices = [\"raspberry-pi\", \"jetson\"]\n"
         "[partition]\nkind = \"by-site\"\n"
         "[training]\nrounds = " + std::to_string(rounds) +
         "\nlocal_steps = 2\nbatch_size = 2\ncentral_steps = 2\nlocal_only_steps = 2\nmin_nodes = 3\n"
         "[secagg]\nenabled = true\ndropout_rate = 0.01\nfailure_probability = 0.001\n"
         "[serving]\nrequests_per_node = 2\nduration_s = 100\nmax_new_tokens = 2\naccuracy_records = 1\n";
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// mpirun for a test: more ranks than cores, as root in CI containers, and no
// single-copy shared memory (containers often forbid process_vm_readv).
std::vector<std::string> mpirun(int ranks) {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
  return {FEDGE_MPIEXEC, "--oversubscribe", "-n", std::to_string(ranks)};
}

std::vector<std::string> sim(const fs::path& scenario, const fs::path& out) {
  return {FEDGE_BINARY, "--threads", "1", "sim", scenario.string(), "--out", out.string()};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

// One run for both: the ranks' blocks, and the seeds (the coordinator sends
// each host a new assignment per seed and the hosts rebuild their blocks).
// CI's scripts/sim-mpi-check.sh compares one seed of the quickstart and of the
// cross-device scenario the same way.
TEST_CASE("fedge sim --seeds 2 under mpirun -n 3 matches one process: the ranks rebuild their blocks per seed", "[long]") {
  fedge::testing::TempDir dir;
  const fs::path scenario = dir.path / "mpi.toml";
  std::ofstream(scenario) << scenario_text(1);
  const std::vector<std::string> seeds = {"--seeds", "2"};

  Process job(mpirun(3) + sim(scenario, dir.path / "mpi") + seeds, dir.path / "mpi.log");
  const auto rc = job.wait_for_exit(300s);
  const std::string log = job.log_text();
  INFO(log);
  REQUIRE(rc == 0);
  // Rank r has block r - 1: nodes 0..2 and 3..5, and each trained its own nodes at level 6.
  CHECK_THAT(log, Catch::Contains("node host rank 1 on ") && Catch::Contains("(nodes 0..2) connected"));
  CHECK_THAT(log, Catch::Contains("[sim rank 2] level 6: node 5 trained alone"));
  CHECK_THAT(log, Catch::Contains("[sim rank 1] the coordinator ended the run"));
  CHECK_THAT(log, Catch::Contains("seed index 1"));

  Process alone(sim(scenario, dir.path / "alone") + seeds, dir.path / "alone.log");
  INFO(alone.log_text());
  REQUIRE(alone.wait_for_exit(300s) == 0);
  const auto mpi_csv = read(dir.path / "mpi" / "metrics.csv");
  CHECK(mpi_csv.size() > 100);
  CHECK_THAT(mpi_csv, Catch::StartsWith("level,") && Catch::Contains(",seed\n") && Catch::EndsWith(",1\n"));
  CHECK(mpi_csv == read(dir.path / "alone" / "metrics.csv"));
  CHECK_THAT(read(dir.path / "alone" / "summary.md"), Catch::Contains("over 2 seeds"));
}

TEST_CASE("a node-host rank killed mid-run ends the MPI job within 30 s, naming the rank", "[long]") {
  fedge::testing::TempDir dir;
  const fs::path scenario = dir.path / "long.toml";
  std::ofstream(scenario) << scenario_text(200);  // far longer than the test
  Process job(mpirun(3) + sim(scenario, dir.path / "out"), dir.path / "job.log");
  // Rank 1 names its pid; kill it once the rounds run.
  std::smatch pid;
  const std::regex rank1_pid(R"(rank 1 on \S+ \(pid (\d+)\))");
  REQUIRE(fedge::testing::eventually(
      [&] {
        const auto log = job.log_text();
        return log.find("round 2/200") != std::string::npos && std::regex_search(log, pid, rank1_pid);
      },
      120s));
  const std::string killed = pid[1];
  REQUIRE(::kill(std::stoi(killed), SIGKILL) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const auto rc = job.wait_for_exit(30s);
  INFO(job.log_text());
  REQUIRE(rc);
  CHECK(*rc != 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  // mpirun's report: "process rank 1 with PID ... on node HOST exited on signal 9 (Killed)".
  CHECK_THAT(job.log_text(), Catch::Contains("rank 1") && Catch::Contains("on node") && Catch::Contains("signal 9"));
  CHECK_FALSE(fs::exists(dir.path / "out" / "metrics.csv"));
}

TEST_CASE("an MPI rank with another base model is refused, naming the rank") {
  // Ranks 0 and 1 run in folder a, rank 2 in folder b: the scenario's base is
  // the relative path "base", another model in each.
  fedge::testing::TempDir dir;
  const auto tokenizer = fedge::inference::Tokenizer::byte_level_tiny();
  for (auto [folder, seed] : {std::pair{"a", 1}, std::pair{"b", 2}}) {
    fs::create_directories(dir.path / folder);
    fedge::inference::save_model_dir(fedge::inference::Model::tiny(seed), dir.path / folder / "base", &tokenizer);
  }
  const fs::path scenario = dir.path / "based.toml";
  std::ofstream(scenario) << scenario_text(2, "base");
  const auto args = sim(scenario, dir.path / "out");
  Process job(mpirun(2) + std::vector<std::string>{"-wdir", (dir.path / "a").string()} + args +
                  std::vector<std::string>{":", "-n", "1", "-wdir", (dir.path / "b").string()} + args,
              dir.path / "job.log");
  const auto rc = job.wait_for_exit(120s);
  const std::string log = job.log_text();
  INFO(log);
  REQUIRE(rc);
  CHECK(*rc != 0);
  CHECK_THAT(log, Catch::Contains("node host rank 2 on ") && Catch::Contains("loaded another base model"));
  // The refusal names rank 2, whose base differs, not rank 1.
  const auto refusal = log.substr(log.rfind('\n', log.find("loaded another base model")) + 1);
  CHECK_THAT(refusal.substr(0, refusal.find('\n')), Catch::Contains("rank 2") && !Catch::Contains("rank 1"));
  CHECK_FALSE(fs::exists(dir.path / "out" / "metrics.csv"));
}

TEST_CASE("fedge sim under mpirun refuses --node-hosts, whose hosts are its ranks") {
  fedge::testing::TempDir dir;
  const fs::path scenario = dir.path / "mpi.toml";
  std::ofstream(scenario) << scenario_text(1);
  Process job(mpirun(2) + sim(scenario, dir.path / "out") + std::vector<std::string>{"--node-hosts", "2"},
              dir.path / "job.log");
  const auto rc = job.wait_for_exit(60s);
  INFO(job.log_text());
  REQUIRE(rc);
  CHECK(*rc != 0);
  CHECK_THAT(job.log_text(), Catch::Contains("leave out --node-hosts and --node-host"));
}

#endif  // FEDGE_MPIEXEC
