// HTTP completion latency (p50/p95) and throughput (requests/s, tokens/s) of
// the node's OpenAI-compatible server under 1, 4 and 16 concurrent clients on
// the tiny model, against the same requests made on the InferenceService
// directly (no HTTP) in the same run.
//
//   bench_http [--requests N] [--max-tokens T] [--threads K] [--max-batch B]
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/http_server.h"
#include "fedge/serving/inference_service.h"

using namespace fedge;
using clock_type = std::chrono::steady_clock;

namespace {

struct Figures {
  double p50_ms = 0, p95_ms = 0, requests_per_s = 0, tokens_per_s = 0, mean_tokens = 0;
  int failures = 0;
};

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5));
  return v[i];
}

const char* kPrompts[] = {"The well pressure today is", "Summarise the shift report:", "Clinic schedule for Monday",
                          "Plant line 3 status"};

Figures summarise(const std::vector<double>& latencies, long tokens, double seconds, int failures) {
  Figures f;
  f.p50_ms = percentile(latencies, 0.5) * 1e3;
  f.p95_ms = percentile(latencies, 0.95) * 1e3;
  f.requests_per_s = double(latencies.size()) / seconds;
  f.tokens_per_s = double(tokens) / seconds;
  f.mean_tokens = latencies.empty() ? 0 : double(tokens) / double(latencies.size());
  f.failures = failures;
  return f;
}

Figures run_direct(serving::InferenceService& service, int requests, int max_tokens) {
  std::vector<double> lat;
  long tokens = 0;
  const auto t0 = clock_type::now();
  for (int i = 0; i < requests; ++i) {
    serving::CompletionRequest r;
    r.prompt = kPrompts[i % 4];
    r.max_tokens = max_tokens;
    const auto s = clock_type::now();
    tokens += service.complete(r).completion_tokens;
    lat.push_back(std::chrono::duration<double>(clock_type::now() - s).count());
  }
  return summarise(lat, tokens, std::chrono::duration<double>(clock_type::now() - t0).count(), 0);
}

Figures run_http(int port, int clients, int requests, int max_tokens) {
  std::vector<std::vector<double>> lat(clients);
  std::atomic<long> tokens{0};
  std::atomic<int> failures{0}, next{0};
  const auto t0 = clock_type::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);  // as common clients do (urllib3, httpx)
      cli.set_read_timeout(300, 0);
      for (int i = next++; i < requests; i = next++) {
        const nlohmann::json body = {{"model", "tiny"}, {"prompt", kPrompts[i % 4]}, {"max_tokens", max_tokens},
                                     {"temperature", 0}};
        const auto s = clock_type::now();
        auto res = cli.Post("/v1/completions", body.dump(), "application/json");
        const double dt = std::chrono::duration<double>(clock_type::now() - s).count();
        if (!res || res->status != 200) {
          if (failures.fetch_add(1) == 0)
            std::fprintf(stderr, "first failure: %s\n",
                         res ? ("HTTP " + std::to_string(res->status) + " " + res->body).c_str()
                             : httplib::to_string(res.error()).c_str());
          continue;
        }
        lat[c].push_back(dt);
        tokens += nlohmann::json::parse(res->body)["usage"]["completion_tokens"].get<long>();
      }
    });
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  return summarise(all, tokens.load(), seconds, failures.load());
}

void print_row(const char* what, int clients, const Figures& f, double ref_p50_ms) {
  std::printf("| %-6s | %7d | %8.1f | %8.1f | %10.1f | %9.0f | %10.1f | %8.2fx | %d |\n", what, clients, f.p50_ms,
              f.p95_ms, f.requests_per_s, f.tokens_per_s, f.mean_tokens, f.p50_ms / ref_p50_ms, f.failures);
}

}  // namespace

int main(int argc, char** argv) {
  int requests = 64, max_tokens = 32, threads = 0, max_batch = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--requests")) requests = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--max-tokens")) max_tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--max-batch")) max_batch = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: bench_http [--requests N] [--max-tokens T] [--threads K] [--max-batch B]\n");
      return 2;
    }
  }
  const int torch_threads = inference::setup_torch(threads);
  auto model = inference::Model::tiny(0);
  auto tokenizer = inference::Tokenizer::byte_level_tiny();
  serving::ServiceOptions so;
  so.model_name = "tiny";
  so.max_queue = 256;
  so.max_batch = max_batch;
  serving::InferenceService service(model, tokenizer, so);
  serving::HttpServer server(service);

  std::printf("bench_http: %s, %d torch threads\n", machine_summary().c_str(), torch_threads);
  std::printf("workload: tiny model (%lld parameters), greedy, max_tokens %d, %d requests per row, prompts of 20-28 bytes, "
              "service max_batch %d\n",
              static_cast<long long>(model.config().num_parameters()), max_tokens, requests, max_batch);
  run_direct(service, 4, max_tokens);  // warm-up
  const Figures direct = run_direct(service, requests, max_tokens);
  std::printf("\n| path   | clients | p50 (ms) | p95 (ms) | requests/s | tokens/s | tokens/req | p50 / direct | failed |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  print_row("direct", 1, direct, direct.p50_ms);
  for (int clients : {1, 4, 16}) print_row("http", clients, run_http(server.port(), clients, requests, max_tokens), direct.p50_ms);
  std::printf("\ndirect: InferenceService::complete() in this process, one caller (the reference).\n"
              "One worker: waiting requests are decoded in batches of up to max_batch; beyond that they queue.\n");
  return 0;
}
