#include "fedge/inference/torch_setup.h"

#include <sched.h>
#include <omp.h>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <thread>

namespace fedge::inference {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int setup_torch(int threads) {
  if (threads <= 0) threads = available_cores();
  // set_num_interop_threads may be called once per process, before any
  // inter-op work starts.
  static std::once_flag interop_once;
  std::call_once(interop_once, [] {
    try {
      at::set_num_interop_threads(1);
    } catch (const std::exception& e) {
      spdlog::debug("libtorch inter-op threads already fixed: {}", e.what());
    }
  });
  at::set_num_threads(threads);
  omp_set_num_threads(threads);
  return at::get_num_threads();
}

}  // namespace fedge::inference
