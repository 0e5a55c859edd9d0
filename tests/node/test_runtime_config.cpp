// The node's TOML: the [secagg] table of malicious-server secure aggregation.
// REQUIRE, not CHECK: libtorch (through runtime.h) defines its own CHECK macro.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "fedge/node/runtime.h"

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
