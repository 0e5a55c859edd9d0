// Who may ask the HTTP API: the key file's parser (good and bad inputs), the
// Bearer check, the 401 over real loopback HTTP, /health without a key, the
// refusal to serve beyond loopback without keys, and the local adapter that
// is neither listed nor served unless the service exposes it.
#include <httplib.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/api_keys.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"
#include "http_fixture.h"
#include "test_util.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using json = nlohmann::json;

namespace {

const std::string kKeyA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const std::string kKeyB = "sk-fedge-Zx81_qPw-7mKd0vR4tYh2nLc9bFs5gJe";

// The message of the Error that `parse` throws for `text`.
std::string parse_error(const std::string& text) {
  try {
    ApiKeys::parse(text, "keys.txt");
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

// A served tiny model whose API wants `keys` (none: no keys, loopback only).
struct KeyedServer : testing_http::HttpFixture {
  explicit KeyedServer(bool expose_local = false, std::shared_ptr<const ApiKeys> keys = nullptr)
      : HttpFixture(http_options(std::move(keys)), expose_local) {}
  static HttpOptions http_options(std::shared_ptr<const ApiKeys> keys) {
    HttpOptions h;
    h.api_keys = std::move(keys);
    return h;
  }
};

std::shared_ptr<const ApiKeys> two_keys() {
  return std::make_shared<ApiKeys>(ApiKeys::parse(kKeyA + " dashboard\n" + kKeyB + "\n", "keys.txt"));
}

std::string completion(const std::string& model, const std::string& adapter = "") {
  json body = {{"model", model}, {"prompt", "x"}, {"max_tokens", 2}};
  if (!adapter.empty()) body["adapter"] = adapter;
  return body.dump();
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

TEST_CASE("HTTP with API keys: 401 without the right key, 200 with it", "[api-keys][http]") {
  KeyedServer f(false, two_keys());
  auto http = f.client();
  const httplib::Headers none, wrong{{"Authorization", "Bearer " + kKeyA.substr(1) + "x"}},
      basic{{"Authorization", "Basic " + kKeyA}}, good{{"Authorization", "Bearer " + kKeyA}},
      other{{"Authorization", "Bearer " + kKeyB}};
  for (const auto* headers : {&none, &wrong, &basic}) {
    for (const auto& res : {http.Get("/v1/models", *headers),
                            http.Post("/v1/completions", *headers, completion("tiny"), "application/json"),
                            http.Post("/v1/chat/completions", *headers, "{not even json", "application/json"),
                            http.Get("/no/such/route", *headers)}) {
      REQUIRE(res);
      CHECK(res->status == 401);
      CHECK(res->get_header_value("WWW-Authenticate").rfind("Bearer", 0) == 0);
      const json err = json::parse(res->body)["error"];
      CHECK(err["code"] == "invalid_api_key");
      CHECK(err["type"] == "invalid_request_error");
      CHECK(err["message"].get<std::string>().find("Authorization: Bearer") != std::string::npos);
    }
  }
  for (const auto* headers : {&good, &other}) {
    const auto res = http.Post("/v1/completions", *headers, completion("tiny"), "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(json::parse(res->body)["object"] == "text_completion");
  }
  // With a key, the usual errors come back as before.
  const auto bad_json = http.Post("/v1/chat/completions", good, "{not even json", "application/json");
  REQUIRE(bad_json);
  CHECK(bad_json->status == 400);

  // /health: "ok" for anyone, the details for key holders.
  const auto open = http.Get("/health");
  REQUIRE(open);
  CHECK(open->status == 200);
  CHECK(json::parse(open->body) == json{{"status", "ok"}});
  const auto full = http.Get("/health", good);
  REQUIRE(full);
  CHECK(json::parse(full->body)["model"] == "tiny");
}

TEST_CASE("HTTP without API keys serves loopback only", "[api-keys][http]") {
  inference::setup_torch(1);
  auto model = inference::Model::tiny(3);
  const auto tokenizer = inference::Tokenizer::byte_level_tiny();
  InferenceService service(model, tokenizer);
  for (const char* host : {"0.0.0.0", "::", "10.1.2.3"}) {
    HttpOptions o;
    o.host = host;
    INFO(host);
    CHECK_THROWS_WITH(HttpServer(service, o), Catch::Contains("serve.api_keys"));
  }
  HttpOptions o;
  o.host = "0.0.0.0";
  o.api_keys = two_keys();
  HttpServer keyed(service, o);  // beyond loopback, with keys: allowed
  CHECK(keyed.port() > 0);
}

TEST_CASE("the local adapter is neither listed nor served unless exposed", "[api-keys][http]") {
  SECTION("not exposed (the default)") {
    KeyedServer f;
    f.install_local();
    auto http = f.client();
    const auto models = http.Get("/v1/models");
    REQUIRE(models);
    CHECK(json::parse(models->body)["data"].size() == 1);  // the base model only
    const auto health = http.Get("/health");
    REQUIRE(health);
    CHECK_FALSE(json::parse(health->body)["adapters"].contains("local"));
    for (const auto& body : {completion("tiny+local"), completion("tiny", "local")}) {
      const auto res = http.Post("/v1/completions", body, "application/json");
      REQUIRE(res);
      CHECK(res->status == 403);
      const json err = json::parse(res->body)["error"];
      CHECK(err["code"] == "adapter_not_exposed");
      CHECK(err["param"] == "adapter");
      CHECK(err["message"].get<std::string>().find("serve.expose_local_adapter") != std::string::npos);
    }
    // The default choice does not fall through to it.
    const auto res = http.Post("/v1/completions", completion("tiny"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(json::parse(res->body)["fedge"]["adapter"] == "none");
    // Nor does a direct request to the service.
    CompletionRequest direct;
    direct.prompt = "x";
    direct.max_tokens = 2;
    direct.adapter = AdapterChoice::kLocal;
    CHECK_THROWS_AS(f.service.submit(direct), AdapterNotExposed);
    direct.adapter = AdapterChoice::kDefault;
    CHECK(f.service.complete(direct).adapter == "none");
  }
  SECTION("exposed") {
    KeyedServer f(true);
    f.install_local();
    auto http = f.client();
    const auto models = http.Get("/v1/models");
    REQUIRE(models);
    CHECK(json::parse(models->body)["data"].size() == 2);
    const auto res = http.Post("/v1/completions", completion("tiny+local"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(json::parse(res->body)["fedge"]["adapter"] == "local");
    CHECK(json::parse(res->body)["fedge"]["adapter_version"] == 7);
  }
}
