// The decode kernels' f16 weights (a GGUF F16 tensor, an embedding or LM head
// kept in f16): every instruction set against a double reference over the
// exact f16 values, subnormal and extreme halves included, and jobs of mixed
// dtypes in one group giving each product's own bits.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../inference/src/kernels.h"  // internal to inference/, not installed
#include "fedge/common/safetensors.h"      // f16 / bf16 <-> f32
#include "fedge/inference/quant.h"
#include "kernel_test_support.h"

using namespace fedge;
namespace kernels = fedge::inference::kernels;
using fedge::test::IsaGuard;

namespace {

// Random halves spread over the f16 range: normal weights, plus subnormals,
// +-0 and the largest finite values at fixed places.
std::vector<std::uint16_t> random_halves(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0F, 0.1F);
  std::vector<std::uint16_t> h(n);
  for (auto& v : h) v = f32_to_f16(normal(rng));
  const std::uint16_t special[] = {0x0001, 0x83FF, 0x8000, 0x0000, 0x7BFF, 0xFBFF, 0x3C00, 0x0400};
  for (std::size_t i = 0; i < n; i += 37) h[i] = special[(i / 37) % 8];
  return h;
}

}  // namespace

TEST_CASE("kernels: f16 matvec matches a double reference on every instruction set") {
  IsaGuard guard;
  // 576 (the 135M model's hidden size), a length with a tail after 16- and
  // 8-wide steps, and one shorter than a vector.
  for (const int in : {576, 77, 5}) {
    const int out = 70, rows = 5;
    const auto w = random_halves(static_cast<std::size_t>(in) * out, 1);
    std::mt19937 rng(2);
    std::normal_distribution<float> normal(0.0F, 1.0F);
    std::vector<float> x(static_cast<std::size_t>(rows) * in);
    for (auto& v : x) v = normal(rng);
    for (const std::string& isa : kernels::available_isas()) {
      REQUIRE(kernels::set_isa(isa.c_str()));
      for (int r = 1; r <= rows; ++r) {
        INFO(isa << ", in " << in << ", rows " << r);
        std::vector<float> y(static_cast<std::size_t>(r) * out, NAN);
        kernels::matvec_f16(w.data(), x.data(), y.data(), r, in, out);
        for (int b = 0; b < r; ++b)
          for (int j = 0; j < out; ++j) {
            double ref = 0, mag = 0;
            for (int i = 0; i < in; ++i) {
              const double p = static_cast<double>(f16_to_f32(w[std::size_t(j) * in + i])) * x[std::size_t(b) * in + i];
              ref += p;
              mag += std::fabs(p);
            }
            // f32 accumulation over `in` terms: a few ulps of the magnitude.
            CHECK(std::fabs(y[std::size_t(b) * out + j] - ref) <= 1e-6 * in * mag + 1e-30);
          }
      }
    }
  }
}

TEST_CASE("kernels: a group of f32, bf16 and f16 jobs gives each product's own bits, and {w, bool, y, out} still means bf16 or f32") {
  const int in = 576, out = 40, rows = 2;
  const auto h = random_halves(static_cast<std::size_t>(in) * out, 3);
  std::vector<float> f(h.size());
  std::vector<std::uint16_t> b(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    f[i] = f16_to_f32(h[i]) * 0.5F;
    b[i] = f32_to_bf16(f[i] * 3.0F);
  }
  std::vector<float> x(static_cast<std::size_t>(rows) * in);
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0F, 1.0F);
  for (auto& v : x) v = normal(rng);

  std::vector<float> alone_f(rows * out), alone_b(rows * out), alone_h(rows * out);
  kernels::matvec_f32(f.data(), x.data(), alone_f.data(), rows, in, out);
  kernels::matvec_bf16(b.data(), x.data(), alone_b.data(), rows, in, out);
  kernels::matvec_f16(h.data(), x.data(), alone_h.data(), rows, in, out);

  std::vector<float> group_f(rows * out), group_b(rows * out), group_h(rows * out);
  const kernels::MatvecJob jobs[3] = {{f.data(), kernels::Dtype::kF32, group_f.data(), out},
                                      {b.data(), true, group_b.data(), out},  // the older bool form
                                      {h.data(), kernels::Dtype::kF16, group_h.data(), out}};
  CHECK(jobs[1].dtype == kernels::Dtype::kBF16);
  CHECK(kernels::MatvecJob(f.data(), false, nullptr, 1).dtype == kernels::Dtype::kF32);
  kernels::matvec_group(jobs, 3, x.data(), rows, in);
  CHECK(std::memcmp(group_f.data(), alone_f.data(), group_f.size() * 4) == 0);
  CHECK(std::memcmp(group_b.data(), alone_b.data(), group_b.size() * 4) == 0);
  CHECK(std::memcmp(group_h.data(), alone_h.data(), group_h.size() * 4) == 0);
  // The f16 weights are half the f32 ones: the same product, halved, up to rounding.
  for (std::size_t i = 0; i < alone_h.size(); ++i) CHECK(alone_h[i] == Approx(2 * alone_f[i]).margin(1e-4));
}

TEST_CASE("kernels: quantized products give the same bits on the decode pool and on OpenMP") {
  const int in = 576, out = 1536, rows = 3;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0F, 0.05F);
  std::vector<float> w(static_cast<std::size_t>(in) * out), x(static_cast<std::size_t>(rows) * in);
  for (auto& v : w) v = normal(rng);
  for (auto& v : x) v = normal(rng) * 20;
  namespace quant = fedge::inference::quant;
  for (quant::QuantType type : {quant::QuantType::kQ8_0, quant::QuantType::kQ4_0}) {
    std::vector<std::uint8_t> packed(quant::row_bytes(type, in) * out);
    quant::quantize_rows(type, w.data(), packed.data(), out, in);
    std::vector<float> pool(static_cast<std::size_t>(rows) * out), openmp(pool.size());
    quant::matmul(type, packed.data(), x.data(), pool.data(), rows, in, out);  // the pool kernels.cpp installed
    quant::set_parallel_for(nullptr);
    quant::matmul(type, packed.data(), x.data(), openmp.data(), rows, in, out);
    quant::set_parallel_for(&kernels::parallel_for);
    INFO(quant::quant_type_name(type));
    CHECK(std::memcmp(pool.data(), openmp.data(), pool.size() * sizeof(float)) == 0);
  }
}
