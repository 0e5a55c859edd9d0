// GGUF's Q5_0 and the k-quants Q4_K and Q6_K: hand-built blocks read back as
// GGUF's layouts say (values worked out by hand from the layout, not from
// fedge's code), quantize -> dequantize error against Q4_0/Q8_0 on the same
// rows, determinism, products against the dequantized rows, Q5_0's SIMD paths
// against the portable one, and refused bad lengths.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"  // f32_to_f16
#include "fedge/inference/kernels_info.h"  // available_isas
#include "fedge/inference/quant.h"
#include "kernel_test_support.h"

using namespace fedge;
using namespace fedge::inference::quant;
using fedge::test::IsaGuard;
using fedge::test::random_row;
using fedge::test::same_bits;

namespace {

// ||dequantize(quantize(x)) - x|| / ||x|| for a type.
double round_trip_error(QuantType type, const std::vector<float>& x) {
  const auto n = static_cast<std::int64_t>(x.size());
  std::vector<std::uint8_t> packed(row_bytes(type, n));
  std::vector<float> back(x.size());
  quantize_rows(type, x.data(), packed.data(), 1, n);
  dequantize_rows(type, packed.data(), back.data(), 1, n);
  double err = 0, ref = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    err += (back[i] - x[i]) * double(back[i] - x[i]);
    ref += x[i] * double(x[i]);
  }
  return std::sqrt(err / ref);
}


}  // namespace

TEST_CASE("quant: a hand-built Q5_0 block reads back as GGUF's layout says") {
  BlockQ5_0 b{};
  b.d = f32_to_f16(0.5F);
  b.qs[0] = 0x3A;                    // weight 0: low nibble 10; weight 16: high nibble 3
  b.qs[15] = 0xF0;                   // weight 15: 0; weight 31: 15
  b.qh[0] = 0x01;                    // weight 0's fifth bit
  b.qh[3] = 0x80;                    // weight 31's fifth bit
  std::vector<float> y(32);
  dequantize_row_q5_0(&b, y.data(), 32);
  CHECK(y[0] == 0.5F * (26 - 16));   // 10 + 16
  CHECK(y[16] == 0.5F * (3 - 16));
  CHECK(y[15] == 0.5F * (0 - 16));
  CHECK(y[31] == 0.5F * (31 - 16));  // 15 + 16
  CHECK(y[1] == 0.5F * -16);
}

TEST_CASE("quant: a hand-built Q4_K super-block reads back as GGUF's layout says") {
  BlockQ4_K b{};
  b.d = f32_to_f16(1.0F);
  b.dmin = f32_to_f16(0.5F);
  // Sub-block 0: scale 2, min 4 (bytes 0 and 4, six bits each).
  b.scales[0] = 2;
  b.scales[4] = 4;
  // Sub-block 5: scale 37 = 0b10'0101, min 19 = 0b01'0011: low four bits of
  // each in byte 9 (scale low, min high), top two bits in bytes 1 and 5.
  b.scales[9] = 0x35;
  b.scales[1] = 2 << 6;
  b.scales[5] = 1 << 6;
  b.qs[0] = 0x03;       // weight 0 (sub-block 0, low nibble of byte 0): 3
  b.qs[64 + 7] = 0x70;  // weight 160 + 7 (sub-block 5 = chunk 2's high nibbles): 7
  std::vector<float> y(256);
  dequantize_row_q4_k(&b, y.data(), 256);
  CHECK(y[0] == 2.0F * 3 - 0.5F * 4);
  CHECK(y[1] == -0.5F * 4);               // nibble 0 of sub-block 0
  CHECK(y[160 + 7] == 37.0F * 7 - 0.5F * 19);
  CHECK(y[128 + 7] == 0.0F);              // sub-block 4 (chunk 2's low nibbles): scale 0, min 0
  CHECK(y[32] == 0.0F);                   // sub-block 1: scale 0 (byte 1's low six bits), min 0
}

TEST_CASE("quant: a hand-built Q6_K super-block reads back as GGUF's layout says") {
  BlockQ6_K b{};
  b.d = f32_to_f16(0.25F);
  b.scales[0] = 4;
  b.scales[13] = -3;
  // Weight 0: low four bits in ql[0]'s low nibble (5), high two in qh[0]'s bits 0-1 (2): q = 37.
  b.ql[0] = 0x05;
  b.qh[0] = 0x02;
  // Weight 213 = 128 + 2 * 32 + 21 (half 1, quarter 2, lane 21): low bits in
  // ql[64 + 21]'s high nibble (12), high bits in qh[32 + 21]'s bits 4-5 (1): q = 28.
  b.ql[64 + 21] = 0xC0;
  b.qh[32 + 21] = 0x10;
  std::vector<float> y(256);
  dequantize_row_q6_k(&b, y.data(), 256);
  CHECK(y[0] == 0.25F * 4 * (37 - 32));
  CHECK(y[213] == 0.25F * -3 * (28 - 32));
  CHECK(y[1] == 0.25F * 4 * -32);  // q = 0
  CHECK(y[16] == 0.0F);            // sub-block 1: scale 0
}

TEST_CASE("quant: Q4_K and Q6_K round trips beat Q4_0 and Q5_0 and stay close to the row") {
  const auto x = random_row(256 * 64, 5);
  const double q4_0 = round_trip_error(QuantType::kQ4_0, x), q5_0 = round_trip_error(QuantType::kQ5_0, x);
  const double q4_k = round_trip_error(QuantType::kQ4_K, x), q6_k = round_trip_error(QuantType::kQ6_K, x);
  const double q8_0 = round_trip_error(QuantType::kQ8_0, x);
  INFO("relative L2: q4_0 " << q4_0 << ", q4_k " << q4_k << ", q5_0 " << q5_0 << ", q6_k " << q6_k << ", q8_0 " << q8_0);
  CHECK(q4_k < q4_0);
  CHECK(q5_0 < q4_0);
  CHECK(q6_k < q5_0);
  CHECK(q8_0 < q6_k);
  CHECK(q4_k < 0.12);
  CHECK(q6_k < 0.03);
}

TEST_CASE("quant: the new types quantize deterministically and keep zero and constant rows exact") {
  for (QuantType type : {QuantType::kQ5_0, QuantType::kQ4_K, QuantType::kQ6_K}) {
    INFO(quant_type_name(type));
    const auto x = random_row(512, 6);
    std::vector<std::uint8_t> a(row_bytes(type, 512)), b(a.size(), 0xAB);
    quantize_rows(type, x.data(), a.data(), 1, 512);
    quantize_rows(type, x.data(), b.data(), 1, 512);
    CHECK(a == b);
    std::vector<float> zeros(512, 0.0F), back(512, 1.0F);
    quantize_rows(type, zeros.data(), a.data(), 1, 512);
    dequantize_rows(type, a.data(), back.data(), 1, 512);
    CHECK(back == zeros);
  }
  // A constant row of a power of two is exact in Q4_K (min 0, one level).
  std::vector<float> ones(256, 1.0F), back(256);
  std::vector<std::uint8_t> packed(row_bytes(QuantType::kQ4_K, 256));
  quantize_rows(QuantType::kQ4_K, ones.data(), packed.data(), 1, 256);
  dequantize_rows(QuantType::kQ4_K, packed.data(), back.data(), 1, 256);
  for (float v : back) CHECK(v == Approx(1.0F).margin(0.02));
}

TEST_CASE("quant: products over the new types equal the dequantized rows' dot products") {
  IsaGuard guard;
  const int in = 512, out = 6, rows = 3;
  const auto w = random_row(std::size_t(in) * out, 7), x = random_row(std::size_t(in) * rows, 8);
  for (QuantType type : {QuantType::kQ5_0, QuantType::kQ4_K, QuantType::kQ6_K}) {
    std::vector<std::uint8_t> packed(row_bytes(type, in) * out);
    quantize_rows(type, w.data(), packed.data(), out, in);
    std::vector<float> flat(w.size());
    dequantize_rows(type, packed.data(), flat.data(), out, in);
    for (const std::string& isa : available_isas()) {
      REQUIRE(set_isa(isa.c_str()));
      INFO(quant_type_name(type) << " on " << isa);
      std::vector<float> y(std::size_t(rows) * out);
      matmul(type, packed.data(), x.data(), y.data(), rows, in, out);
      for (int r = 0; r < rows; ++r) {
        // The kernels meet x quantized to Q8_0; compare with that row.
        std::vector<BlockQ8_0> a(in / 32);
        quantize_row_q8_0(x.data() + r * in, a.data(), in);
        std::vector<float> xa(in);
        dequantize_row_q8_0(a.data(), xa.data(), in);
        for (int j = 0; j < out; ++j) {
          double want = 0, scale = 0;
          for (int i = 0; i < in; ++i) {
            want += double(flat[j * in + i]) * xa[i];
            scale += std::fabs(double(flat[j * in + i]) * xa[i]);
          }
          CHECK(std::fabs(y[r * out + j] - want) <= 1e-5 * scale);
        }
      }
    }
  }
}

TEST_CASE("quant: Q5_0 products give the portable path's bits on every instruction set") {
  IsaGuard guard;
  std::mt19937 rng(9);
  const int blocks = 37;
  std::vector<BlockQ5_0> w(blocks);
  for (auto& b : w) {
    b.d = f32_to_f16(std::ldexp(1.0F, int(rng() % 8) - 10));
    for (auto& q : b.qh) q = static_cast<std::uint8_t>(rng());
    for (auto& q : b.qs) q = static_cast<std::uint8_t>(rng());
  }
  // Extremes too: every weight -16 and every weight 15.
  std::memset(w[3].qh, 0, 4);
  std::memset(w[3].qs, 0, 16);
  std::memset(w[4].qh, 0xFF, 4);
  std::memset(w[4].qs, 0xFF, 16);
  auto x = random_row(blocks * 32, 10);
  for (int i = 96; i < 160; ++i) x[i] = i % 2 ? 127.0F : -127.0F;
  std::vector<BlockQ8_0> a(blocks);
  REQUIRE(set_isa("portable"));
  quantize_row_q8_0(x.data(), a.data(), blocks * 32);
  std::vector<float> want;
  for (int b = 1; b <= blocks; ++b) want.push_back(vec_dot_q5_0_q8_0(b * 32, w.data(), a.data()));
  // Products of whole matrices too (pairs of rows and a last odd row), rows
  // of 18 blocks (a 576-wide model: a short tail) and of 12.
  const int shapes[][2] = {{18, 2}, {12, 3}, {1, 5}, {7, 5}};
  std::vector<std::vector<float>> want_rows;
  for (const auto& shape : shapes) {
    want_rows.emplace_back();
    for (int j = 0; j < shape[1]; ++j)
      want_rows.back().push_back(vec_dot_q5_0_q8_0(shape[0] * 32, w.data() + j * shape[0], a.data()));
  }
  for (const std::string& isa : available_isas()) {
    REQUIRE(set_isa(isa.c_str()));
    for (int b = 1; b <= blocks; ++b) {
      INFO(isa << ", " << b << " blocks");
      CHECK(same_bits(vec_dot_q5_0_q8_0(b * 32, w.data(), a.data()), want[b - 1]));
    }
    for (std::size_t s = 0; s < want_rows.size(); ++s) {
      const int in = shapes[s][0] * 32, out = shapes[s][1];
      std::vector<float> y(out);
      matmul(QuantType::kQ5_0, w.data(), x.data(), y.data(), 1, in, out);
      for (int j = 0; j < out; ++j) {
        INFO(isa << ", matmul " << in << " x " << out << ", row " << j);
        CHECK(same_bits(y[j], want_rows[s][j]));
      }
    }
  }
}

TEST_CASE("quant: the k-quants refuse rows that are not whole super-blocks") {
  std::vector<float> x(288, 1.0F);  // 9 blocks of 32, not a multiple of 256
  std::vector<BlockQ4_K> q4(2);
  std::vector<BlockQ6_K> q6(2);
  CHECK_THROWS_AS(quantize_row_q4_k(x.data(), q4.data(), 288), Error);
  CHECK_THROWS_AS(quantize_row_q6_k(x.data(), q6.data(), 288), Error);
  CHECK_THROWS_AS(row_bytes(QuantType::kQ4_K, 288), Error);
  std::vector<float> y(1);
  CHECK_THROWS_AS(matmul(QuantType::kQ6_K, q6.data(), x.data(), y.data(), 1, 288, 1), Error);
  x[7] = std::nanf("");
  std::vector<BlockQ5_0> q5(9);
  CHECK_THROWS_AS(quantize_row_q5_0(x.data(), q5.data(), 288), Error);
  x.resize(256);
  CHECK_THROWS_AS(quantize_row_q4_k(x.data(), q4.data(), 256), Error);
  CHECK(block_weights(QuantType::kQ4_K) == 256);
  CHECK(block_bytes(QuantType::kQ6_K) == 210);
  CHECK(row_bytes(QuantType::kQ5_0, 64) == 44);
}
