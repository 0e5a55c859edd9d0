// Decode-time products over GGUF's quantized blocks (Q8_0, Q4_0) against the
// model's own f32 kernel, at batch 1 where a product streams each weight once.
// Default: one decoded token's projections of the SmolLM-135M shape (30
// layers of q, k, v, o, gate, up, down; hidden 576, intermediate 1536, 3 of 9
// heads for k and v), every layer its own weights, so a token reads the whole
// model as decoding does; then the tied 49152 x 576 LM head in f32, f16 and the
// quantized types. Each at 1 and 2 threads (the decode pool, sized by
// omp_set_num_threads as in the model), next to this machine's read bandwidth
// measured in the same run at the same thread count (the roofline); rows
// q8_0- and q4_0- repeat the quantized products without software prefetch.
// Usage: bench_quant [in out]   (one [out x in] matrix instead of the model)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "fedge/common/machine.h"
#include "fedge/common/safetensors.h"  // f32 -> f16
#include "fedge/inference/quant.h"
#include "kernels.h"  // inference/src: the f32/f16 decode kernels the model uses

namespace q = fedge::inference::quant;
namespace k = fedge::inference::kernels;

namespace {

template <class Fn>
double best_seconds(Fn fn, int repeats) {
  fn();  // warm-up: page faults, thread start
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// Integer sum over the buffer: integer addition may be reordered, so the
// compiler vectorizes it and the loop is bound by memory, not by add latency.
double read_bandwidth_gbs(const std::vector<std::uint64_t>& buf) {
  volatile std::uint64_t sink = 0;
  const double s = best_seconds(
      [&] {
        std::uint64_t total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
        for (std::size_t i = 0; i < buf.size(); ++i) total += buf[i];
        sink = total;
      },
      10);
  (void)sink;
  return static_cast<double>(buf.size() * sizeof(std::uint64_t)) / s / 1e9;
}

struct Proj {
  int out, in;
};

// One matrix in every format the bench compares.
struct Weights {
  Proj shape;
  std::vector<float> f32;
  std::vector<std::uint16_t> f16;
  std::vector<std::uint8_t> q8, q4;
};

Weights make_weights(Proj shape, std::mt19937& rng, bool with_f16) {
  std::normal_distribution<float> normal(0.0F, 0.05F);
  Weights w{shape, std::vector<float>(static_cast<std::size_t>(shape.out) * shape.in), {}, {}, {}};
  for (auto& v : w.f32) v = normal(rng);
  w.q8.resize(q::row_bytes(q::QuantType::kQ8_0, shape.in) * shape.out);
  w.q4.resize(q::row_bytes(q::QuantType::kQ4_0, shape.in) * shape.out);
  q::quantize_rows(q::QuantType::kQ8_0, w.f32.data(), w.q8.data(), shape.out, shape.in);
  q::quantize_rows(q::QuantType::kQ4_0, w.f32.data(), w.q4.data(), shape.out, shape.in);
  if (with_f16) {
    w.f16.resize(w.f32.size());
    for (std::size_t i = 0; i < w.f32.size(); ++i) w.f16[i] = fedge::f32_to_f16(w.f32[i]);
  }
  return w;
}

enum class Format { kF32, kF16, kQ8, kQ4 };

double megabytes(const Weights& w, Format f) {
  switch (f) {
    case Format::kF32: return static_cast<double>(w.f32.size()) * 4 / 1e6;
    case Format::kF16: return static_cast<double>(w.f16.size()) * 2 / 1e6;
    case Format::kQ8: return static_cast<double>(w.q8.size()) / 1e6;
    default: return static_cast<double>(w.q4.size()) / 1e6;
  }
}

// y = W x the way the model's decode step computes it for this format.
void product(const Weights& w, Format f, const float* x, float* y) {
  const Proj& s = w.shape;
  switch (f) {
    case Format::kF32: k::matvec_f32(w.f32.data(), x, y, 1, s.in, s.out); break;
    case Format::kF16: k::matvec_f16(w.f16.data(), x, y, 1, s.in, s.out); break;
    case Format::kQ8: q::matmul(q::QuantType::kQ8_0, w.q8.data(), x, y, 1, s.in, s.out); break;
    case Format::kQ4: q::matmul(q::QuantType::kQ4_0, w.q4.data(), x, y, 1, s.in, s.out); break;
  }
}

// The model groups q/k/v and gate/up into one parallel region each
// (kernels::matvec_group for f32, quant::matmul_group for the quantized types).
void layer_quant(const std::vector<Weights>& layer, Format f, const float* x, float* y) {
  if (layer.size() != 7) {
    for (const auto& w : layer) product(w, f, x, y);
    return;
  }
  const q::QuantType type = f == Format::kQ8 ? q::QuantType::kQ8_0 : q::QuantType::kQ4_0;
  auto job = [&](int i) {
    const int at = i == 1 || i == 5 ? layer[i - 1].shape.out : i == 2 ? layer[0].shape.out + layer[1].shape.out : 0;
    return q::MatmulJob{(f == Format::kQ8 ? layer[i].q8 : layer[i].q4).data(), y + at, layer[i].shape.out};
  };
  const int hidden = layer[0].shape.in;
  const q::MatmulJob qkv[3] = {job(0), job(1), job(2)};
  q::matmul_group(type, qkv, 3, x, 1, hidden);
  product(layer[3], f, x, y);
  const q::MatmulJob mlp[2] = {job(4), job(5)};
  q::matmul_group(type, mlp, 2, x, 1, hidden);
  product(layer[6], f, x, y);
}

void layer_f32(const std::vector<Weights>& layer, const float* x, float* y) {
  if (layer.size() != 7) {
    for (const auto& w : layer) product(w, Format::kF32, x, y);
    return;
  }
  const int hidden = layer[0].shape.in;
  // Each product its own output range, as in the model.
  const int q_out = layer[0].shape.out, k_out = layer[1].shape.out;
  k::MatvecJob qkv[3] = {{layer[0].f32.data(), k::Dtype::kF32, y, q_out},
                         {layer[1].f32.data(), k::Dtype::kF32, y + q_out, k_out},
                         {layer[2].f32.data(), k::Dtype::kF32, y + q_out + k_out, layer[2].shape.out}};
  k::matvec_group(qkv, 3, x, 1, hidden);
  product(layer[3], Format::kF32, x, y);
  k::MatvecJob mlp[2] = {{layer[4].f32.data(), k::Dtype::kF32, y, layer[4].shape.out},
                         {layer[5].f32.data(), k::Dtype::kF32, y + layer[4].shape.out, layer[5].shape.out}};
  k::matvec_group(mlp, 2, x, 1, hidden);
  product(layer[6], Format::kF32, x, y);
}

struct Row {
  const char* name;
  Format format;
  bool no_prefetch = false;  // the quantized products without their software prefetch
};

void run(const char* title, const std::vector<std::vector<Weights>>& layers, const std::vector<Row>& rows,
         const std::vector<std::uint64_t>& bandwidth_buffer, int repeats) {
  int max_in = 0, max_out = 0;
  for (const auto& layer : layers)
    for (const auto& w : layer) {
      max_in = std::max(max_in, w.shape.in);
      max_out = std::max(max_out, w.shape.out);
    }
  std::vector<float> x(static_cast<std::size_t>(std::max(max_in, max_out)), 0.5F), y(2 * x.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0F, 1.0F);
  for (auto& v : x) v = normal(rng);
  std::printf("\n%s\n", title);
  std::printf("%-7s %-4s %-10s %9s %9s %11s %10s %7s\n", "threads", "fmt", "isa", "MB", "ms", "weight GB/s",
              "of roofln", "vs f32");
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    const double bw = read_bandwidth_gbs(bandwidth_buffer);
    double f32_seconds = 0;
    for (const Row& row : rows) {
      double mb = 0;
      for (const auto& layer : layers)
        for (const auto& w : layer) mb += megabytes(w, row.format);
      const int prefetch = q::prefetch_bytes();
      if (row.no_prefetch) q::set_prefetch_bytes(0);
      const double s = best_seconds(
          [&] {
            for (const auto& layer : layers) {
              if (row.format == Format::kF32) layer_f32(layer, x.data(), y.data());
              else if (row.format == Format::kF16)
                for (const auto& w : layer) product(w, row.format, x.data(), y.data());
              else layer_quant(layer, row.format, x.data(), y.data());
            }
          },
          repeats);
      q::set_prefetch_bytes(prefetch);
      if (row.format == Format::kF32) f32_seconds = s;
      const char* isa = row.format == Format::kQ8 || row.format == Format::kQ4 ? q::isa_name() : k::isa_name();
      std::printf("%-7d %-4s %-10s %9.1f %9.3f %11.1f %9.0f%% %6.2fx\n", threads, row.name, isa, mb, s * 1e3,
                  mb / 1e3 / s, 100 * mb / 1e3 / s / bw, f32_seconds / s);
    }
    std::printf("roofline at %d thread%s: %.1f GB/s (sum over a %.0f MB buffer)\n", threads, threads > 1 ? "s" : "",
                bw, bandwidth_buffer.size() * 8 / 1e6);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("bench_quant: y = W x at batch 1, quant isa %s, f32/f16 kernel isa %s\n", q::isa_name(), k::isa_name());
  std::printf("machine: %s\n", fedge::machine_summary().c_str());
  std::mt19937 rng(1);
  const std::vector<Row> all = {{"f32", Format::kF32},         {"q8_0", Format::kQ8}, {"q4_0", Format::kQ4},
                                {"q8_0-", Format::kQ8, true}, {"q4_0-", Format::kQ4, true}};
  if (argc > 2) {
    const Proj shape{std::atoi(argv[2]), std::atoi(argv[1])};
    std::vector<std::vector<Weights>> one = {{make_weights(shape, rng, true)}};
    std::vector<std::uint64_t> buf(one[0][0].f32.size() / 2, 1);
    std::vector<Row> rows = all;
    rows.push_back({"f16", Format::kF16});
    run("one matrix", one, rows, buf, 20);
    return 0;
  }
  constexpr int kLayers = 30, kHidden = 576, kKv = 192, kInter = 1536, kVocab = 49152;
  std::vector<std::vector<Weights>> model;
  for (int l = 0; l < kLayers; ++l)
    model.push_back({make_weights({kHidden, kHidden}, rng, false), make_weights({kKv, kHidden}, rng, false),
                     make_weights({kKv, kHidden}, rng, false), make_weights({kHidden, kHidden}, rng, false),
                     make_weights({kInter, kHidden}, rng, false), make_weights({kInter, kHidden}, rng, false),
                     make_weights({kHidden, kInter}, rng, false)});
  std::size_t floats = 0;
  for (const auto& layer : model)
    for (const auto& w : layer) floats += w.f32.size();
  // The roofline buffer is as large as the f32 weights: no cache helps either.
  std::vector<std::uint64_t> buf(floats / 2, 1);
  run("SmolLM-135M shape, one decoded token: 30 layers x (q, k, v, o, gate, up, down), 106M weights", model, all, buf,
      10);
  std::vector<std::vector<Weights>> head = {{make_weights({kVocab, kHidden}, rng, true)}};
  std::vector<Row> head_rows = all;
  head_rows.push_back({"f16", Format::kF16});
  run("LM head (tied embedding) 49152 x 576", head, head_rows, std::vector<std::uint64_t>(head[0][0].f32.size() / 2, 1),
      10);
  std::printf("\nq8_0- and q4_0-: the same products without their software prefetch (%d bytes ahead)\n",
              q::prefetch_bytes());
  std::printf("reading: at batch 1 a product is memory-bound when it reaches the roofline; Q8_0 reads 1.06 bytes\n"
              "and Q4_0 0.56 bytes per weight against f32's 4, so their time can fall by up to 3.8x and 7.1x;\n"
              "below the roofline the kernel is compute-bound (unpacking, the per-block sums) or waits on threads\n");
  return 0;
}
