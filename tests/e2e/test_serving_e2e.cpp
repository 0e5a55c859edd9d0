// A node process serves its model over HTTP while it trains in a federation.
#include <httplib.h>

#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <netinet/in.h>
#include <sys/stat.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "e2e/federation_harness.h"

namespace {

using namespace std::chrono_literals;
using fedge::testing::FederationHarness;
using nlohmann::json;

// A port nobody listens on (bound, read, closed).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("serving: completions answer while the node trains, streamed chat is OpenAI's format, split falls back",
          "[e2e][long]") {
  FederationHarness h(3);
  auto coordinator = h.start_coordinator(
      "rounds = 2\nmin_nodes = 3\nheartbeat_interval_ms = 200\nliveness_timeout_ms = 4000\n"
      "[federation.train]\nlocal_steps = 40\nlearning_rate = 0.01\nbatch_size = 4\n"
      "[federation.deadlines]\ntrain_ms = 120000\n"
      "[federation.secagg]\nexpected_dropout = 0.001\nfailure_probability = 0.01\ncorrupt_fraction = 0.0\n");
  // Port 0: the node picks a free port and logs it. The split peer's address
  // has nobody listening, so split inference must fall back.
  // Node 1 runs until stopped, so it keeps serving after the federation ends.
  // Its API wants a key; the split link is CurveZMQ (node 2's key stands in
  // for the absent peer's).
  const std::string api_key = "e2e0b7d1c5a94f3e8d2c6b0a1f9e7d5c3b1a0f8e6d4c2b0a9f7e5d3c1b0a8f6e";
  std::ofstream(h.root() / "keys/api_keys.txt") << "# the test's client\n" << api_key << " e2e-client\n";
  REQUIRE(::chmod((h.root() / "keys/api_keys.txt").c_str(), 0600) == 0);
  auto served = h.start_node(1, "[serve]\nhttp = \"127.0.0.1:0\"\napi_keys = \"keys/api_keys.txt\"\n"
                                "[serve.split]\npeer = \"tcp://127.0.0.1:" + std::to_string(free_port()) +
                                "\"\npeer_public_key = \"keys/node2.pub\"\nlayers = 1\ndeadline_ms = 300\n");
  auto n2 = h.start_node(2, "exit_after_versions = 2\n");
  auto n3 = h.start_node(3, "exit_after_versions = 2\n");

  const std::string marker = "OpenAI-compatible API on http://127.0.0.1:";
  REQUIRE(fedge::testing::eventually([&] { return served->log_text().find(marker) != std::string::npos; }, 60s));
  const std::string log = served->log_text();
  const int port = std::stoi(log.substr(log.find(marker) + marker.size()));
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(30, 0);
  REQUIRE(fedge::testing::eventually([&] { return static_cast<bool>(http.Get("/health")); }, 60s));
  // Without the key: 401, OpenAI's invalid_api_key.
  const auto refused = http.Post("/v1/completions", R"({"model": "node-1", "prompt": "x", "max_tokens": 1})",
                                 "application/json");
  REQUIRE(refused);
  CHECK(refused->status == 401);
  CHECK(json::parse(refused->body)["error"]["code"] == "invalid_api_key");
  http.set_bearer_token_auth(api_key);

  // Completions while the federation runs; note those answered mid-training.
  int answered = 0, during_training = 0, failed = 0;
  std::set<std::uint64_t> versions;
  while (coordinator->running()) {
    const auto log = served->log_text();
    const bool training = count(log, "local steps from global") > count(log, "local training done");
    const auto res = http.Post("/v1/completions", R"({"model": "node-1", "prompt": "well KX-1 day 3:", "max_tokens": 4})",
                               "application/json");
    if (!res || res->status != 200) {
      if (failed++ == 0) {
        UNSCOPED_INFO("first failure: " << (res ? std::to_string(res->status) + " " + res->body
                                                 : httplib::to_string(res.error())));
      }
      continue;
    }
    const auto body = json::parse(res->body);
    CHECK(body["object"] == "text_completion");
    CHECK(body["choices"][0].contains("text"));
    versions.insert(body["fedge"]["adapter_version"].get<std::uint64_t>());
    ++answered;
    during_training += training;
  }
  INFO("node log:\n" << served->log_text());
  CHECK(coordinator->wait_for_exit(10s) == 0);
  CHECK(failed == 0);
  CHECK(answered > 0);
  CHECK(during_training > 0);
  CHECK(versions.size() >= 2);  // the global was swapped in without stopping service

  // A streamed chat completion, chunk by chunk in OpenAI's format.
  const auto stream = http.Post(
      "/v1/chat/completions",
      R"({"model": "node-1", "messages": [{"role": "user", "content": "status of KX-1?"}], "max_tokens": 5, "stream": true})",
      "application/json");
  REQUIRE(stream);
  REQUIRE(stream->status == 200);
  std::istringstream lines(stream->body);
  std::string line;
  int chunks = 0;
  bool done = false;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    REQUIRE(line.rfind("data: ", 0) == 0);
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const auto chunk = json::parse(data);
    CHECK(chunk["object"] == "chat.completion.chunk");
    CHECK(chunk["choices"][0].contains("delta"));
    ++chunks;
  }
  CHECK(chunks >= 2);
  CHECK(done);

  // No adapter: the request is split, the peer is down, the node answers alone.
  const auto split = http.Post("/v1/completions", R"({"model": "node-1", "prompt": "well", "max_tokens": 3, "adapter": "none"})",
                               "application/json");
  REQUIRE(split);
  REQUIRE(split->status == 200);
  const auto meta = json::parse(split->body)["fedge"];
  CHECK(meta["fell_back_to_local"] == true);
  CHECK(!meta["note"].get<std::string>().empty());

  for (auto* n : {n2.get(), n3.get()}) CHECK(n->wait_for_exit(30s) == 0);
  served->signal(SIGTERM);
  CHECK(served->wait_for_exit(30s) == 1);  // stopped by a signal, cleanly
}
