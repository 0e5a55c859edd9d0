// What a node serves, built from a real node config (read_node_config) and
// used over real sockets: the HTTP API wants an API key, the local adapter
// (trained on the site's private data, never clipped or noised) is served only
// when the config opts in, and the ZeroMQ inference and split links run over
// CurveZMQ with an allow-list (plaintext only when asked for, on loopback).
#include <httplib.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/node/local_trainer.h"
#include "fedge/node/runtime.h"
#include "fedge/node/serving.h"
#include "fedge/protocol/keys.h"
#include "fedge/serving/zmq_inference.h"
#include "test_util.h"
// After the fedge headers: ATen (through glog) defines CHECK too, and the
// test must use Catch's.
#include <catch2/catch.hpp>

using namespace fedge;
using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// 64 hex characters, as `openssl rand -hex 32` writes them.
const std::string kAppKey = "3f9c0a7b5e2d4c1f8a6b9e0d7c3a5f1e2b4d6c8a0e9f7b5d3c1a2e4f6b8d0c9a";

// A folder with key pairs, an API key file and a config to fill in.
struct Site {
  testing::TempDir dir{"fedge_node_serving_"};
  Site() {
    for (const char* name : {"server", "client", "stranger"})
      protocol::write_key_files(dir.path / name, protocol::generate_curve_keypair());
    write("allowed.txt", "# who may use this node's ZeroMQ endpoints\n" + public_key("client") + " client-app\n");
    write("api_keys.txt", "# the HTTP API's keys\n" + kAppKey + " dashboard\n");
    ::chmod((dir.path / "api_keys.txt").c_str(), 0600);
  }
  void write(const std::string& name, const std::string& text) const { std::ofstream(dir.path / name) << text; }
  std::string public_key(const std::string& name) const {
    return protocol::load_public_key(dir.path / (name + ".pub"));
  }
  protocol::CurveClient curve_client(const std::string& name) const {
    return {protocol::load_key_pair(dir.path / (name + ".key")), public_key("server")};
  }
  // A node config whose [serve] table is `serve`; `node_key` is [node] key.
  node::NodeRuntimeConfig config(const std::string& serve, const std::string& node_key = "client.key") const {
    write("node.toml", "[node]\nid = 1\nkey = \"" + node_key + "\"\nstate_dir = \"state\"\n"
                       "[data]\ntrain = \"train.jsonl\"\n[serve]\n" + serve);
    return node::read_node_config(dir.path / "node.toml");
  }
};

httplib::Client http_client(const node::NodeServing& serving) {
  const std::string url = serving.http_url();
  const auto colon = url.rfind(':');
  httplib::Client c("127.0.0.1", std::stoi(url.substr(colon + 1)));
  c.set_read_timeout(30, 0);
  return c;
}

httplib::Headers bearer(const std::string& key) { return {{"Authorization", "Bearer " + key}}; }

std::string completion(const std::string& model, const std::string& adapter = "") {
  json body = {{"model", model}, {"prompt", "the well"}, {"max_tokens", 2}};
  if (!adapter.empty()) body["adapter"] = adapter;
  return body.dump();
}

protocol::InferenceRequest wire_request(std::uint64_t id) {
  protocol::InferenceRequest r;
  r.request_id = id;
  r.prompt = "over the wire";
  r.max_tokens = 3;
  r.adapter = protocol::AdapterChoice::kNone;
  return r;
}

ParamVector tiny_adapter(std::uint64_t seed) {
  inference::LoraConfig lc;
  return inference::LoraAdapter::create(inference::Model::tiny(1).config(), lc, seed).to_params();
}

std::string error_code(const httplib::Result& res) {
  REQUIRE(res);
  const json j = json::parse(res->body);
  REQUIRE(j.contains("error"));
  return j["error"]["code"].is_null() ? "" : j["error"]["code"].get<std::string>();
}

}  // namespace

TEST_CASE("node serving: the HTTP API answers only requests with a listed API key", "[node-serving]") {
  Site site;
  node::NodeServing serving(site.config("http = \"127.0.0.1:0\"\napi_keys = \"api_keys.txt\"\n"));
  auto http = http_client(serving);

  for (const auto& headers : {httplib::Headers{}, bearer("not-the-key"), bearer(kAppKey + "0"),
                              httplib::Headers{{"Authorization", "Basic " + kAppKey}}}) {
    const auto models = http.Get("/v1/models", headers);
    REQUIRE(models);
    CHECK(models->status == 401);
    CHECK(error_code(models) == "invalid_api_key");
    CHECK(models->get_header_value("WWW-Authenticate").rfind("Bearer", 0) == 0);
    const auto post = http.Post("/v1/completions", headers, completion("node-1"), "application/json");
    REQUIRE(post);
    CHECK(post->status == 401);
    CHECK(error_code(post) == "invalid_api_key");
  }
  const auto models = http.Get("/v1/models", bearer(kAppKey));
  REQUIRE(models);
  CHECK(models->status == 200);
  const auto post = http.Post("/v1/completions", bearer(kAppKey), completion("node-1"), "application/json");
  REQUIRE(post);
  CHECK(post->status == 200);
  CHECK(json::parse(post->body)["object"] == "text_completion");

  // /health stays open for load balancers, but says nothing more than "ok"
  // to a caller without a key.
  const auto open = http.Get("/health");
  REQUIRE(open);
  CHECK(open->status == 200);
  CHECK(json::parse(open->body) == json{{"status", "ok"}});
  const auto full = http.Get("/health", bearer(kAppKey));
  REQUIRE(full);
  CHECK(json::parse(full->body)["model"] == "node-1");
}

TEST_CASE("node serving: HTTP beyond loopback without API keys is refused, naming serve.api_keys", "[node-serving]") {
  Site site;
  CHECK_THROWS_WITH(node::NodeServing(site.config("http = \"0.0.0.0:0\"\n")), Catch::Contains("serve.api_keys"));
  // Loopback without keys stays open (a single-host setup, the tests).
  node::NodeServing local(site.config("http = \"127.0.0.1:0\"\n"));
  auto http = http_client(local);
  const auto models = http.Get("/v1/models");
  REQUIRE(models);
  CHECK(models->status == 200);
}

TEST_CASE("node serving: the local adapter is served only with serve.expose_local_adapter", "[node-serving]") {
  Site site;
  SECTION("off by default") {
    node::NodeServing serving(site.config("http = \"127.0.0.1:0\"\napi_keys = \"api_keys.txt\"\n"));
    serving.install_local(tiny_adapter(2), 4);
    auto http = http_client(serving);
    const auto models = http.Get("/v1/models", bearer(kAppKey));
    REQUIRE(models);
    for (const auto& m : json::parse(models->body)["data"]) CHECK(m["id"] != "node-1+local");
    for (const auto& [model, adapter] : {std::pair<std::string, std::string>{"node-1+local", ""}, {"node-1", "local"}}) {
      const auto res = http.Post("/v1/completions", bearer(kAppKey), completion(model, adapter), "application/json");
      REQUIRE(res);
      CHECK(res->status == 403);
      CHECK(res->body.find("serve.expose_local_adapter") != std::string::npos);
    }
    // The default choice never falls through to the private adapter.
    const auto res = http.Post("/v1/completions", bearer(kAppKey), completion("node-1"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(json::parse(res->body)["fedge"]["adapter"] == "none");
    const auto health = http.Get("/health", bearer(kAppKey));
    REQUIRE(health);
    CHECK_FALSE(json::parse(health->body)["adapters"].contains("local"));
  }
  SECTION("served when the config opts in") {
    node::NodeServing serving(
        site.config("http = \"127.0.0.1:0\"\napi_keys = \"api_keys.txt\"\nexpose_local_adapter = true\n"));
    serving.install_local(tiny_adapter(2), 4);
    auto http = http_client(serving);
    const auto res = http.Post("/v1/completions", bearer(kAppKey), completion("node-1+local"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(json::parse(res->body)["fedge"]["adapter"] == "local");
    CHECK(json::parse(res->body)["fedge"]["adapter_version"] == 4);
  }
}

TEST_CASE("node serving: ZeroMQ inference runs over CurveZMQ and answers allow-listed keys only", "[node-serving]") {
  Site site;
  node::NodeServing serving(
      site.config("zmq = \"tcp://127.0.0.1:*\"\nkey = \"server.key\"\nzmq_allow_list = \"allowed.txt\"\n"));
  const std::string endpoint = serving.zmq_endpoint();
  REQUIRE(!endpoint.empty());

  serving::ZmqInferenceClient allowed(endpoint, site.curve_client("client"));
  const auto answer = allowed.complete(wire_request(1), {}, 20s);
  CHECK(answer.request_id == 1);
  CHECK(answer.completion_tokens > 0);

  // A key that is not on the list, and a plaintext client: no answer at all.
  serving::ZmqInferenceClient stranger(endpoint, site.curve_client("stranger"));
  CHECK_THROWS_AS(stranger.complete(wire_request(2), {}, 1500ms), Error);
  serving::ZmqInferenceClient plain(endpoint);
  CHECK_THROWS_AS(plain.complete(wire_request(3), {}, 1500ms), Error);

  // The allowed client still gets answers.
  CHECK(allowed.complete(wire_request(4), {}, 20s).request_id == 4);
}

TEST_CASE("node serving: plaintext ZeroMQ needs serve.insecure and a loopback endpoint", "[node-serving]") {
  Site site;
  CHECK_THROWS_WITH(node::NodeServing(site.config("zmq = \"tcp://127.0.0.1:*\"\n")),
                    Catch::Contains("serve.zmq_allow_list") && Catch::Contains("serve.insecure"));
  CHECK_THROWS_WITH(node::NodeServing(site.config("zmq = \"tcp://0.0.0.0:*\"\ninsecure = true\n")),
                    Catch::Contains("serve.insecure") && Catch::Contains("loopback"));
  CHECK_THROWS_WITH(node::NodeServing(site.config("split_serve = \"tcp://*:*\"\ninsecure = true\n")),
                    Catch::Contains("serve.insecure"));
  CHECK_THROWS_WITH(node::NodeServing(site.config("[serve.split]\npeer = \"tcp://10.1.2.3:5600\"\n")),
                    Catch::Contains("serve.split.peer_public_key"));
  CHECK_THROWS_WITH(node::NodeServing(site.config("zmq = \"tcp://127.0.0.1:*\"\nzmq_allow_list = \"allowed.txt\"\n",
                                                  "")),
                    Catch::Contains("serve.key"));

  node::NodeServing plain(site.config("zmq = \"tcp://127.0.0.1:*\"\ninsecure = true\n"));
  serving::ZmqInferenceClient client(plain.zmq_endpoint());
  CHECK(client.complete(wire_request(5), {}, 20s).request_id == 5);
}

TEST_CASE("node serving: the split link runs over CurveZMQ with the peer's allow-list", "[node-serving]") {
  Site site;
  // The peer serves the upper layers to allow-listed node keys ("client").
  node::NodeServing peer(site.config("split_serve = \"tcp://127.0.0.1:*\"\nkey = \"server.key\"\n"
                                     "split_allow_list = \"allowed.txt\"\n"));
  const std::string peer_endpoint = peer.split_peer_endpoint();
  REQUIRE(!peer_endpoint.empty());
  auto split_node = [&](const std::string& node_key) {
    return std::make_unique<node::NodeServing>(
        site.config("http = \"127.0.0.1:0\"\n[serve.split]\npeer = \"" + peer_endpoint +
                        "\"\npeer_public_key = \"server.pub\"\nlayers = 1\ndeadline_ms = 1500\n",
                    node_key));
  };
  auto ask = [](const node::NodeServing& n) {
    auto http = http_client(n);
    const auto res = http.Post("/v1/completions", completion("node-1", "none"), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    return json::parse(res->body)["fedge"];
  };
  const auto listed = split_node("client.key");
  const auto by_listed = ask(*listed);
  CHECK(by_listed["split"] == true);
  CHECK(by_listed["fell_back_to_local"] == false);

  // A node key the peer does not list never gets past the handshake.
  const auto unlisted = split_node("stranger.key");
  const auto by_unlisted = ask(*unlisted);
  CHECK(by_unlisted["fell_back_to_local"] == true);
}
