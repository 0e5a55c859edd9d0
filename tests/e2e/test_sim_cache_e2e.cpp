// `fedge sim` with the pretrained tiny base and a cold cache: it pretrains the
// base once into the cache and names only the folder that stays there, never
// the temporary folder it is built in (the quickstart once printed
// `model: ~/.cache/fedge/tiny-base-v1.tmp<pid>/model`, renamed away a moment later).
#include <catch2/catch.hpp>

#include <fstream>

#include "e2e/process.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

}  // namespace

TEST_CASE("fedge sim pretrains a missing base once and prints only its final folder") {
  fedge::testing::TempDir dir;
  const fs::path cache = dir.path / "cache";
  const fs::path scenario = dir.path / "cold.toml";
  std::ofstream(scenario) << "name = \"cold-cache\"\n"
                             "seed = 5\n"
                             "levels = [6]\n"
                             "cache_dir = \"" << cache.string() << "\"\n"
                             "[model]\nbase = \"tiny-pretrained\"\npretrain_steps = 2\nlora_rank = 2\n"
                             "targets = [\"q\"]\nseq_len = 32\n"
                             "[data]\nsites = 2\ndays = 4\nwells_per_site = 1\n"
                             "[nodes]\ncount = 2\n"
                             "[training]\nrounds = 1\nlocal_steps = 1\nbatch_size = 1\ncentral_steps = 1\n"
                             "local_only_steps = 1\nmin_nodes = 2\n"
                             "[secagg]\nenabled = false\n"
                             "[serving]\nrequests_per_node = 1\nmax_new_tokens = 1\naccuracy_records = 0\n";
  fedge::testing::Process sim({FEDGE_BINARY, "--threads", "1", "sim", scenario.string(), "--out", (dir.path / "out").string()},
                              dir.path / "sim.log");
  const auto rc = sim.wait_for_exit(300s);
  const std::string log = sim.log_text();
  INFO(log);
  REQUIRE(rc == 0);
  const fs::path base = cache / "tiny-base-v1";
  CHECK(fs::exists(base / "model.safetensors"));
  CHECK_THAT(log, Catch::Contains("pretrained base cached in " + base.string()));
  CHECK_THAT(log, !Catch::Contains(".tmp"));
  // Nothing temporary is left in the cache.
  for (const auto& entry : fs::directory_iterator(cache)) CHECK(entry.path().filename() == "tiny-base-v1");
}
