// GGUF's k-quants Q4_K and Q6_K on every instruction-set path: the row dots
// (vec_dot_*_q8_0) and the products (matmul) give the portable path's bits
// under AVX2, AVX-512 (which runs the AVX2 unit sums) and NEON, for random
// super-blocks, for extreme ones at the edge of the SIMD paths' int16
// intermediates, and all of them agree with the dequantized rows' dot in
// double precision.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "fedge/common/safetensors.h"  // f32 -> f16
#include "fedge/inference/quant.h"
#include "kernel_test_support.h"

using namespace fedge::inference::quant;
using fedge::test::IsaGuard;
using fedge::test::random_row;
using fedge::test::same_bits;

namespace {

// The SIMD paths compared with "portable"; those this CPU lacks are skipped.
const char* const kFastPaths[] = {"avx2", "avx512", "neon"};

// What a test needs of each k-quant type.
template <class Block>
struct KQuant;
template <>
struct KQuant<BlockQ4_K> {
  static constexpr QuantType kType = QuantType::kQ4_K;
  static float dot(std::int64_t n, const BlockQ4_K* w, const BlockQ8_0* a) { return vec_dot_q4_k_q8_0(n, w, a); }
  static void dequantize(const BlockQ4_K* w, float* y, std::int64_t n) { dequantize_row_q4_k(w, y, n); }
};
template <>
struct KQuant<BlockQ6_K> {
  static constexpr QuantType kType = QuantType::kQ6_K;
  static float dot(std::int64_t n, const BlockQ6_K* w, const BlockQ8_0* a) { return vec_dot_q6_k_q8_0(n, w, a); }
  static void dequantize(const BlockQ6_K* w, float* y, std::int64_t n) { dequantize_row_q6_k(w, y, n); }
};

// Super-blocks of random bytes (every nibble, 6-bit value, packed scale and
// min, int8 scale -128 included) under small finite f16 scales of both signs.
template <class Block>
std::vector<Block> random_supers(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> scale(-0.02F, 0.02F);
  std::vector<Block> blocks(count);
  for (auto& b : blocks) {
    auto* bytes = reinterpret_cast<std::uint8_t*>(&b);
    for (std::size_t i = 0; i < sizeof b; ++i) bytes[i] = static_cast<std::uint8_t>(rng());
    b.d = fedge::f32_to_f16(scale(rng));
    if constexpr (std::is_same_v<Block, BlockQ4_K>) b.dmin = fedge::f32_to_f16(scale(rng));
  }
  return blocks;
}

std::vector<BlockQ8_0> quantized(const std::vector<float>& x) {
  std::vector<BlockQ8_0> a(x.size() / kBlockSize);
  quantize_row_q8_0(x.data(), a.data(), static_cast<std::int64_t>(x.size()));
  return a;
}

// Activation blocks whose bytes all equal `byte` (-128 too: no quantizer
// writes it, but the k-quant paths are exact for the whole byte range).
std::vector<BlockQ8_0> constant_activations(std::size_t blocks, std::int8_t byte) {
  std::vector<BlockQ8_0> a(blocks);
  for (auto& b : a) {
    b.d = fedge::f32_to_f16(0.03F);
    std::memset(b.qs, static_cast<unsigned char>(byte), sizeof b.qs);
  }
  return a;
}


// sum_i w_i a_i over the dequantized rows in double, and sum_i |w_i a_i|.
template <class Block>
void reference_dot(std::int64_t n, const Block* w, const BlockQ8_0* a, double& dot, double& magnitude) {
  std::vector<float> dw(static_cast<std::size_t>(n)), da(static_cast<std::size_t>(n));
  KQuant<Block>::dequantize(w, dw.data(), n);
  dequantize_row_q8_0(a, da.data(), n);
  dot = magnitude = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double term = static_cast<double>(dw[i]) * da[i];
    dot += term;
    magnitude += std::fabs(term);
  }
}

// The row dot of the first `supers` super-blocks on every path: the portable
// answer, then each SIMD path's bits against it, and the double reference.
template <class Block>
void check_row_dot(const std::vector<Block>& w, const std::vector<BlockQ8_0>& a, std::int64_t supers,
                   const std::string& what) {
  const std::int64_t n = supers * kSuperBlockSize;
  REQUIRE(set_isa("portable"));
  const float want = KQuant<Block>::dot(n, w.data(), a.data());
  double ref = 0, magnitude = 0;
  reference_dot(n, w.data(), a.data(), ref, magnitude);
  INFO(quant_type_name(KQuant<Block>::kType) << ", " << what << ", " << supers << " super-blocks: portable " << want
                                             << ", double reference " << ref);
  CHECK(std::fabs(static_cast<double>(want) - ref) <= 1e-4 * magnitude);
  for (const char* path : kFastPaths) {
    if (!set_isa(path)) continue;
    INFO("instruction set " << path);
    CHECK(same_bits(KQuant<Block>::dot(n, w.data(), a.data()), want));
  }
}

// matmul of `rows` activation rows against an [out, supers * 256] matrix:
// every path gives the portable bits, and each output is the row dot of its
// weight row with its activation row quantized by quantize_row_q8_0.
template <class Block>
void check_matmul(const std::vector<Block>& w, const std::vector<float>& x, int rows, int supers, int out,
                  const std::string& what) {
  const int in = supers * kSuperBlockSize;
  REQUIRE(w.size() >= static_cast<std::size_t>(out) * supers);
  REQUIRE(x.size() >= static_cast<std::size_t>(rows) * in);
  constexpr QuantType type = KQuant<Block>::kType;
  INFO(quant_type_name(type) << ", " << what << ": " << rows << " x " << in << " -> " << out);
  REQUIRE(set_isa("portable"));
  std::vector<float> want(static_cast<std::size_t>(rows) * out), got(want.size());
  matmul(type, w.data(), x.data(), want.data(), rows, in, out);
  for (int r = 0; r < rows; ++r) {
    const std::vector<BlockQ8_0> a =
        quantized(std::vector<float>(x.begin() + static_cast<std::ptrdiff_t>(r) * in,
                                     x.begin() + static_cast<std::ptrdiff_t>(r + 1) * in));
    for (int j = 0; j < out; ++j) {
      INFO("row " << r << ", output " << j);
      CHECK(same_bits(want[static_cast<std::size_t>(r) * out + j],
                      KQuant<Block>::dot(in, w.data() + static_cast<std::size_t>(j) * supers, a.data())));
    }
  }
  for (const char* path : kFastPaths) {
    if (!set_isa(path)) continue;
    INFO("instruction set " << path);
    matmul(type, w.data(), x.data(), got.data(), rows, in, out);
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
  }
}

template <class Block>
void check_random(unsigned seed) {
  constexpr int kMaxSupers = 9;
  const auto w = random_supers<Block>(37 * kMaxSupers, seed);
  const auto a = quantized(random_row(kMaxSupers * kSuperBlockSize, seed + 1));
  for (int s = 1; s <= kMaxSupers; ++s) check_row_dot(w, a, s, "random blocks");
  const auto x = random_row(3 * kMaxSupers * kSuperBlockSize, seed + 2);
  for (int s = 1; s <= kMaxSupers; ++s) check_matmul(w, x, 2, s, 5, "random blocks");
  check_matmul(w, x, 3, 6, 37, "random blocks, threads");  // large enough to run in parallel
}

}  // namespace

TEST_CASE("quant k-quants: Q4_K and Q6_K give the portable bits on every instruction set for 1 to 9 super-blocks",
          "[quant]") {
  IsaGuard guard;
  check_random<BlockQ4_K>(101);
  check_random<BlockQ6_K>(202);
}

TEST_CASE("quant k-quants: extreme Q4_K blocks at the int16 edge give the same bits on every instruction set",
          "[quant]") {
  IsaGuard guard;
  constexpr int kSupers = 3;
  for (const std::uint8_t nibbles : {std::uint8_t{0xFF}, std::uint8_t{0x00}, std::uint8_t{0xF0}}) {
    // Scale and min bytes all 0xFF: every sub-block's 6-bit scale and min is 63.
    for (const std::uint8_t packed : {std::uint8_t{0xFF}, std::uint8_t{0x00}}) {
      std::vector<BlockQ4_K> w(kSupers * kSupers);  // matmul: kSupers rows of kSupers
      for (auto& b : w) {
        b.d = fedge::f32_to_f16(0.01F);
        b.dmin = fedge::f32_to_f16(0.005F);
        std::memset(b.scales, packed, sizeof b.scales);
        std::memset(b.qs, nibbles, sizeof b.qs);
      }
      for (const std::int8_t byte : {std::int8_t{127}, std::int8_t{-127}, std::int8_t{-128}}) {
        const std::string what = "nibble bytes " + std::to_string(nibbles) + " scale bytes " +
                                 std::to_string(packed) + " activations " + std::to_string(byte);
        const auto a = constant_activations(kSupers * kSuperBlockSize / kBlockSize, byte);
        for (int s = 1; s <= kSupers; ++s) check_row_dot(w, a, s, what);
      }
      for (const float v : {1.0F, -1.0F}) {  // activations quantized to all 127 / all -127
        const std::vector<float> x(2 * kSupers * kSuperBlockSize, v);
        check_matmul(w, x, 2, kSupers, kSupers, "nibble bytes " + std::to_string(nibbles) + " x = " + std::to_string(v));
      }
    }
  }
}

TEST_CASE("quant k-quants: extreme Q6_K blocks at the int16 edge give the same bits on every instruction set",
          "[quant]") {
  IsaGuard guard;
  constexpr int kSupers = 3;
  // ql/qh bytes 0xFF: every value 63; 0x00: every value 0 (weights 31 and -32 times the scale).
  for (const std::uint8_t bits : {std::uint8_t{0xFF}, std::uint8_t{0x00}}) {
    for (const int scale_pattern : {127, -128, 0}) {  // 0: alternating -128 and 127
      std::vector<BlockQ6_K> w(kSupers * kSupers);  // matmul: kSupers rows of kSupers
      for (auto& b : w) {
        b.d = fedge::f32_to_f16(0.01F);
        std::memset(b.ql, bits, sizeof b.ql);
        std::memset(b.qh, bits, sizeof b.qh);
        for (int i = 0; i < 16; ++i)
          b.scales[i] = static_cast<std::int8_t>(scale_pattern != 0 ? scale_pattern : (i % 2 == 0 ? -128 : 127));
      }
      for (const std::int8_t byte : {std::int8_t{127}, std::int8_t{-127}, std::int8_t{-128}}) {
        const std::string what = "q bytes " + std::to_string(bits) + " scales " + std::to_string(scale_pattern) +
                                 " activations " + std::to_string(byte);
        const auto a = constant_activations(kSupers * kSuperBlockSize / kBlockSize, byte);
        for (int s = 1; s <= kSupers; ++s) check_row_dot(w, a, s, what);
      }
      for (const float v : {1.0F, -1.0F}) {
        const std::vector<float> x(2 * kSupers * kSuperBlockSize, v);
        check_matmul(w, x, 2, kSupers, kSupers, "q bytes " + std::to_string(bits) + " x = " + std::to_string(v));
      }
    }
  }
}

TEST_CASE("quant k-quants: quantized rows dotted on every path stay within 1e-4 of the double-precision dot",
          "[quant]") {
  IsaGuard guard;
  // Weights from the k-quant quantizers (not random bytes): the model's case.
  constexpr int kSupers = 6, kN = kSupers * kSuperBlockSize;
  std::mt19937 rng(303);
  std::normal_distribution<float> normal(0.0F, 0.05F);
  std::vector<float> wf(kN);
  for (auto& v : wf) v = normal(rng);
  std::vector<BlockQ4_K> w4(kSupers);
  std::vector<BlockQ6_K> w6(kSupers);
  REQUIRE(set_isa("portable"));
  quantize_row_q4_k(wf.data(), w4.data(), kN);
  quantize_row_q6_k(wf.data(), w6.data(), kN);
  const auto a = quantized(random_row(kN, 304));
  for (int s = 1; s <= kSupers; ++s) {
    check_row_dot(w4, a, s, "quantized weights");
    check_row_dot(w6, a, s, "quantized weights");
  }
}
