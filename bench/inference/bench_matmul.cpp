// fp32 matrix-product rate that libtorch reaches here, at 1 and 2 threads.
// A figure far below ~90 GFLOP/s per thread means libtorch is not using
// OpenBLAS (install libopenblas0-openmp; scripts/install-deps.sh does).
#include <chrono>
#include <cstdio>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "fedge/common/machine.h"
#include "fedge/inference/torch_setup.h"

namespace {

// Best-of-N seconds for one n x n x n product.
double time_matmul(std::int64_t n, int repeats) {
  at::Tensor a = at::randn({n, n});
  at::Tensor b = at::randn({n, n});
  at::Tensor c = at::empty({n, n});
  at::mm_out(c, a, b);  // warm-up: BLAS thread pool, page faults
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, seconds);
  }
  return best;
}

}  // namespace

int main() {
  std::printf("bench_matmul: fp32 C = A * B (square, best of 5) through libtorch at::mm\n");
  std::printf("machine: %s\n", fedge::machine_summary().c_str());
  std::printf("%-8s %-8s %12s\n", "threads", "n", "GFLOP/s");
  std::vector<int> thread_counts = {1};
  if (fedge::online_cores() > 1) thread_counts.push_back(2);
  for (int threads : thread_counts) {
    fedge::inference::setup_torch(threads);
    for (std::int64_t n : {256, 512, 1024, 2048}) {
      double seconds = time_matmul(n, 5);
      double gflops = 2.0 * static_cast<double>(n) * n * n / seconds / 1e9;
      std::printf("%-8d %-8ld %12.1f\n", threads, static_cast<long>(n), gflops);
    }
  }
  std::printf("reference (DESIGN.md, this VM class): ~90 GFLOP/s on 1 thread, ~150 on 2 with OpenBLAS\n");
  return 0;
}
