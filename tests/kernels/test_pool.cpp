// The decode pool (kernels::parallel_for): every chunk of every job runs
// exactly once, whatever the thread count (more threads than cores makes the
// threads steal from each other's shares), a thread stuck in one chunk holds
// up only that chunk, and each thread takes its own share front to back.
#include <omp.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "../../inference/src/kernels.h"  // internal to inference/, not installed

namespace kernels = fedge::inference::kernels;

namespace {

struct OmpThreadsGuard {
  int saved = omp_get_max_threads();
  ~OmpThreadsGuard() { omp_set_num_threads(saved); }
};

// Which thread ran each chunk, in the order each thread ran them.
struct Record {
  std::vector<std::atomic<int>> runs;
  std::mutex mutex;
  std::vector<std::pair<std::thread::id, int>> order;
  // With stall_a_worker, the first chunk another thread than `caller` runs
  // sleeps 100 ms.
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> stuck{false};
  bool stall_a_worker = false;
  int busy_us = 0;  // each chunk's work: long enough that the worker joins in
  explicit Record(int chunks) : runs(chunks) {}
};

void record_chunk(const void* p, int chunk) {
  auto& r = *static_cast<Record*>(const_cast<void*>(p));
  r.runs[chunk].fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    r.order.emplace_back(std::this_thread::get_id(), chunk);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(r.busy_us);
  while (std::chrono::steady_clock::now() < until) {
  }
  bool expected = false;
  if (r.stall_a_worker && std::this_thread::get_id() != r.caller &&
      r.stuck.compare_exchange_strong(expected, true))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

bool each_chunk_ran_once(const Record& r) {
  return std::all_of(r.runs.begin(), r.runs.end(), [](const std::atomic<int>& n) { return n.load() == 1; });
}

}  // namespace

TEST_CASE("kernels: the decode pool runs every chunk of every job exactly once") {
  OmpThreadsGuard guard;
  for (int threads : {2, 3, 8}) {
    omp_set_num_threads(threads);
    for (int chunks : {1, 2, 3, 7, 16, 61, 300, 4096}) {
      for (int repeat = 0; repeat < 20; ++repeat) {
        Record r(chunks);
        kernels::parallel_for(chunks, &record_chunk, &r);
        INFO("threads " << threads << " chunks " << chunks);
        REQUIRE(each_chunk_ran_once(r));
      }
    }
  }
  // The pool's chunk counts are 16-bit: a larger job runs serially, still once each.
  omp_set_num_threads(2);
  Record big(0x10000 + 5);
  kernels::parallel_for(0x10000 + 5, &record_chunk, &big);
  CHECK(each_chunk_ran_once(big));
}

TEST_CASE("kernels: a worker stuck in a chunk holds up only that chunk, the caller takes the rest of its share") {
  OmpThreadsGuard guard;
  omp_set_num_threads(2);
  // Warm the pool so its worker exists and spins.
  for (int i = 0; i < 10; ++i) {
    Record warm(64);
    kernels::parallel_for(64, &record_chunk, &warm);
  }
  Record r(64);
  r.stall_a_worker = true;
  kernels::parallel_for(64, &record_chunk, &r);
  REQUIRE(each_chunk_ran_once(r));
  const auto by_worker = std::count_if(r.order.begin(), r.order.end(), [&](const auto& e) { return e.first != r.caller; });
  // The worker ran at most the one chunk it slept in (none if it woke late):
  // the caller ran its own share and stole the rest of the worker's.
  CHECK(by_worker <= 1);
}

TEST_CASE("kernels: each thread of the decode pool takes its own share front to back") {
  OmpThreadsGuard guard;
  omp_set_num_threads(2);
  const std::thread::id caller = std::this_thread::get_id();
  // Until the worker has joined 20 jobs: on a loaded machine (ctest -j2) its
  // core may be busy for a while.
  int worker_joined = 0;
  for (int repeat = 0; repeat < 2000 && worker_joined < 20; ++repeat) {
    Record r(32);
    r.busy_us = 5;
    kernels::parallel_for(32, &record_chunk, &r);
    std::vector<int> mine;
    for (const auto& [thread, chunk] : r.order)
      if (thread == caller) mine.push_back(chunk);
    worker_joined += mine.size() < 32;
    // The caller owns chunks 0..15 and starts there; the worker can only
    // steal from the back of them, so the caller's run begins 0, 1, 2, ...
    // (it may run none: descheduled, its whole share stolen).
    for (std::size_t i = 0; i < mine.size() && mine[i] < 16; ++i) CHECK(mine[i] == int(i));
  }
  // Otherwise the check above saw the caller alone.
  CHECK(worker_joined == 20);
}
