// Read throughput of a ~512 MB safetensors file (F32, and the F16/BF16
// conversions checkpoints need), next to plain memcpy bandwidth measured in
// the same run. Built as bench_safetensors. Usage: bench_safetensors [MiB=512] [dir=$TMPDIR]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/common/safetensors.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

template <typename F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Writes a file of `tensors` tensors of dtype `dt` totalling `bytes` bytes.
void make_file(const fs::path& path, fedge::DType dt, std::size_t bytes, int tensors) {
  const std::size_t per = bytes / tensors / fedge::dtype_size(dt);
  std::vector<std::byte> data(per * fedge::dtype_size(dt));
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>((i * 2654435761u) >> 24);
  std::vector<std::string> names;
  std::vector<fedge::TensorView> views;
  for (int t = 0; t < tensors; ++t) {
    views.push_back({"layer." + std::to_string(t) + ".weight", dt, {static_cast<std::int64_t>(per)}, data});
  }
  fedge::write_safetensors(path, views);
}

double read_all(const fedge::SafetensorsFile& file, std::vector<float>& out) {
  double sum = 0;
  std::size_t pos = 0;
  for (const auto& t : file.tensors()) {
    const std::size_t n = static_cast<std::size_t>(t.numel());
    file.to_f32(t, {out.data() + pos, n});
    sum += out[pos];
    pos += n;
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 512;
  const fs::path dir = argc > 2 ? fs::path(argv[2]) : fs::temp_directory_path();
  const std::size_t bytes = mib << 20;
  const int tensors = 64;
  std::printf("machine: %s, %u hardware threads; all figures single-threaded\n", fedge::cpu_model().c_str(),
              std::thread::hardware_concurrency());

  // Reference: memcpy of the same number of bytes between two touched buffers.
  std::vector<std::byte> a(bytes, std::byte{1}), b(bytes, std::byte{2});
  const double memcpy_s = best_seconds(3, [&] { std::memcpy(b.data(), a.data(), bytes); });
  const double memcpy_gbs = bytes / memcpy_s / 1e9;
  std::printf("reference memcpy: %zu MiB in %.1f ms = %.2f GB/s\n", mib, memcpy_s * 1e3, memcpy_gbs);
  a = {};
  b = {};

  for (fedge::DType dt : {fedge::DType::kF32, fedge::DType::kBF16, fedge::DType::kF16}) {
    const fs::path path = dir / ("fedge_bench_" + std::string(fedge::dtype_name(dt)) + ".safetensors");
    make_file(path, dt, bytes, tensors);
    std::vector<float> out(bytes / fedge::dtype_size(dt));
    for (float& x : out) x = 0;  // touch the destination first

    fedge::SafetensorsFile file = fedge::SafetensorsFile::open(path);
    const double open_s = best_seconds(5, [&] { file = fedge::SafetensorsFile::open(path); });
    // First pass after open: page faults on the (page-cached) mapping included.
    const auto t0 = Clock::now();
    volatile double sink = read_all(file, out);
    const double cold_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double warm_s = best_seconds(3, [&] { sink = read_all(file, out); });
    (void)sink;
    std::printf("%-4s: %zu MiB file, %d tensors, %zu floats out | open %.3f ms | to_f32 first pass %.1f ms "
                "(%.2f GB/s read) | warm %.1f ms (%.2f GB/s read, %.2f GB/s written, %.2fx memcpy time)\n",
                std::string(fedge::dtype_name(dt)).c_str(), mib, tensors, out.size(), open_s * 1e3, cold_s * 1e3,
                bytes / cold_s / 1e9, warm_s * 1e3, bytes / warm_s / 1e9, out.size() * 4 / warm_s / 1e9,
                warm_s / (memcpy_s * (out.size() * 4.0 / bytes)));
    fs::remove(path);
  }
  return 0;
}
