// GET /metrics and /api/status on real `fedge coordinator` and `fedge node`
// processes around one real secure round: 401 without the API key, the
// values after the round, and the text read by the reference parser
// (Python's prometheus_client, through tests/prometheus/check_prometheus.py).
#include <httplib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "e2e/federation_harness.h"

namespace {

using namespace std::chrono_literals;
using fedge::testing::FederationHarness;
using nlohmann::json;

const std::string kKey = "5f1e9d3c7b2a4f6e8d0c1b3a5f7e9d2c4b6a8f0e1d3c5b7a9f2e4d6c8b0a1f3e";

// Runs the reference parser over `text` with these checks; 0 when all hold.
// 77 (prometheus_client missing) is reported and counted as a pass.
int reference_parse(const std::filesystem::path& file, const std::string& text, const std::vector<std::string>& checks) {
  std::ofstream(file) << text;
  std::string command = "python3 " + std::string(FEDGE_SOURCE_DIR) + "/tests/prometheus/check_prometheus.py '" +
                        file.string() + "'";
  for (const auto& c : checks) command += " '" + c + "'";
  command += " > '" + file.string() + ".out' 2>&1";
  const int status = std::system(command.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  UNSCOPED_INFO("check_prometheus.py: " << fedge::testing::read_file(file.string() + ".out"));
  if (code == 77) {
    WARN("prometheus_client is not installed: the reference parser did not run (apt-get install python3-prometheus-client)");
    return 0;
  }
  return code;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TEST_CASE("metrics: /metrics and /api/status of a coordinator and a node after a real round", "[e2e][metrics]") {
  FederationHarness h(3);
  std::ofstream(h.root() / "keys/api_keys.txt") << "# the test's scraper\n" << kKey << " prometheus\n";
  REQUIRE(::chmod((h.root() / "keys/api_keys.txt").c_str(), 0600) == 0);
  auto coordinator = h.start_coordinator(
      "rounds = 1\nmin_nodes = 3\nheartbeat_interval_ms = 200\nliveness_timeout_ms = 4000\n"
      "[federation.train]\nlocal_steps = 5\nlearning_rate = 0.01\nbatch_size = 2\n"
      "[federation.deadlines]\ntrain_ms = 120000\n"
      "[federation.secagg]\nexpected_dropout = 0.001\nfailure_probability = 0.01\ncorrupt_fraction = 0.0\n",
      "tcp://127.0.0.1:0",
      "[http]\nlisten = \"127.0.0.1:0\"\napi_keys = \"keys/api_keys.txt\"\nurl_file = \"http_url.txt\"\n");
  REQUIRE(fedge::testing::eventually([&] { return std::filesystem::exists(h.root() / "http_url.txt"); }, 30s));
  const std::string url = trimmed(fedge::testing::read_file(h.root() / "http_url.txt"));
  INFO("coordinator url " << url);
  httplib::Client co(url);
  co.set_read_timeout(10, 0);

  // Without a key: 401 for the data, the page and health open.
  const auto refused = co.Get("/metrics");
  REQUIRE(refused);
  CHECK(refused->status == 401);
  CHECK(json::parse(refused->body)["error"]["code"] == "invalid_api_key");
  const auto refused_status = co.Get("/api/status");
  REQUIRE(refused_status);
  CHECK(refused_status->status == 401);
  const auto page = co.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK_THAT(page->body, Catch::Contains("fedge"));

  co.set_bearer_token_auth(kKey);
  const auto before = co.Get("/metrics");
  REQUIRE(before);
  REQUIRE(before->status == 200);
  CHECK(reference_parse(h.root() / "before.prom", before->body,
                        {"fedge_rounds_completed_total:counter", "fedge_rounds_completed_total==0",
                         "fedge_round_duration_seconds:histogram"}) == 0);

  // Node 1 also personalizes (finetune) each global and serves it in the local slot.
  auto served = h.start_node(1,
                             "[serve]\nhttp = \"127.0.0.1:0\"\napi_keys = \"keys/api_keys.txt\"\n"
                             "expose_local_adapter = true\n"
                             "[personalization]\nkind = \"finetune\"\nsteps = 3\nlearning_rate = 0.01\nbatch_size = 2\n");
  auto n2 = h.start_node(2, "exit_after_versions = 1\n");
  auto n3 = h.start_node(3, "exit_after_versions = 1\n");

  // The round's figures, read while the coordinator lingers after it.
  std::string metrics, status;
  REQUIRE(fedge::testing::eventually(
      [&] {
        const auto m = co.Get("/metrics");
        if (!m || m->status != 200 || m->body.find("\nfedge_rounds_completed_total 1\n") == std::string::npos)
          return false;
        metrics = m->body;
        const auto s = co.Get("/api/status");
        if (!s || s->status != 200) return false;
        status = s->body;
        return true;
      },
      180s, 50ms));
  INFO("metrics:\n" << metrics);
  INFO("coordinator log:\n" << coordinator->log_text());
  CHECK(reference_parse(h.root() / "after.prom", metrics,
                        {"fedge_rounds_completed_total==1", "fedge_rounds_failed_total==0",
                         "fedge_global_adapter_version==1", "fedge_last_round_completed==1",
                         "fedge_last_round_survivors==3", "fedge_nodes{state=live}==3",
                         "fedge_received_bytes_total>=1000", "fedge_sent_bytes_total>=1000",
                         "fedge_round_duration_seconds_count{outcome=completed}==1",
                         "fedge_round_stage_duration_seconds_count{stage=advertise_keys}==1",
                         "fedge_round_stage_duration_seconds_count{stage=unmask}==1",
                         "fedge_last_round_metric{name=train_loss}>=0", "fedge_dp_epsilon==0"}) == 0);
  const json s = json::parse(status);
  REQUIRE(s["rounds"].size() == 1);
  CHECK(s["rounds"][0]["state"] == "completed");
  CHECK(s["rounds"][0]["survivors"] == 3);
  CHECK(s["rounds"][0]["dropouts"] == 0);
  CHECK(s["rounds"][0]["metrics"].contains("train_loss"));
  CHECK(s["rounds"][0]["stage_seconds"].contains("masked_input"));
  CHECK(s["nodes"].size() == 3);
  CHECK(s["traffic"]["received_bytes"].get<double>() > 1000);
  CHECK(coordinator->wait_for_exit(30s) == 0);

  // The node: its API key, then its serving and training figures.
  const std::string marker = "OpenAI-compatible API on http://127.0.0.1:";
  REQUIRE(fedge::testing::eventually([&] { return served->log_text().find(marker) != std::string::npos; }, 60s));
  const std::string log = served->log_text();
  httplib::Client node("127.0.0.1", std::stoi(log.substr(log.find(marker) + marker.size())));
  node.set_read_timeout(30, 0);
  const auto node_refused = node.Get("/metrics");
  REQUIRE(node_refused);
  CHECK(node_refused->status == 401);
  node.set_bearer_token_auth(kKey);
  REQUIRE(fedge::testing::eventually([&] { return served->log_text().find("installed global adapter v1") != std::string::npos; }, 60s));
  REQUIRE(fedge::testing::eventually(
      [&] { return served->log_text().find("personal adapter (finetune) from global v1") != std::string::npos; }, 60s));
  CHECK(trimmed(fedge::testing::read_file(h.root() / "node1/personal/fedge_version.txt")) == "1");
  const auto answer = node.Post("/v1/completions", R"({"model": "node-1", "prompt": "well", "max_tokens": 4})",
                                "application/json");
  REQUIRE(answer);
  REQUIRE(answer->status == 200);
  const auto node_metrics = node.Get("/metrics");
  REQUIRE(node_metrics);
  REQUIRE(node_metrics->status == 200);
  INFO("node metrics:\n" << node_metrics->body);
  CHECK(reference_parse(h.root() / "node.prom", node_metrics->body,
                        {"fedge_inference_requests_total:counter", "fedge_inference_requests_total{outcome=completed}==1",
                         "fedge_inference_generated_tokens_total>=1", "fedge_inference_queue_length==0",
                         "fedge_adapter_version{slot=global}==1", "fedge_adapter_installed{slot=global}==1",
                         "fedge_training_rounds_total{outcome=completed}==1", "fedge_training_steps_total==5",
                         "fedge_node_global_version==1", "fedge_training_last_loss>=0",
                         "fedge_node_personal_version==1", "fedge_adapter_version{slot=local}==1",
                         "fedge_adapter_installed{slot=local}==1"}) == 0);
}
