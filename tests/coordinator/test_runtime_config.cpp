// The coordinator's TOML: [federation] settings read into FederationConfig.
#include <catch2/catch.hpp>

#include <string>

#include "fedge/common/config.h"
#include "fedge/coordinator/runtime.h"

using namespace fedge;

TEST_CASE("federation config: the secure-aggregation mask generator is read and checked") {
  auto read = [](const std::string& prg_line) {
    auto doc = config::Document::parse_string("[federation]\nrounds = 2\n[federation.secagg]\n" + prg_line, "c.toml");
    return coordinator::read_federation_config(doc.root().table("federation"));
  };
  CHECK(read("").secagg_prg == privacy::PrgKind::kChaCha20);
  CHECK(read("prg = \"chacha20\"\n").secagg_prg == privacy::PrgKind::kChaCha20);
  CHECK(read("prg = \"aes256ctr\"\n").secagg_prg == privacy::PrgKind::kAes256Ctr);
  CHECK_THROWS_WITH(read("prg = \"rc4\"\n"), Catch::Contains("prg") && Catch::Contains("rc4"));
}

TEST_CASE("the example coordinator config parses") {
  const auto c = coordinator::read_coordinator_config(std::string(FEDGE_SOURCE_DIR) + "/configs/coordinator.toml");
  CHECK(c.federation.secagg_prg == privacy::PrgKind::kChaCha20);
  CHECK(c.federation.rounds > 0);
}
