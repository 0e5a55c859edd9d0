#include "fedge/inference/torch_setup.h"

#include <omp.h>

#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include <mutex>

#include "fedge/common/machine.h"

namespace fedge::inference {

int available_cores() { return online_cores(); }

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

void setup_torch_thread(int threads) {
  if (threads > 0) {
    omp_set_num_threads(threads);
  } else {
    at::get_num_threads();  // libtorch applies its process-wide count to a thread that asks
  }
}

}  // namespace fedge::inference
