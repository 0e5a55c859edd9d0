// Every kernel path this CPU runs (AVX-512, AVX2 and the portable path on x86;
// NEON and the portable path on aarch64) against each other on random inputs
// of every weight type: f32, bf16 and f16 products within the bound that
// kernels.h states, Q8_0/Q4_0 products bit for bit. The paths are reached
// through set_isa, so the kernels under test are the ones the model runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../inference/src/kernels.h"  // internal to inference/, not installed
#include "fedge/common/cpu_features.h"     // portable_build
#include "fedge/common/safetensors.h"      // f32 <-> f16 / bf16
#include "fedge/inference/kernels_info.h"
#include "fedge/inference/quant.h"
#include "kernel_test_support.h"

using namespace fedge;
using fedge::test::IsaGuard;
using fedge::test::random_row;
namespace kernels = fedge::inference::kernels;
namespace quant = fedge::inference::quant;

namespace {

// The weights of one type (as raw halves for bf16/f16) and their f32 values.
struct Weights {
  kernels::Dtype dtype;
  std::vector<float> f32;         // the values every path multiplies
  std::vector<std::uint16_t> half;  // bf16 or f16 bits
  const void* data() const { return dtype == kernels::Dtype::kF32 ? static_cast<const void*>(f32.data()) : half.data(); }
};

Weights make_weights(kernels::Dtype dtype, std::size_t n, unsigned seed) {
  Weights w{dtype, random_row(n, seed, 0.1F), {}};
  if (dtype == kernels::Dtype::kF32) return w;
  w.half.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    w.half[i] = dtype == kernels::Dtype::kBF16 ? f32_to_bf16(w.f32[i]) : f32_to_f16(w.f32[i]);
    w.f32[i] = dtype == kernels::Dtype::kBF16 ? bf16_to_f32(w.half[i]) : f16_to_f32(w.half[i]);
  }
  return w;
}

const char* dtype_name(kernels::Dtype d) {
  return d == kernels::Dtype::kF32 ? "f32" : d == kernels::Dtype::kBF16 ? "bf16" : "f16";
}

// kernels.h's bound between two paths for a dot of n terms of magnitude sum
// `mag`: n * 2^-23 * mag, plus 2^-15 * mag when one of them is AVX512-BF16.
double path_bound(int n, double mag, const std::string& isa) {
  return n * std::ldexp(1.0, -23) * mag + (isa == "avx512bf16" ? std::ldexp(1.0, -15) * mag : 0.0) + 1e-30;
}

}  // namespace

TEST_CASE("kernels: the paths this CPU runs are listed fastest first, end in portable, and can each be forced") {
  IsaGuard restore;
  const std::vector<std::string> paths = kernels::available_isas();
  REQUIRE_FALSE(paths.empty());
  CHECK(paths.back() == "portable");
  CHECK(paths == inference::available_kernel_isas());
  for (const std::string& p : paths) {
    REQUIRE(kernels::set_isa(p.c_str()));
    CHECK(kernels::isa_name() == p);
  }
  CHECK(kernels::set_isa("scalar"));  // the portable path's older name
  CHECK(std::string(kernels::isa_name()) == "portable");
  CHECK_FALSE(kernels::set_isa("sse9"));
  const std::vector<std::string> qpaths = quant::available_isas();
  REQUIRE_FALSE(qpaths.empty());
  CHECK(qpaths.back() == "portable");
  for (const std::string& p : qpaths) {
    REQUIRE(quant::set_isa(p.c_str()));
    CHECK(quant::isa_name() == p);
  }
#if defined(__aarch64__)
  CHECK(paths.front() == "neon");
  CHECK(qpaths.front() == "neon");
#else
  CHECK_FALSE(kernels::set_isa("neon"));
  CHECK_FALSE(quant::set_isa("neon"));
#endif
  kernels::set_isa("auto");
  quant::set_isa("auto");
  if (portable_build()) {  // a FEDGE_PORTABLE build starts on the portable paths
    CHECK(std::string(kernels::isa_name()) == "portable");
    CHECK(std::string(quant::isa_name()) == "portable");
  } else {
    CHECK(kernels::isa_name() == paths.front());
    CHECK(quant::isa_name() == qpaths.front());
  }
}

TEST_CASE("kernels: f32, bf16 and f16 products agree on every path within the stated bound") {
  IsaGuard restore;
  const std::vector<std::string> paths = kernels::available_isas();
  if (paths.size() == 1) WARN("only the portable kernel path runs on this CPU: nothing to compare it with");
  struct Shape {
    int rows, in, out;
  };
  // 576: the 135M model's width; 1000 and 77 leave tails after every vector
  // width; 3 is shorter than any vector; up to 5 rows crosses the 4-row blocks.
  for (const Shape shape : {Shape{1, 576, 64}, Shape{5, 1000, 33}, Shape{2, 77, 19}, Shape{4, 3, 7}, Shape{3, 64, 40}}) {
    const auto x = random_row(std::size_t(shape.rows) * shape.in, 7, 1.0F);
    for (kernels::Dtype dtype : {kernels::Dtype::kF32, kernels::Dtype::kBF16, kernels::Dtype::kF16}) {
      const Weights w = make_weights(dtype, std::size_t(shape.out) * shape.in, 8);
      std::vector<double> mag(std::size_t(shape.rows) * shape.out, 0.0);
      for (int r = 0; r < shape.rows; ++r)
        for (int j = 0; j < shape.out; ++j)
          for (int i = 0; i < shape.in; ++i)
            mag[std::size_t(r) * shape.out + j] +=
                std::fabs(double(w.f32[std::size_t(j) * shape.in + i]) * x[std::size_t(r) * shape.in + i]);
      REQUIRE(kernels::set_isa("portable"));
      std::vector<float> want(mag.size(), NAN);
      kernels::MatvecJob job{w.data(), dtype, want.data(), shape.out};
      kernels::matvec_group(&job, 1, x.data(), shape.rows, shape.in);
      for (const std::string& isa : paths) {
        REQUIRE(kernels::set_isa(isa.c_str()));
        std::vector<float> got(mag.size(), NAN);
        kernels::MatvecJob path_job{w.data(), dtype, got.data(), shape.out};
        kernels::matvec_group(&path_job, 1, x.data(), shape.rows, shape.in);
        for (std::size_t k = 0; k < got.size(); ++k) {
          INFO(dtype_name(dtype) << " on " << isa << ": " << shape.rows << " x " << shape.in << " -> " << shape.out
                                 << ", output " << k);
          REQUIRE(std::fabs(double(got[k]) - want[k]) <= path_bound(shape.in, mag[k], isa));
        }
      }
    }
  }
}

TEST_CASE("kernels: dot and axpy agree on every path within the stated bound") {
  IsaGuard restore;
  for (const int n : {1, 15, 64, 1001}) {
    const auto a = random_row(n, 9, 1.0F), b = random_row(n, 10, 1.0F);
    double mag = 0;
    for (int i = 0; i < n; ++i) mag += std::fabs(double(a[i]) * b[i]);
    REQUIRE(kernels::set_isa("portable"));
    const float want_dot = kernels::dot(a.data(), b.data(), n);
    std::vector<float> want_y = b;
    kernels::axpy(0.75F, a.data(), want_y.data(), n);
    for (const std::string& isa : kernels::available_isas()) {
      REQUIRE(kernels::set_isa(isa.c_str()));
      INFO(isa << ", n " << n);
      CHECK(std::fabs(double(kernels::dot(a.data(), b.data(), n)) - want_dot) <= path_bound(n, mag, isa));
      std::vector<float> y = b;
      kernels::axpy(0.75F, a.data(), y.data(), n);
      // One multiply and add per element, fused or not: two roundings apart at most.
      for (int i = 0; i < n; ++i)
        REQUIRE(std::fabs(y[i] - want_y[i]) <= std::ldexp(1.0, -22) * (std::fabs(0.75 * a[i]) + std::fabs(b[i])));
    }
  }
}

TEST_CASE("kernels: Q8_0 and Q4_0 products and groups give the portable path's bits on every path") {
  IsaGuard restore;
  const std::vector<std::string> paths = quant::available_isas();
  if (paths.size() == 1) WARN("only the portable quantized path runs on this CPU: nothing to compare it with");
  struct Shape {
    int rows, in, out;
  };
  for (const Shape shape : {Shape{1, 576, 70}, Shape{4, 1536, 21}, Shape{2, 32, 5}, Shape{3, 96, 33}}) {
    const auto x = random_row(std::size_t(shape.rows) * shape.in, 11, 2.0F);
    for (quant::QuantType type : {quant::QuantType::kQ8_0, quant::QuantType::kQ4_0}) {
      // Two products over the same x, as q/k or gate/up are.
      const auto w1 = random_row(std::size_t(shape.out) * shape.in, 12, 0.05F);
      const auto w2 = random_row(std::size_t(shape.out + 3) * shape.in, 13, 0.05F);
      std::vector<std::uint8_t> p1(quant::row_bytes(type, shape.in) * shape.out),
          p2(quant::row_bytes(type, shape.in) * (shape.out + 3));
      quant::quantize_rows(type, w1.data(), p1.data(), shape.out, shape.in);
      quant::quantize_rows(type, w2.data(), p2.data(), shape.out + 3, shape.in);
      auto run = [&](std::vector<float>& y1, std::vector<float>& y2) {
        y1.assign(std::size_t(shape.rows) * shape.out, NAN);
        y2.assign(std::size_t(shape.rows) * (shape.out + 3), NAN);
        const quant::MatmulJob jobs[] = {{p1.data(), y1.data(), shape.out}, {p2.data(), y2.data(), shape.out + 3}};
        quant::matmul_group(type, jobs, 2, x.data(), shape.rows, shape.in);
      };
      REQUIRE(quant::set_isa("portable"));
      std::vector<float> want1, want2;
      run(want1, want2);
      for (const std::string& isa : paths) {
        REQUIRE(quant::set_isa(isa.c_str()));
        INFO(quant::quant_type_name(type) << " on " << isa << ": " << shape.rows << " x " << shape.in << " -> "
                                          << shape.out);
        std::vector<float> got1, got2;
        run(got1, got2);
        CHECK(std::memcmp(got1.data(), want1.data(), got1.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(got2.data(), want2.data(), got2.size() * sizeof(float)) == 0);
      }
    }
  }
}

// Agreement within a bound cannot tell a vector path from the portable one
// running in its place (an AVX-512 path once fell through to the portable
// rows and overwrote its own results, and every test above still passed).
// Here the order of the adds decides the answer: 2^24, then 62 ones, then
// -2^24. Left to right in f32 every one is lost against 2^24 (0); a path
// that keeps partial sums in SIMD lanes loses at most the ones in the lane
// that holds 2^24, so each vector path must come out nearer the exact 62.
TEST_CASE("kernels: each vector path computes its own sums rather than the portable path's") {
  IsaGuard restore;
  constexpr int kIn = 64;
  std::vector<float> x(kIn, 1.0F);
  x.front() = 16777216.0F;
  x.back() = -16777216.0F;
  for (kernels::Dtype dtype : {kernels::Dtype::kF32, kernels::Dtype::kBF16, kernels::Dtype::kF16}) {
    Weights w{dtype, std::vector<float>(kIn, 1.0F), {}};
    if (dtype != kernels::Dtype::kF32)
      w.half.assign(kIn, dtype == kernels::Dtype::kBF16 ? f32_to_bf16(1.0F) : f32_to_f16(1.0F));
    auto product = [&](const std::string& isa) {
      REQUIRE(kernels::set_isa(isa.c_str()));
      float y = NAN;
      kernels::MatvecJob job{w.data(), dtype, &y, 1};
      kernels::matvec_group(&job, 1, x.data(), 1, kIn);
      return y;
    };
    const float portable = product("portable");
    INFO(dtype_name(dtype));
    CHECK(portable == 0.0F);  // the portable path adds left to right
    for (const std::string& isa : kernels::available_isas()) {
      if (isa == "portable") continue;
      const float got = product(isa);
      INFO(isa << " gave " << got);
      CHECK(std::fabs(got - 62.0F) < std::fabs(portable - 62.0F));
    }
  }
}
