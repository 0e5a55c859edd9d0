// What the coordinator's HTTP endpoints show (telemetry.h) and the listener
// itself (http_api.h) over real loopback HTTP: metrics text, status JSON,
// API keys, the dashboard page, the [http] config.
#include <httplib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/coordinator/http_api.h"
#include "fedge/coordinator/runtime.h"
#include "fedge/coordinator/store.h"
#include "fedge/coordinator/telemetry.h"
#include "fedge/protocol/api_keys.h"
#include "test_util.h"

using namespace fedge;
using namespace fedge::coordinator;
using json = nlohmann::json;

namespace {

const std::string kKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

FederationConfig dp_config() {
  FederationConfig c;
  c.rounds = 5;
  c.secure = true;
  c.dp.mode = protocol::DpMode::kCentral;
  c.dp.delta = 1e-5;
  return c;
}

// One secure round of nodes 1..3, node 3 dropping at masked input: started
// at 1000 ms, stages at 1000 / 1500 / 2500 / 3000, done at 4000.
void one_round(Telemetry& t) {
  NodeRegistered reg;
  reg.node.node_id = 1;
  reg.node.name = "site \"A\"\n";
  reg.node.capabilities.num_examples = 40;
  t.on_event(reg, 500, 0);
  RoundStarted started;
  started.round = 1;
  started.plan.selected = {1, 2, 3};
  t.on_event(started, 1000, 0);
  t.on_stage(RoundStage::kAdvertiseKeys, 1000);
  t.on_stage(RoundStage::kShareKeys, 1500);
  t.on_stage(RoundStage::kMaskedInput, 2500);
  t.on_stage(RoundStage::kUnmask, 3000);
  RoundCompleted done;
  done.round = 1;
  done.version = 1;
  done.survivors = {1, 2};
  done.metrics = {{"train_loss", 2.5}, {"participants", 2}, {"node/eval_loss", 2.25}};
  done.stats.stages = {{RoundStage::kAdvertiseKeys, 3, 3}, {RoundStage::kMaskedInput, 3, 2}};
  t.on_event(done, 4000, 0.75);
  t.on_stage(RoundStage::kIdle, 4000);
  t.on_nodes({{1, "", "live", false, 0}, {2, "", "live", false, 0}, {3, "", "lost", false, 0}});
  t.on_received(100);
  t.on_received(50);
  t.on_sent(70);
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.starts_with(line + "\n");
}

std::filesystem::path key_file(const testing::TempDir& dir) {
  const auto path = dir.path / "keys.txt";
  std::ofstream(path) << kKey << " prometheus\n";
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  return path;
}

}  // namespace

TEST_CASE("telemetry: a round's events become Prometheus counters, gauges and histograms", "[telemetry]") {
  Telemetry t(dp_config());
  one_round(t);
  const std::string text = t.prometheus_text();
  INFO(text);
  CHECK(has_line(text, "fedge_rounds_started_total 1"));
  CHECK(has_line(text, "fedge_rounds_completed_total 1"));
  CHECK(has_line(text, "fedge_rounds_failed_total 0"));
  CHECK(has_line(text, "fedge_global_adapter_version 1"));
  CHECK(has_line(text, "fedge_round_dropouts_total{stage=\"masked_input\"} 1"));
  CHECK(has_line(text, "fedge_nodes{state=\"live\"} 2"));
  CHECK(has_line(text, "fedge_nodes{state=\"lost\"} 1"));
  CHECK(has_line(text, "fedge_received_bytes_total 150"));
  CHECK(has_line(text, "fedge_sent_bytes_total 70"));
  CHECK(has_line(text, "fedge_received_messages_total 2"));
  CHECK(has_line(text, "fedge_dp_epsilon 0.75"));
  CHECK(has_line(text, "fedge_dp_delta 1e-05"));
  CHECK(has_line(text, "fedge_last_round_metric{name=\"train_loss\"} 2.5"));
  CHECK(has_line(text, "fedge_last_round_metric{name=\"node/eval_loss\"} 2.25"));
  CHECK(has_line(text, "fedge_last_round_survivors 2"));
  CHECK(has_line(text, "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"2.5\"} 0"));
  CHECK(has_line(text, "fedge_round_duration_seconds_bucket{outcome=\"completed\",le=\"5\"} 1"));
  CHECK(has_line(text, "fedge_round_duration_seconds_sum{outcome=\"completed\"} 3"));
  CHECK(has_line(text, "fedge_round_stage_duration_seconds_sum{stage=\"share_keys\"} 1"));
  CHECK(has_line(text, "fedge_round_stage_duration_seconds_count{stage=\"unmask\"} 1"));
  CHECK(has_line(text, "# TYPE fedge_round_stage_duration_seconds histogram"));
}

TEST_CASE("telemetry: the status JSON lists nodes, rounds with stages and dropouts, privacy and traffic",
          "[telemetry]") {
  Telemetry t(dp_config());
  one_round(t);
  RoundStarted second;
  second.round = 2;
  second.plan.selected = {1, 2};
  t.on_event(second, 5000, 0.75);
  RoundFailed failed;
  failed.round = 2;
  failed.reason = "too few survivors";
  failed.stats.stages = {{RoundStage::kAdvertiseKeys, 2, 0}};
  t.on_event(failed, 6000, 0.75);
  const json s = json::parse(t.status_json(7000));
  CHECK(s["time_ms"] == 7000);
  CHECK(s["coordinator"]["rounds_completed_total"] == 1);
  CHECK(s["coordinator"]["rounds_failed_total"] == 1);
  CHECK(s["coordinator"]["secure"] == true);
  REQUIRE(s["nodes"].size() == 3);
  CHECK(s["nodes"][0]["name"] == "site \"A\"\n");  // JSON escapes it; the page shows it as text
  CHECK(s["nodes"][0]["examples"] == 40);
  CHECK(s["nodes"][2]["state"] == "lost");
  REQUIRE(s["rounds"].size() == 2);
  const json& r1 = s["rounds"][0];
  CHECK(r1["state"] == "completed");
  CHECK(r1["duration_seconds"] == 3.0);
  CHECK(r1["selected"] == 3);
  CHECK(r1["survivors"] == 2);
  CHECK(r1["dropouts"] == 1);
  CHECK(r1["dropped_by_stage"]["masked_input"] == 1);
  CHECK(r1["stage_seconds"]["advertise_keys"] == 0.5);
  CHECK(r1["stage_seconds"]["share_keys"] == 1.0);
  CHECK(r1["metrics"]["train_loss"] == 2.5);
  CHECK(r1["epsilon"] == 0.75);
  CHECK(r1["global_version"] == 1);
  const json& r2 = s["rounds"][1];
  CHECK(r2["state"] == "failed");
  CHECK(r2["reason"] == "too few survivors");
  CHECK(r2["dropouts"] == 2);
  CHECK(r2["global_version"].is_null());
  CHECK(s["privacy"]["dp_mode"] == "central");
  CHECK(s["privacy"]["epsilon"] == 0.75);
  CHECK(s["traffic"]["received_bytes"] == 150);
}

TEST_CASE("telemetry: a restarted coordinator shows its past rounds from the store", "[telemetry]") {
  testing::TempDir dir;
  auto store = Store::open(dir.path / "c.db");
  store.record_initial_adapter({0, 0, "v0.safetensors", "", 0, 0});
  NodeRecord node;
  node.node_id = 1;
  node.name = "site-a";
  node.examples = 12;
  store.upsert_node(node);
  store.begin_round(1, "{}", {1});
  RoundResult result;
  result.adapter_version = 1;
  result.adapter_path = "v1.safetensors";
  result.metrics = {{"train_loss", 1.5}};
  result.survivors = 1;
  store.complete_round(1, result);
  Telemetry t(FederationConfig{});
  t.restore(store);
  const json s = json::parse(t.status_json(0));
  REQUIRE(s["rounds"].size() == 1);
  CHECK(s["rounds"][0]["state"] == "completed");
  CHECK(s["rounds"][0]["metrics"]["train_loss"] == 1.5);
  CHECK(s["coordinator"]["global_version"] == 1);
  const std::string text = t.prometheus_text();
  CHECK(has_line(text, "fedge_last_round_metric{name=\"train_loss\"} 1.5"));
  CHECK(has_line(text, "fedge_last_round_completed 1"));
  // Counters count this process's events: none yet.
  CHECK(has_line(text, "fedge_rounds_completed_total 0"));
}

TEST_CASE("telemetry: only the newest rounds are kept", "[telemetry]") {
  Telemetry t(FederationConfig{}, 3);
  for (std::uint64_t round = 1; round <= 5; ++round) {
    RoundStarted s;
    s.round = round;
    t.on_event(s, 0, 0);
  }
  const json s = json::parse(t.status_json(0));
  REQUIRE(s["rounds"].size() == 3);
  CHECK(s["rounds"][0]["round"] == 3);
}

TEST_CASE("coordinator HTTP: metrics and status need the key, the page and health do not", "[telemetry][http]") {
  testing::TempDir dir;
  Telemetry t(dp_config());
  one_round(t);
  auto keys = std::make_shared<protocol::ApiKeys>(protocol::ApiKeys::load(key_file(dir), "http.api_keys"));
  HttpApi api(t, "127.0.0.1:0", keys);
  httplib::Client client("127.0.0.1", api.port());
  const httplib::Headers bearer{{"Authorization", "Bearer " + kKey}};

  for (const char* path : {"/metrics", "/api/status"}) {
    INFO(path);
    auto refused = client.Get(path);
    REQUIRE(refused);
    CHECK(refused->status == 401);
    CHECK(refused->get_header_value("WWW-Authenticate") == protocol::kApiKeyChallenge);
    CHECK_THAT(json::parse(refused->body)["error"]["message"].get<std::string>(), Catch::Contains("http.api_keys"));
    auto wrong = client.Get(path, {{"Authorization", "Bearer " + std::string(64, 'f')}});
    REQUIRE(wrong);
    CHECK(wrong->status == 401);
  }
  auto metrics = client.Get("/metrics", bearer);
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get_header_value("Content-Type") == prometheus::kContentType);
  CHECK(has_line(metrics->body, "fedge_rounds_completed_total 1"));
  auto status = client.Get("/api/status", bearer);
  REQUIRE(status);
  CHECK(status->status == 200);
  CHECK(json::parse(status->body)["rounds"][0]["state"] == "completed");

  auto page = client.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK_THAT(page->get_header_value("Content-Type"), Catch::StartsWith("text/html"));
  CHECK(page->body == dashboard_html());
  // Nothing is loaded from elsewhere (no CDN): the page works offline.
  CHECK_THAT(page->body, Catch::Contains("<html") && !Catch::Contains("src=\"http") &&
                             !Catch::Contains("href=\"http") && !Catch::Contains("@import"));
  CHECK_THAT(page->get_header_value("Content-Security-Policy"), Catch::Contains("default-src 'none'"));
  auto health = client.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto missing = client.Get("/nothing", bearer);
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(json::parse(missing->body)["error"]["code"] == "not_found");
  auto post = client.Post("/metrics", bearer, "x", "text/plain");
  REQUIRE(post);
  CHECK(post->status == 404);  // read-only: no POST route
  // Hostile requests: an oversized body, a huge bearer token, a long path.
  auto big = client.Post("/api/status", bearer, std::string(1 << 20, 'x'), "application/json");
  CHECK((!big || big->status == 413 || big->status == 404));
  auto huge_token = client.Get("/metrics", {{"Authorization", "Bearer " + std::string(100000, 'k')}});
  CHECK((!huge_token || huge_token->status == 401 || huge_token->status == 431 || huge_token->status == 400));
  auto long_path = client.Get(("/" + std::string(20000, 'p')).c_str(), bearer);
  CHECK((!long_path || long_path->status >= 400));
  // ... and it still answers.
  httplib::Client after("127.0.0.1", api.port());
  auto again = after.Get("/metrics", bearer);
  REQUIRE(again);
  CHECK(again->status == 200);
  api.stop();
  api.stop();  // idempotent
}

TEST_CASE("coordinator HTTP: without keys it listens on loopback only, naming http.api_keys", "[telemetry][http]") {
  Telemetry t(FederationConfig{});
  CHECK_THROWS_WITH(HttpApi(t, "0.0.0.0:0", nullptr), Catch::Contains("http.api_keys"));
  CHECK_THROWS_WITH(HttpApi(t, "127.0.0.1", nullptr), Catch::Contains("http.listen"));
  CHECK_THROWS_WITH(HttpApi(t, "127.0.0.1:99999", nullptr), Catch::Contains("http.listen"));
  HttpApi open(t, "127.0.0.1:0", nullptr);
  httplib::Client client("127.0.0.1", open.port());
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  // A second listener on the same port fails loudly.
  CHECK_THROWS_AS(HttpApi(t, "127.0.0.1:" + std::to_string(open.port()), nullptr), Error);
}

TEST_CASE("coordinator config: [http] is read, off by default, and checked", "[telemetry]") {
  testing::TempDir dir;
  auto read = [&](const std::string& http) {
    const auto file = dir.path / "c.toml";
    std::ofstream(file) << "[coordinator]\ninsecure = true\n[federation]\nrounds = 1\n" << http;
    return read_coordinator_config(file);
  };
  CHECK(read("").http.listen.empty());
  const auto c = read("[http]\nlisten = \"127.0.0.1:9464\"\napi_keys = \"keys.txt\"\n");
  CHECK(c.http.listen == "127.0.0.1:9464");
  CHECK(c.http.api_keys == dir.path / "keys.txt");
  CHECK_THROWS_WITH(read("[http]\napi_keys = \"keys.txt\"\n"), Catch::Contains("listen"));
  CHECK_THROWS_WITH(read("[http]\nlisten = \"9464\"\n"), Catch::Contains("http.listen"));
  CHECK_THROWS_WITH(read("[http]\nlisten = 9464\n"), Catch::Contains("listen"));
  CHECK_THROWS_WITH(read("[http]\nlisen = \"127.0.0.1:1\"\n"), Catch::Contains("lisen"));
}
