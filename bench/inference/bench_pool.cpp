// The decode pool's own cost (inference/src/kernels.cpp): how long one job of
// 16 chunks takes at 1 and 2 threads as the work per chunk grows, next to
// what moving one cache line between the two threads costs on this machine
// (a ping-pong on one atomic word, the same run). The pool's constants come
// from these figures: one job costs the model's decode about this overhead
// per product group, and a steal costs about two line moves a chunk.
//   build/bin/bench_pool
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "fedge/common/machine.h"
#include "kernels.h"  // inference/src: the decode pool (parallel_for)

namespace kernels = fedge::inference::kernels;
using clock_type = std::chrono::steady_clock;

namespace {

// Round trip of one cache line between this thread and another (each waits
// for the other's write), in ns.
double line_round_trip_ns() {
  alignas(64) std::atomic<int> flag{0};
  constexpr int kTrips = 200000;
  std::thread other([&] {
    for (int i = 0; i < kTrips; ++i) {
      while (flag.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      flag.store(2 * i + 2, std::memory_order_release);
    }
  });
  const auto start = clock_type::now();
  for (int i = 0; i < kTrips; ++i) {
    flag.store(2 * i + 1, std::memory_order_release);
    while (flag.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  const double s = std::chrono::duration<double>(clock_type::now() - start).count();
  other.join();
  return s / kTrips * 1e9;
}

struct Job {
  float* y;
  int floats;  // per chunk
};

// A chunk's work: add 1 to its own floats (memory-light, so the job's cost
// is the pool's plus this).
void add_one(const void* p, int chunk) {
  const Job& j = *static_cast<const Job*>(p);
  float* y = j.y + static_cast<std::size_t>(chunk) * j.floats;
  for (int i = 0; i < j.floats; ++i) y[i] += 1.0F;
}

// Median time of one 16-chunk job, in us.
double job_us(int threads, int floats) {
  omp_set_num_threads(threads);
  std::vector<float> y(static_cast<std::size_t>(16) * floats);
  Job job{y.data(), floats};
  for (int i = 0; i < 2000; ++i) kernels::parallel_for(16, &add_one, &job);
  std::vector<double> samples;
  for (int rep = 0; rep < 15; ++rep) {
    constexpr int kJobs = 5000;
    const auto start = clock_type::now();
    for (int i = 0; i < kJobs; ++i) kernels::parallel_for(16, &add_one, &job);
    samples.push_back(std::chrono::duration<double>(clock_type::now() - start).count() / kJobs * 1e6);
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

}  // namespace

int main() {
  std::printf("bench_pool: one job of 16 chunks on the decode pool (median of 15 x 5000 jobs)\n");
  std::printf("machine: %s\n", fedge::machine_summary().c_str());
  if (std::thread::hardware_concurrency() < 2) {
    std::printf("one core: nothing to measure\n");
    return 0;
  }
  std::printf("one cache line's round trip between two threads: %.0f ns\n", line_round_trip_ns());
  std::printf("%-16s %10s %10s %12s\n", "floats / chunk", "1 thread", "2 threads", "2t speed-up");
  for (int floats : {1, 64, 256, 1024, 4096}) {
    const double one = job_us(1, floats), two = job_us(2, floats);
    std::printf("%-16d %8.2f us %8.2f us %11.2fx\n", floats, one, two, one / two);
  }
  std::printf("reading: the 1-float row is the pool's fixed cost at 2 threads (publish the job, the worker's\n"
              "done word back); where the speed-up passes 1.0x, a product or an attention pass is worth splitting\n");
  return 0;
}
