// Decode-time products over GGUF's quantized blocks (Q8_0, Q4_0, Q5_0 and the
// k-quants Q4_K, Q6_K) against the model's own f32 kernel, at batch 1 where a
// product streams each weight once.
// Default: one decoded token's projections of the SmolLM-135M shape (30
// layers of q, k, v, o, gate, up, down; hidden 576, intermediate 1536, 3 of 9
// heads for k and v), every layer its own weights, so a token reads the whole
// model as decoding does, in the 32-weight block types; then the 30 down
// projections (576 x 1536) alone, the only products of this shape whose
// input (1536) is a whole number of the k-quants' 256-weight super-blocks, in
// every type; then the tied 49152 x 576 LM head in f32, f16 and the 32-weight
// block types. Each at 1 and 2 threads (the decode pool, sized by
// omp_set_num_threads as in the model), next to this machine's read bandwidth
// measured in the same run at the same thread count (the roofline); rows
// q8_0- and q4_0- repeat the quantized products without software prefetch.
// Usage: bench_quant [in out]   (one [out x in] matrix instead of the model;
//                                the k-quants too when in is a multiple of 256)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
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

enum class Format { kF32, kF16, kQ8, kQ4, kQ5, kQ4K, kQ6K };
constexpr int kQuantFormats = 5;  // kQ8 .. kQ6K

bool is_quant(Format f) { return f != Format::kF32 && f != Format::kF16; }
q::QuantType quant_type(Format f) {
  switch (f) {
    case Format::kQ8: return q::QuantType::kQ8_0;
    case Format::kQ4: return q::QuantType::kQ4_0;
    case Format::kQ5: return q::QuantType::kQ5_0;
    case Format::kQ4K: return q::QuantType::kQ4_K;
    default: return q::QuantType::kQ6_K;
  }
}
int quant_index(Format f) { return static_cast<int>(f) - static_cast<int>(Format::kQ8); }

// The instruction set a quantized format's integer sums run on (every type
// has an AVX-512 path now).
const char* kernel_isa(Format) { return q::isa_name(); }

// One matrix in every format the bench compares (the k-quants only when
// asked for: their quantizers search for scales, and `in` must be a multiple
// of 256).
struct Weights {
  Proj shape;
  std::vector<float> f32;
  std::vector<std::uint16_t> f16;
  std::vector<std::uint8_t> quant[kQuantFormats];  // by quant_index; empty when not made

  const std::vector<std::uint8_t>& packed(Format f) const { return quant[quant_index(f)]; }
};

Weights make_weights(Proj shape, std::mt19937& rng, bool with_f16, bool with_k_quants = false) {
  std::normal_distribution<float> normal(0.0F, 0.05F);
  Weights w{shape, std::vector<float>(static_cast<std::size_t>(shape.out) * shape.in), {}, {}};
  for (auto& v : w.f32) v = normal(rng);
  for (Format f : {Format::kQ8, Format::kQ4, Format::kQ5, Format::kQ4K, Format::kQ6K}) {
    if ((f == Format::kQ4K || f == Format::kQ6K) && !with_k_quants) continue;
    std::vector<std::uint8_t>& packed = w.quant[quant_index(f)];
    packed.resize(q::row_bytes(quant_type(f), shape.in) * shape.out);
    q::quantize_rows(quant_type(f), w.f32.data(), packed.data(), shape.out, shape.in);
  }
  if (with_f16) {
    w.f16.resize(w.f32.size());
    for (std::size_t i = 0; i < w.f32.size(); ++i) w.f16[i] = fedge::f32_to_f16(w.f32[i]);
  }
  return w;
}

double megabytes(const Weights& w, Format f) {
  switch (f) {
    case Format::kF32: return static_cast<double>(w.f32.size()) * 4 / 1e6;
    case Format::kF16: return static_cast<double>(w.f16.size()) * 2 / 1e6;
    default: return static_cast<double>(w.packed(f).size()) / 1e6;
  }
}

// y = W x the way the model's decode step computes it for this format.
void product(const Weights& w, Format f, const float* x, float* y) {
  const Proj& s = w.shape;
  switch (f) {
    case Format::kF32: k::matvec_f32(w.f32.data(), x, y, 1, s.in, s.out); break;
    case Format::kF16: k::matvec_f16(w.f16.data(), x, y, 1, s.in, s.out); break;
    default: q::matmul(quant_type(f), w.packed(f).data(), x, y, 1, s.in, s.out); break;
  }
}

// The model groups q/k/v and gate/up into one parallel region each
// (kernels::matvec_group for f32, quant::matmul_group for the quantized types).
void layer_quant(const std::vector<Weights>& layer, Format f, const float* x, float* y) {
  if (layer.size() != 7) {
    for (const auto& w : layer) product(w, f, x, y);
    return;
  }
  const q::QuantType type = quant_type(f);
  auto job = [&](int i) {
    const int at = i == 1 || i == 5 ? layer[i - 1].shape.out : i == 2 ? layer[0].shape.out + layer[1].shape.out : 0;
    return q::MatmulJob{layer[i].packed(f).data(), y + at, layer[i].shape.out};
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
      const char* isa = is_quant(row.format) ? kernel_isa(row.format) : k::isa_name();
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
  // The 32-weight block types fit every shape; the k-quants need in % 256 == 0.
  const std::vector<Row> all = {{"f32", Format::kF32},         {"q8_0", Format::kQ8},        {"q4_0", Format::kQ4},
                                {"q5_0", Format::kQ5},         {"q8_0-", Format::kQ8, true}, {"q4_0-", Format::kQ4, true}};
  const std::vector<Row> k_quants = {{"q4_k", Format::kQ4K}, {"q6_k", Format::kQ6K}};
  if (argc > 2) {
    const Proj shape{std::atoi(argv[2]), std::atoi(argv[1])};
    const bool fits_k = shape.in % q::kSuperBlockSize == 0;
    std::vector<std::vector<Weights>> one = {{make_weights(shape, rng, true, fits_k)}};
    std::vector<std::uint64_t> buf(one[0][0].f32.size() / 2, 1);
    std::vector<Row> rows = all;
    if (fits_k) rows.insert(rows.end(), k_quants.begin(), k_quants.end());
    rows.push_back({"f16", Format::kF16});
    run("one matrix", one, rows, buf, 20);
    if (!fits_k) std::printf("\nq4_k and q6_k: not run, in = %d is not a multiple of 256\n", shape.in);
    return 0;
  }
  constexpr int kLayers = 30, kHidden = 576, kKv = 192, kInter = 1536, kVocab = 49152;
  std::vector<std::vector<Weights>> model;
  for (int l = 0; l < kLayers; ++l)
    model.push_back({make_weights({kHidden, kHidden}, rng, false), make_weights({kKv, kHidden}, rng, false),
                     make_weights({kKv, kHidden}, rng, false), make_weights({kHidden, kHidden}, rng, false),
                     make_weights({kInter, kHidden}, rng, false), make_weights({kInter, kHidden}, rng, false),
                     make_weights({kHidden, kInter}, rng, false, true)});
  std::size_t floats = 0;
  for (const auto& layer : model)
    for (const auto& w : layer) floats += w.f32.size();
  // The roofline buffer is as large as the f32 weights: no cache helps either.
  std::vector<std::uint64_t> buf(floats / 2, 1);
  run("SmolLM-135M shape, one decoded token: 30 layers x (q, k, v, o, gate, up, down), 106M weights", model, all, buf,
      10);
  // The same 30 down projections alone, every type (the k-quants included);
  // the model is not used after this.
  std::vector<std::vector<Weights>> down;
  for (auto& layer : model) {
    down.push_back({});
    down.back().push_back(std::move(layer[6]));
  }
  std::vector<Row> down_rows(all.begin(), all.begin() + 4);  // f32, q8_0, q4_0, q5_0
  down_rows.insert(down_rows.end(), k_quants.begin(), k_quants.end());
  std::size_t down_floats = 0;
  for (const auto& layer : down) down_floats += layer[0].f32.size();
  run("SmolLM-135M down projections only (in = 1536 = 6 super-blocks): 30 layers x (576 x 1536), 26.5M weights", down,
      down_rows, std::vector<std::uint64_t>(down_floats / 2, 1), 10);
  std::vector<std::vector<Weights>> head = {{make_weights({kVocab, kHidden}, rng, true)}};
  std::vector<Row> head_rows = all;
  head_rows.push_back({"f16", Format::kF16});
  run("LM head (tied embedding) 49152 x 576", head, head_rows, std::vector<std::uint64_t>(head[0][0].f32.size() / 2, 1),
      10);
  std::printf("\nq8_0- and q4_0-: the same products without their software prefetch (%d bytes ahead)\n",
              q::prefetch_bytes());
  std::printf("q4_k and q6_k run on the down projections only: the model's other products have in = 576, not a\n"
              "multiple of the k-quants' 256-weight super-block (GGUF files of this model give them another type);\n"
              "their quantized matrices (15-28 MB) may stay in a large L3 between repeats: over 100%% of the\n"
              "roofline means some weights came from cache\n");
  std::printf("isa: the path a type's integer sums run on (every type has its own AVX-512 path)\n");
  std::printf("reading: at batch 1 a product is memory-bound when it reaches the roofline; Q8_0 reads 1.06 bytes,\n"
              "Q6_K 0.82, Q5_0 0.69, Q4_0 and Q4_K 0.56 bytes per weight against f32's 4, so their time can fall\n"
              "by up to 3.8x, 4.9x, 5.8x and 7.1x; below the roofline the kernel is compute-bound (unpacking,\n"
              "the per-block sums) or waits on threads\n");
  return 0;
}
