// Continuous batching in the node's InferenceService (no HTTP): 8 concurrent
// streams of 64 tokens on a randomly initialised SmolLM-135M-shaped model,
// aggregate tokens/s against a single stream's in the same run, and
// time-to-first-token (p50/p95). References on the same streams: static
// batching (a batch takes only the requests waiting when it starts) and one
// request at a time (max_batch 1). Two arrival patterns: all at once
// ("burst"), and one stream every eighth of a single stream's time
// ("staggered"), where a static batch makes late arrivals wait. Each
// scenario runs --repeat times, the scenarios taking turns so that a noisy
// neighbour on a shared machine hits them alike; each row is the median run
// by tokens/s (its TTFT with it), and the spread of the ratios is printed.
//
//   bench_continuous_batching [--streams N] [--tokens T] [--threads K] [--weights f32|bf16] [--shape tiny]
//                             [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/inference/kernels_info.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/serving/inference_service.h"

using namespace fedge;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, std::size_t(q * double(v.size() - 1) + 0.5));
  return v[i];
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one.empty() ? "unknown" : one + " " + five + " " + fifteen;
}

struct Figures {
  long tokens = 0;
  double seconds = 0, tokens_per_s = 0, ttft_p50_ms = 0, ttft_p95_ms = 0;
  std::uint64_t batches = 0;
};

// Submits `streams` requests, stream i at i * gap seconds after the first,
// and waits for all. TTFT: from a stream's submit to its first token.
Figures run_streams(inference::Model& model, const inference::Tokenizer& tokenizer, serving::ServiceOptions options,
                    int streams, int tokens, double gap) {
  serving::InferenceService service(model, tokenizer, options);
  struct Stream {
    clock_type::time_point submitted, first;
    bool started = false;
  };
  std::vector<Stream> s(static_cast<std::size_t>(streams));
  std::vector<std::future<serving::CompletionResult>> futures;
  const auto start = clock_type::now();
  for (int i = 0; i < streams; ++i) {
    std::this_thread::sleep_until(start + std::chrono::duration<double>(gap * i));
    serving::CompletionRequest r;
    r.prompt = "Stream " + std::to_string(i) + ": the well pressure log for today reads";
    r.max_tokens = tokens;
    r.adapter = serving::AdapterChoice::kNone;
    Stream& st = s[std::size_t(i)];
    st.submitted = clock_type::now();
    futures.push_back(service.submit(r, [&st](std::int32_t, std::string_view) {
      if (!st.started) st.first = clock_type::now();
      st.started = true;
      return true;
    }));
  }
  Figures f;
  for (auto& fut : futures) f.tokens += fut.get().completion_tokens;
  f.seconds = seconds_between(start, clock_type::now());
  f.tokens_per_s = double(f.tokens) / f.seconds;
  std::vector<double> ttft;
  for (const auto& st : s) ttft.push_back(seconds_between(st.submitted, st.first) * 1e3);
  f.ttft_p50_ms = percentile(ttft, 0.5);
  f.ttft_p95_ms = percentile(ttft, 0.95);
  f.batches = service.stats().batches;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  int streams = 8, tokens = 64, threads = 0, repeat = 3;
  std::string weights = "f32", shape = "smollm-135m";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--streams") streams = std::max(1, std::atoi(v.c_str()));
    else if (a == "--tokens") tokens = std::max(1, std::atoi(v.c_str()));
    else if (a == "--threads") threads = std::max(0, std::atoi(v.c_str()));
    else if (a == "--weights") weights = v;
    else if (a == "--shape") shape = v;
    else if (a == "--repeat") repeat = std::max(1, std::atoi(v.c_str()));
    else {
      std::fprintf(stderr,
                   "usage: bench_continuous_batching [--streams N] [--tokens T] [--threads K] [--weights f32|bf16] "
                   "[--shape smollm-135m|tiny] [--repeat R]\n");
      return 2;
    }
  }
  inference::setup_torch(threads > 0 ? threads : fedge::online_cores());
  inference::ModelConfig config =
      shape == "tiny" ? inference::ModelConfig::tiny() : inference::ModelConfig::smollm_135m();
  config.eos_token_ids.clear();  // random weights: every stream runs its full length
  inference::LoadOptions load;
  load.weights = inference::parse_weight_type(weights);
  inference::Model model = inference::Model::random(config, 1, load);
  const inference::Tokenizer tokenizer = inference::Tokenizer::byte_level_tiny();

  std::printf("bench_continuous_batching: %d streams of %d tokens (greedy, ~50-token prompts), %s-shape %s weights, "
              "random init\n",
              streams, tokens, shape.c_str(), weights.c_str());
  std::printf("machine: %s; kernel path: %s; threads %d; load average at start %s\n",
              fedge::machine_summary().c_str(), inference::kernel_isa(),
              threads > 0 ? threads : fedge::online_cores(), load_average().c_str());

  serving::ServiceOptions continuous;
  continuous.max_batch = streams;
  serving::ServiceOptions static_batching = continuous;
  static_batching.continuous_batching = false;
  serving::ServiceOptions one_at_a_time = continuous;
  one_at_a_time.max_batch = 1;

  run_streams(model, tokenizer, continuous, 2, 4, 0);  // warm-up: thread pool, first allocations
  struct Scenario {
    const char* name;
    int streams;
    const serving::ServiceOptions* options;
    bool staggered;
    std::vector<Figures> runs;
  };
  std::vector<Scenario> scenarios = {
      {"single stream", 1, &continuous, false, {}},
      {"burst, continuous batching", streams, &continuous, false, {}},
      {"burst, static batching", streams, &static_batching, false, {}},
      {"burst, one at a time", streams, &one_at_a_time, false, {}},
      {"staggered, continuous batching", streams, &continuous, true, {}},
      {"staggered, static batching", streams, &static_batching, true, {}},
  };
  for (int r = 0; r < repeat; ++r) {
    // Staggered: a new stream every eighth of this repetition's single-stream time.
    double gap = 0;
    for (auto& sc : scenarios) {
      sc.runs.push_back(run_streams(model, tokenizer, *sc.options, sc.streams, tokens, sc.staggered ? gap : 0));
      if (sc.streams == 1) gap = sc.runs.back().seconds / 8;
    }
  }
  auto median = [](std::vector<Figures> runs) {
    std::sort(runs.begin(), runs.end(), [](const Figures& a, const Figures& b) { return a.tokens_per_s < b.tokens_per_s; });
    return runs[runs.size() / 2];
  };
  const Figures single = median(scenarios.front().runs);
  std::printf("%-34s %7s %7s %8s %10s %9s %10s %10s %8s %15s\n", "scenario (median of runs)", "streams", "tokens",
              "wall s", "agg t/s", "x single", "TTFT p50", "TTFT p95", "batched", "x single, range");
  for (const auto& sc : scenarios) {
    const Figures f = median(sc.runs);
    // The range pairs each run with its own repetition's single stream.
    double lo = 1e300, hi = 0;
    for (std::size_t r = 0; r < sc.runs.size(); ++r) {
      const double x = sc.runs[r].tokens_per_s / scenarios.front().runs[r].tokens_per_s;
      lo = std::min(lo, x), hi = std::max(hi, x);
    }
    std::printf("%-34s %7d %7ld %8.2f %10.1f %8.2fx %8.0fms %8.0fms %8llu %7.2f-%.2fx\n", sc.name, sc.streams, f.tokens,
                f.seconds, f.tokens_per_s, f.tokens_per_s / single.tokens_per_s, f.ttft_p50_ms, f.ttft_p95_ms,
                static_cast<unsigned long long>(f.batches), lo, hi);
  }
  std::printf("load average at end %s\n", load_average().c_str());
  std::printf("agg t/s: all streams' tokens over the wall time from the first submit to the last answer; x single:\n"
              "over the single stream's t/s in this run; TTFT: submit to first streamed token; batched: runs in\n"
              "which several requests decoded together; range: each repetition's ratio to its own single stream.\n");
  return 0;
}
