// The node's TOML: the [secagg] table of malicious-server secure aggregation.
// runtime.h brings libtorch, whose logging defines a CHECK of its own: it is
// included before Catch, so that Catch's CHECK wins.
#include "fedge/node/runtime.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

using namespace fedge;

TEST_CASE("node config: [secagg] signing key, roster and require_mode are read and checked together") {
  const auto dir = std::filesystem::temp_directory_path() / ("fedge_node_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto read = [&](const std::string& secagg) {
    std::ofstream(dir / "n.toml") << "[node]\nid = 3\n[data]\ntrain = \"t.jsonl\"\n" << secagg;
    return node::read_node_config(dir / "n.toml");
  };
  const auto plain = read("");
  REQUIRE(plain.signing_key_file.empty());
  CHECK_FALSE(plain.require_malicious);
  const auto c = read("[secagg]\nsigning_key = \"n3.sign\"\nroster = \"roster.txt\"\nrequire_mode = \"malicious\"\n");
  REQUIRE(c.signing_key_file == dir / "n3.sign");
  REQUIRE(c.roster_file == dir / "roster.txt");
  REQUIRE(c.require_malicious);
  CHECK_THROWS_WITH(read("[secagg]\nrequire_mode = \"malicious\"\n"), Catch::Contains("needs signing_key and roster"));
  CHECK_THROWS_WITH(read("[secagg]\nsigning_key = \"n3.sign\"\n"), Catch::Contains("signing_key and roster are set together"));
  CHECK_THROWS_WITH(read("[secagg]\nrequire_mode = \"strict\"\n"), Catch::Contains("require_mode"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("node config: [personalization] is off by default, read when set, and checked") {
  const auto dir = std::filesystem::temp_directory_path() / ("fedge_node_pcfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto read = [&](const std::string& personalization) {
    std::ofstream(dir / "n.toml") << "[node]\nid = 3\n[data]\ntrain = \"t.jsonl\"\n" << personalization;
    return node::read_node_config(dir / "n.toml");
  };
  REQUIRE_FALSE(read("").personalization.enabled());
  const auto c = read("[personalization]\nkind = \"ditto\"\nsteps = 7\nlearning_rate = 0.02\nbatch_size = 3\n"
                      "ditto_lambda = 0.5\n");
  REQUIRE(c.personalization.kind == "ditto");
  REQUIRE(c.personalization.steps == 7);
  REQUIRE(c.personalization.learning_rate == 0.02);
  REQUIRE(c.personalization.batch_size == 3);
  REQUIRE(c.personalization.ditto_lambda == 0.5);
  const auto shared = read("[personalization]\nkind = \"shared-a\"\n").personalization;
  CHECK(shared.shares_a_only());
  CHECK_FALSE(shared.trains_personal());
  CHECK(c.personalization.trains_personal());
  CHECK_FALSE(c.personalization.shares_a_only());
  CHECK(read("").lora_rank == 0);
  CHECK(read("[train]\nlora_rank = 2\n").lora_rank == 2);
  CHECK_THROWS_WITH(read("[train]\nlora_rank = 2\n[personalization]\nkind = \"ditto\"\n"),
                    Catch::Contains("lora_rank"));
  CHECK_THROWS_WITH(read("[personalization]\nkind = \"fedper\"\n"), Catch::Contains("kind"));
  CHECK_THROWS_WITH(read("[personalization]\nkind = \"finetune\"\nsteps = 0\n"), Catch::Contains("steps"));
  CHECK_THROWS_WITH(read("[personalization]\nditto_lambda = -1\n"), Catch::Contains("ditto_lambda"));
  CHECK_THROWS_WITH(read("[personalization]\nlayers = 2\n"), Catch::Contains("layers"));
  std::filesystem::remove_all(dir);
}
