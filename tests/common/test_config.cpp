#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "fedge/common/config.h"
#include "fedge/common/error.h"

using fedge::Error;
using fedge::ErrorKind;
using fedge::config::Document;
using Catch::Matchers::Contains;

namespace {

constexpr const char* kScenario = R"(name = "quick"
rounds = 5
fraction = 0.5

[privacy]
clip = 1
noise = 0.7
levels = [0, 4, 6]

[[profile]]
kind = "pi"
[[profile]]
kind = "jetson"
)";

// Parses `text` as a file named t.toml and returns the message of the error
// that reading the first field as `reader` raises.
template <typename Reader>
std::string error_of(const std::string& text, Reader reader) {
  auto doc = Document::parse_string(text, "t.toml");
  try {
    reader(doc);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("no error raised");
  return {};
}

}  // namespace

TEST_CASE("config reads typed values, defaults and nested tables", "[config]") {
  auto doc = Document::parse_string(kScenario, "s.toml");
  auto root = doc.root();
  CHECK(root.string("name", "x") == "quick");
  CHECK(root.integer("rounds", 1, {1, 100}) == 5);
  CHECK(root.number("fraction", 1.0, {0.0, 1.0}) == 0.5);
  CHECK(root.integer("absent", 42) == 42);
  CHECK_FALSE(root.boolean("absent_flag", false));
  auto privacy = root.table("privacy");
  CHECK(privacy.number("clip", 0.0) == 1.0);  // integers are accepted as numbers
  CHECK(privacy.number("noise", 0.0) == Approx(0.7));
  CHECK(privacy.integers("levels", {}, {0, 6}) == std::vector<std::int64_t>{0, 4, 6});
  auto profiles = root.tables("profile");
  REQUIRE(profiles.size() == 2);
  CHECK(profiles[0].string("kind", "", {"pi", "jetson"}) == "pi");
  CHECK(profiles[1].string("kind", "", {"pi", "jetson"}) == "jetson");
  auto absent = root.table("dp");
  CHECK(absent.number("epsilon", 3.0) == 3.0);
  CHECK_NOTHROW(doc.reject_unknown_keys());
}

TEST_CASE("config names file, line, column and key for a wrong type", "[config]") {
  auto message = error_of("a = 1\nrounds = \"five\"\n", [](const Document& d) { d.root().integer("rounds", 1); });
  CHECK(message == "t.toml:2:10: key 'rounds': expected an integer, got a string");
}

TEST_CASE("config rejects out-of-range values with the range", "[config]") {
  auto message = error_of("[sim]\nnodes = 0\n", [](const Document& d) {
    d.root().table("sim").integer("nodes", 1, {1, 10000});
  });
  CHECK(message == "t.toml:2:9: key 'sim.nodes': value 0 is out of range [1, 10000]");
  auto fraction = error_of("f = 1.5\n", [](const Document& d) { d.root().number("f", 0.1, {0.0, 1.0}); });
  CHECK_THAT(fraction, Contains("t.toml:1:5: key 'f': value 1.5 is out of range [0, 1]"));
}

TEST_CASE("config rejects unknown keys, first in file order, with known keys as a hint", "[config]") {
  auto doc = Document::parse_string("rounds = 3\n[privacy]\nclip = 1.0\nnoize = 0.5\n", "t.toml");
  auto root = doc.root();
  root.integer("rounds", 1);
  auto privacy = root.table("privacy");
  privacy.number("clip", 1.0);
  privacy.number("noise", 0.0);
  try {
    doc.reject_unknown_keys();
    FAIL("unknown key accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "t.toml:4:1: unknown key 'privacy.noize' (known keys here: clip, noise)");
  }
}

TEST_CASE("config reports an unread sub-table as an unknown key", "[config]") {
  auto doc = Document::parse_string("rounds = 3\n[typo]\nx = 1\n", "t.toml");
  doc.root().integer("rounds", 1);
  REQUIRE_THROWS_WITH(doc.reject_unknown_keys(), Contains("unknown key 'typo'"));
}

TEST_CASE("config rejects strings outside the allowed set", "[config]") {
  auto message = error_of("strategy = \"fedsum\"\n", [](const Document& d) {
    d.root().string("strategy", "fedavg", {"fedavg", "fedadam"});
  });
  CHECK(message == "t.toml:1:12: key 'strategy': 'fedsum' is not one of 'fedavg', 'fedadam'");
}

TEST_CASE("config requires required keys", "[config]") {
  auto message = error_of("[model]\n", [](const Document& d) { d.root().table("model").required_string("path"); });
  CHECK_THAT(message, Contains("key 'model.path': is required"));
}

TEST_CASE("config checks array element types with their index", "[config]") {
  auto message = error_of("levels = [0, \"four\"]\n", [](const Document& d) { d.root().integers("levels", {}); });
  CHECK_THAT(message, Contains("key 'levels[1]': expected an integer, got a string"));
  auto not_array = error_of("levels = 4\n", [](const Document& d) { d.root().integers("levels", {}); });
  CHECK_THAT(not_array, Contains("key 'levels': expected an array, got an integer"));
  auto not_table = error_of("privacy = 4\n", [](const Document& d) { d.root().table("privacy"); });
  CHECK_THAT(not_table, Contains("key 'privacy': expected a table, got an integer"));
}

TEST_CASE("config syntax errors carry the parser's position", "[config]") {
  try {
    Document::parse_string("a = 1\nb = = 2\n", "bad.toml");
    FAIL("syntax error accepted");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    CHECK_THAT(std::string(e.what()), Contains("bad.toml:2:") && Contains("TOML syntax error"));
  }
  REQUIRE_THROWS_WITH(Document::parse_string("a = \"unterminated\n", "u.toml"), Contains("u.toml:1:"));
  REQUIRE_THROWS_WITH(Document::parse_string("a = 1\na = 2\n", "dup.toml"), Contains("dup.toml:2:"));
}

TEST_CASE("config file that does not exist is kNotFound naming the path", "[config]") {
  try {
    Document::parse_file("/nonexistent/fedge/scenario.toml");
    FAIL("missing file accepted");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kNotFound);
    CHECK_THAT(std::string(e.what()), Contains("/nonexistent/fedge/scenario.toml"));
  }
}

TEST_CASE("config reads a real file", "[config]") {
  auto path = std::filesystem::temp_directory_path() / "fedge_test_config.toml";
  std::ofstream(path) << kScenario;
  auto doc = Document::parse_file(path);
  CHECK(doc.root().integer("rounds", 0) == 5);
  CHECK(doc.source_name() == path.string());
  std::filesystem::remove(path);
}

TEST_CASE("config: keys() lists a table's keys in file order and marks none as known") {
  auto doc = Document::parse_string("[t]\nzeta = 1\nalpha = 2\nmid = { x = 1 }\n", "k.toml");
  const auto t = doc.root().table("t");
  CHECK(t.keys() == std::vector<std::string>{"zeta", "alpha", "mid"});
  CHECK(doc.root().table("absent").keys().empty());
  CHECK_THROWS_WITH(doc.reject_unknown_keys(), Catch::Contains("zeta"));  // listing is not reading
  (void)t.integer("zeta", 0);
  (void)t.integer("alpha", 0);
  (void)t.table("mid").integer("x", 0);
  CHECK_NOTHROW(doc.reject_unknown_keys());
}
