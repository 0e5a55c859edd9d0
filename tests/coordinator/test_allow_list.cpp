// The node ids a coordinator's allow-list names (`KEY node=<id> [name]`),
// beside the old format (`KEY [name]`), which must keep working.
#include <catch2/catch.hpp>

#include <fstream>

#include "fedge/common/error.h"
#include "fedge/coordinator/allow_list.h"
#include "fedge/protocol/keys.h"
#include "test_util.h"

using namespace fedge;
namespace fs = std::filesystem;

namespace {

fs::path write(const testing::TempDir& dir, const std::string& text) {
  const fs::path file = dir.path / "allowed.txt";
  std::ofstream(file) << text;
  return file;
}

std::string error_of(const fs::path& file) {
  try {
    coordinator::allow_list_node_ids(file);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error");
  return {};
}

}  // namespace

TEST_CASE("allow-list: a line may name its key's node id, and lines without one keep the old format") {
  testing::TempDir dir;
  const auto a = protocol::generate_curve_keypair().public_z85;
  const auto b = protocol::generate_curve_keypair().public_z85;
  const auto c = protocol::generate_curve_keypair().public_z85;
  const auto d = protocol::generate_curve_keypair().public_z85;
  const fs::path file = write(dir, "# sites\n" + a + " node=3 site-a jetson\n" + b + "\n" + c +
                                       "   site-c node=4 (a name, not an id)\n\t" + d + "\tnode=4294967295\n");
  const auto ids = coordinator::allow_list_node_ids(file);
  CHECK(ids == std::map<protocol::NodeId, protocol::Key32>{{3, protocol::z85_to_key(a, "a")},
                                                           {4294967295U, protocol::z85_to_key(d, "d")}});
  // The CURVE handshake still admits every key.
  CHECK(protocol::load_allow_list(file).size() == 4);
  CHECK(coordinator::allow_list_node_ids(write(dir, b + " site-b\n")).empty());
}

TEST_CASE("allow-list: a bad or repeated node id is refused naming the line") {
  testing::TempDir dir;
  const auto a = protocol::generate_curve_keypair().public_z85;
  const auto b = protocol::generate_curve_keypair().public_z85;
  for (const std::string bad : {"node=", "node=0", "node=x3", "node=3x", "node=-3", "node=4294967296"}) {
    INFO(bad);
    const std::string why = error_of(write(dir, "# sites\n" + a + " " + bad + " site\n"));
    CHECK_THAT(why, Catch::Contains("allowed.txt:2") && Catch::Contains(bad) && Catch::Contains("node id"));
  }
  const std::string why = error_of(write(dir, a + " node=3\n" + b + " node=3\n"));
  CHECK_THAT(why, Catch::Contains("allowed.txt:2") && Catch::Contains("node 3"));
  // What the protocol's reader refuses is refused here too (a key twice).
  CHECK_THAT(error_of(write(dir, a + " node=3\n" + a + " node=4\n")), Catch::Contains("twice"));
  CHECK_THROWS_AS(coordinator::allow_list_node_ids(dir.path / "missing.txt"), Error);
}
