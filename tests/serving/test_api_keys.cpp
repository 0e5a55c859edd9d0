// Who may ask the HTTP API: the 401 over real loopback HTTP (the key file's
// parser and the Bearer check are tested in tests/protocol/test_api_keys.cpp), /health without a key, the
// refusal to serve beyond loopback without keys, and the local adapter that
// is neither listed nor served unless the service exposes it.
#include <httplib.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/common/prometheus.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"
#include "http_fixture.h"
#include "test_util.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace fedge::serving;
using fedge::protocol::ApiKeys;
using json = nlohmann::json;

namespace {

const std::string kKeyA = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const std::string kKeyB = "sk-fedge-Zx81_qPw-7mKd0vR4tYh2nLc9bFs5gJe";

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

TEST_CASE("HTTP /metrics: Prometheus text behind the key, counting requests and tokens, plus the provider's families",
          "[api-keys][http][metrics]") {
  KeyedServer f(false, two_keys());
  inference::LoraConfig lc;
  lc.r = 2;
  f.service.install_adapter(AdapterSlot::kGlobal, inference::LoraAdapter::create(f.model.config(), lc, 3), 1);
  auto http = f.client();
  const auto refused = http.Get("/metrics");
  REQUIRE(refused);
  CHECK(refused->status == 401);
  const httplib::Headers good{{"Authorization", "Bearer " + kKeyA}};
  json body = {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 3}, {"temperature", 0}};
  const auto done = http.Post("/v1/completions", good, body.dump(), "application/json");
  REQUIRE(done);
  REQUIRE(done->status == 200);
  const int generated = json::parse(done->body)["usage"]["completion_tokens"].get<int>();
  f.server.set_metrics_provider([](prometheus::TextWriter& w) { w.gauge("fedge_test_extra", "From the provider.", 7); });
  const auto metrics = http.Get("/metrics", good);
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get_header_value("Content-Type") == prometheus::kContentType);
  const std::string& text = metrics->body;
  INFO(text);
  auto has = [&](const std::string& line) { return text.find("\n" + line + "\n") != std::string::npos; };
  CHECK(text.starts_with("# HELP fedge_inference_requests_total "));
  CHECK(has("fedge_inference_requests_total{outcome=\"completed\"} 1"));
  CHECK(has("fedge_inference_requests_total{outcome=\"rejected\"} 0"));
  CHECK(has("fedge_inference_generated_tokens_total " + std::to_string(generated)));
  CHECK(has("fedge_inference_queue_length 0"));
  CHECK(has("fedge_adapter_installed{slot=\"global\"} 1"));
  CHECK(has("fedge_adapter_version{slot=\"global\"} 1"));
  CHECK(has("fedge_test_extra 7"));
  CHECK(text.find("slot=\"local\"") == std::string::npos);  // not exposed, not shown
}
