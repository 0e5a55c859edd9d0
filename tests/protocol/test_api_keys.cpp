// The API key file's parser (good and bad inputs) and the Bearer check
// (protocol/api_keys.h); the 401 over real HTTP is tested with each server
// (tests/serving/test_api_keys.cpp, the coordinator's in tests/coordinator).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/protocol/api_keys.h"
#include "test_util.h"

using namespace fedge;
using namespace fedge::protocol;

namespace {

const std::string kKeyA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const std::string kKeyB = "sk-fedge-Zx81_qPw-7mKd0vR4tYh2nLc9bFs5gJe";

// The message of the Error that `parse` throws for `text`.
std::string parse_error(const std::string& text, const std::string& setting = "serve.api_keys") {
  try {
    ApiKeys::parse(text, "keys.txt", setting);
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("expected the key file to be refused");
  return {};
}

std::filesystem::path write_file(const testing::TempDir& dir, const std::string& text, mode_t mode) {
  const auto path = dir.path / "api_keys.txt";
  std::ofstream(path) << text;
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

}  // namespace

TEST_CASE("API key file: keys, names and comments", "[api-keys]") {
  const auto keys = ApiKeys::parse("# site A's clients\n\n  " + kKeyA + "   dashboard of site A \r\n" + kKeyB +
                                       "\n#" + kKeyA.substr(1) + " a commented-out key\n",
                                   "keys.txt");
  CHECK(keys.size() == 2);
  CHECK(keys.authenticate("Bearer " + kKeyA) == "dashboard of site A");
  CHECK(keys.authenticate("bearer " + kKeyA) == "dashboard of site A");  // the scheme is case-insensitive
  CHECK(keys.authenticate("Bearer   " + kKeyB + " ") == "key 4");  // no name: its line
  for (const std::string& bad : std::vector<std::string>{
           std::string(), "Bearer", "Bearer ", kKeyA, "Basic " + kKeyA, "Bearer " + kKeyA.substr(1),
        "Bearer " + kKeyA + "0", "Bearer " + kKeyA.substr(1) /* the commented one */, "Bearer " + std::string(300, 'a'),
        "Bearer " + kKeyA + " " + kKeyB}) {
    INFO(bad);
    CHECK_FALSE(keys.authenticate(bad).has_value());
  }
}

TEST_CASE("API key file: bad inputs are refused naming the line, never echoing a key", "[api-keys]") {
  CHECK_THAT(parse_error(""), Catch::Contains("holds no keys") && Catch::Contains("serve.api_keys"));
  CHECK_THAT(parse_error("# only a comment\n\n"), Catch::Contains("holds no keys"));
  CHECK_THAT(parse_error(kKeyA + "\nshort-key name\n"), Catch::Contains("keys.txt:2") && Catch::Contains("32"));
  CHECK_THAT(parse_error(std::string(257, 'k') + "\n"), Catch::Contains("keys.txt:1") && Catch::Contains("257"));
  CHECK_THAT(parse_error(kKeyA + "\n" + kKeyB + "\n" + kKeyA + " again\n"),
             Catch::Contains("keys.txt:3") && Catch::Contains("line 1"));
  CHECK_THAT(parse_error(kKeyA.substr(0, 20) + std::string(1, '\0') + kKeyA.substr(20) + "\n"),
             Catch::Contains("keys.txt:1") && Catch::Contains("0x00"));
  CHECK_THAT(parse_error(kKeyA + "\xc3\xa9\n"), Catch::Contains("0xc3"));
  CHECK_THAT(parse_error(kKeyA + " caf\xc3\xa9\n"), Catch::Contains("name"));
  CHECK_THAT(parse_error(kKeyA + " " + std::string(65, 'n') + "\n"), Catch::Contains("name") && Catch::Contains("64"));
  CHECK_THAT(parse_error(std::string(kMaxApiKeyFileBytes + 1, '#')), Catch::Contains("bytes"));
  std::string many;
  for (std::size_t i = 0; i <= kMaxApiKeys; ++i) many += kKeyA.substr(0, 40) + std::to_string(1000000 + i) + "\n";
  CHECK_THAT(parse_error(many), Catch::Contains(std::to_string(kMaxApiKeys)));
  // The secret never shows in a message.
  CHECK_THAT(parse_error(kKeyA + "\n" + kKeyA + "\n"), !Catch::Contains(kKeyA));
  CHECK_THAT(parse_error(kKeyB.substr(0, 20) + "\n"), !Catch::Contains(kKeyB.substr(0, 20)));
}

TEST_CASE("API key file on disk: missing, open to others, too large", "[api-keys]") {
  testing::TempDir dir;
  CHECK_THROWS_MATCHES(ApiKeys::load(dir.path / "none.txt"), Error,
                       Catch::Predicate<Error>([](const Error& e) { return e.kind() == ErrorKind::kNotFound; }));
  CHECK(ApiKeys::load(write_file(dir, kKeyA + "\n", 0600)).size() == 1);
  CHECK(ApiKeys::load(write_file(dir, kKeyA + "\n", 0640)).size() == 1);  // group: a warning only
  for (mode_t open : {0644, 0602, 0601}) {
    INFO(open);
    CHECK_THROWS_WITH(ApiKeys::load(write_file(dir, kKeyA + "\n", open)), Catch::Contains("chmod 600"));
  }
  CHECK_THROWS_WITH(ApiKeys::load(write_file(dir, kKeyA + "\n" + std::string(kMaxApiKeyFileBytes, '#'), 0600)),
                    Catch::Contains("bytes"));
  CHECK_THROWS_WITH(ApiKeys::load(dir.path), Catch::Contains("not a file"));
}

TEST_CASE("API keys name the setting of the server that uses them", "[api-keys]") {
  CHECK_THAT(parse_error("", "http.api_keys"), Catch::Contains("http.api_keys") && !Catch::Contains("serve."));
  testing::TempDir dir;
  CHECK_THROWS_WITH(ApiKeys::load(dir.path / "none.txt", "http.api_keys"), Catch::Contains("(http.api_keys)"));
  const auto keys = ApiKeys::parse(kKeyA + "\n", "keys.txt", "http.api_keys");
  CHECK(keys.setting() == "http.api_keys");
  const auto body = nlohmann::json::parse(api_key_refusal_body(false, keys.setting()));
  CHECK(body["error"]["code"] == "invalid_api_key");
  CHECK_THAT(body["error"]["message"].get<std::string>(),
             Catch::Contains("No API key provided") && Catch::Contains("http.api_keys"));
  CHECK_THAT(nlohmann::json::parse(api_key_refusal_body(true))["error"]["message"].get<std::string>(),
             Catch::Contains("Incorrect API key") && Catch::Contains("serve.api_keys"));
}
