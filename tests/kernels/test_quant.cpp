// GGUF's Q8_0/Q4_0 blocks: exact bytes for known rows (expected values from
// GGUF's reference quantizer worked through in Python with float32 rounding and
// struct's IEEE half conversion), dequantization error bounds, dot products
// against the dequantized rows, identical answers on every instruction set,
// and refused bad lengths.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/inference/kernels_info.h"  // available_isas
#include "fedge/inference/quant.h"
#include "kernel_test_support.h"

using namespace fedge;
using namespace fedge::inference::quant;
using fedge::test::IsaGuard;
using fedge::test::random_row;
using fedge::test::same_bits;

namespace {

std::vector<float> ramp() {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j - 16) * 0.25);
  return x;
}



TEST_CASE("quant: Q4_0 packs a known row exactly as GGUF's reference does") {
  BlockQ4_0 b{};
  quantize_row_q4_0(ramp().data(), &b, 32);
  CHECK(b.d == 0x3800);  // 0.5: the largest magnitude (-4) maps to -8
  const std::uint8_t want[16] = {0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4,
                                 0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8};
  CHECK(std::memcmp(b.qs, want, 16) == 0);

  std::vector<float> s(32);
  for (int j = 0; j < 32; ++j) s[j] = static_cast<float>(std::sin(j * 0.7) * 3.0);
  quantize_row_q4_0(s.data(), &b, 32);
  CHECK(b.d == 0xb5f5);  // the largest magnitude is positive here, so d < 0
  const std::uint8_t want_sin[16] = {0xf8, 0xd3, 0x80, 0x31, 0x05, 0x1b, 0x6f, 0xbf,
                                     0xfd, 0xf8, 0xd3, 0x80, 0x31, 0x05, 0x1b, 0x6f};
  CHECK(std::memcmp(b.qs, want_sin, 16) == 0);
}

TEST_CASE("quant: Q8_0 scales by max/127 and rounds half away from zero") {
  BlockQ8_0 b{};
  quantize_row_q8_0(ramp().data(), &b, 32);
  CHECK(b.d == 0x2808);
  const std::int8_t want[32] = {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8,
                                0,    8,    16,   24,   32,  40,  48,  56,  64,  71,  79,  87,  95,  103, 111, 119};
  CHECK(std::memcmp(b.qs, want, 32) == 0);
  BlockQ8_0 zero{};
  const std::vector<float> zeros(32, 0.0F);
  quantize_row_q8_0(zeros.data(), &zero, 32);
  CHECK(zero.d == 0);
  for (auto q : zero.qs) CHECK(q == 0);
}

TEST_CASE("quant: dequantized rows stay within half a step of the input") {
  const auto x = random_row(4096, 1);
  std::vector<BlockQ8_0> q8(x.size() / 32);
  std::vector<BlockQ4_0> q4(x.size() / 32);
  quantize_row_q8_0(x.data(), q8.data(), static_cast<std::int64_t>(x.size()));
  quantize_row_q4_0(x.data(), q4.data(), static_cast<std::int64_t>(x.size()));
  std::vector<float> y8(x.size()), y4(x.size());
  dequantize_row_q8_0(q8.data(), y8.data(), static_cast<std::int64_t>(x.size()));
  dequantize_row_q4_0(q4.data(), y4.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t b = 0; b < q8.size(); ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    for (int i = 0; i < 32; ++i) {
      const std::size_t k = b * 32 + i;
      // The f16 scale adds a relative error of 2^-11 on top of half a step.
      CHECK(std::fabs(y8[k] - x[k]) <= amax / 127 * 0.5F + amax * 1e-3F);
      CHECK(std::fabs(y4[k] - x[k]) <= amax / 8 * 0.5F + amax * 1e-3F + amax / 8);  // 15 clamps the top step
    }
  }
}

// Every instruction set this CPU has besides the portable one (AVX-512 and
// AVX2 on x86, NEON on aarch64).
std::vector<std::string> fast_isas() {
  std::vector<std::string> found = available_isas();
  REQUIRE(found.back() == "portable");
  found.pop_back();
  if (found.empty()) WARN("this CPU has no SIMD path for the quantized kernels: only the portable one ran");
  return found;
}

// Random Q8_0/Q4_0 weight blocks over the whole byte range (-128 included,
// which GGUF files may hold though the quantizer never writes it), with
// finite random f16 scales of both signs.
template <class Block>
std::vector<Block> random_blocks(std::size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<Block> blocks(count);
  for (auto& b : blocks) {
    b.d = static_cast<std::uint16_t>(rng() & 0xFFFF);
    if ((b.d & 0x7C00) == 0x7C00) b.d &= 0xBFFF;  // no infinities or NaNs
    for (auto& q : b.qs) q = static_cast<std::remove_reference_t<decltype(q)>>(rng());
    if constexpr (std::is_same_v<Block, BlockQ5_0>)
      for (auto& h : b.qh) h = static_cast<std::uint8_t>(rng());
  }
  return blocks;
}


}  // namespace

TEST_CASE("quant: dot products equal the dequantized rows' dot, and every instruction set agrees bit for bit") {
  IsaGuard guard;
  const std::int64_t n = 2048;
  const auto w = random_row(n, 2, 0.05F), a = random_row(n, 3);
  std::vector<BlockQ8_0> w8(n / 32), a8(n / 32);
  std::vector<BlockQ4_0> w4(n / 32);
  quantize_row_q8_0(w.data(), w8.data(), n);
  quantize_row_q4_0(w.data(), w4.data(), n);
  quantize_row_q8_0(a.data(), a8.data(), n);
  std::vector<float> dw8(n), dw4(n), da(n);
  dequantize_row_q8_0(w8.data(), dw8.data(), n);
  dequantize_row_q4_0(w4.data(), dw4.data(), n);
  dequantize_row_q8_0(a8.data(), da.data(), n);
  double ref8 = 0, ref4 = 0, scale = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    ref8 += static_cast<double>(dw8[i]) * da[i];
    ref4 += static_cast<double>(dw4[i]) * da[i];
    scale += std::fabs(static_cast<double>(dw8[i]) * da[i]);
  }
  REQUIRE(set_isa("portable"));
  const float s8 = vec_dot_q8_0_q8_0(n, w8.data(), a8.data());
  const float s4 = vec_dot_q4_0_q8_0(n, w4.data(), a8.data());
  CHECK(std::fabs(s8 - ref8) <= 1e-5 * scale);
  CHECK(std::fabs(s4 - ref4) <= 1e-5 * scale);
  for (const std::string& isa : fast_isas()) {
    REQUIRE(set_isa(isa.c_str()));
    INFO("instruction set " << isa);
    CHECK(vec_dot_q8_0_q8_0(n, w8.data(), a8.data()) == s8);
    CHECK(vec_dot_q4_0_q8_0(n, w4.data(), a8.data()) == s4);
  }
}

TEST_CASE("quant: every instruction set gives the portable path's bits for every length, random blocks included") {
  IsaGuard guard;
  const std::int64_t max_blocks = 40;  // 2.5 steps of 16 blocks: every partial step and quad
  const auto w8 = random_blocks<BlockQ8_0>(max_blocks, 11);
  const auto w4 = random_blocks<BlockQ4_0>(max_blocks, 12);
  const auto w5 = random_blocks<BlockQ5_0>(max_blocks, 15);
  std::vector<BlockQ8_0> a8(max_blocks);
  const auto a = random_row(max_blocks * 32, 13, 3.0F);
  REQUIRE(set_isa("portable"));
  quantize_row_q8_0(a.data(), a8.data(), max_blocks * 32);  // activations as the kernels make them
  std::vector<float> want8, want4, want5;
  for (std::int64_t b = 1; b <= max_blocks; ++b) {
    want8.push_back(vec_dot_q8_0_q8_0(b * 32, w8.data(), a8.data()));
    want4.push_back(vec_dot_q4_0_q8_0(b * 32, w4.data(), a8.data()));
    want5.push_back(vec_dot_q5_0_q8_0(b * 32, w5.data(), a8.data()));
  }
  for (const std::string& isa : fast_isas()) {
    REQUIRE(set_isa(isa.c_str()));
    for (std::int64_t b = 1; b <= max_blocks; ++b) {
      INFO("instruction set " << isa << ", " << b << " blocks");
      CHECK(same_bits(vec_dot_q8_0_q8_0(b * 32, w8.data(), a8.data()), want8[b - 1]));
      CHECK(same_bits(vec_dot_q4_0_q8_0(b * 32, w4.data(), a8.data()), want4[b - 1]));
      CHECK(same_bits(vec_dot_q5_0_q8_0(b * 32, w5.data(), a8.data()), want5[b - 1]));
    }
  }
}

TEST_CASE("quant: activation rows quantize to the same bytes on every instruction set, ties and refusals included") {
  IsaGuard guard;
  // Random rows, and a block whose max is 127 (d = 1, so x * id = x) with
  // values on .5 ties, which GGUF's reference rounds away from zero.
  auto x = random_row(32 * 24, 14, 2.0F);
  for (int i = 0; i < 32; ++i) x[i] = (i == 0) ? 127.0F : static_cast<float>(i % 2 ? -(i + 0.5) : (i + 0.5));
  for (int i = 32; i < 64; ++i) x[i] = 0.0F;  // an all-zero block: d = 0
  x[64] = -0.0F;
  std::vector<BlockQ8_0> want(24), got(24);
  REQUIRE(set_isa("portable"));
  quantize_row_q8_0(x.data(), want.data(), static_cast<std::int64_t>(x.size()));
  CHECK(want[0].qs[1] == -2);  // -1.5 -> -2
  CHECK(want[0].qs[2] == 3);   // 2.5 -> 3
  for (const std::string& isa : fast_isas()) {
    REQUIRE(set_isa(isa.c_str()));
    INFO("instruction set " << isa);
    std::memset(got.data(), 0x55, got.size() * sizeof(BlockQ8_0));
    quantize_row_q8_0(x.data(), got.data(), static_cast<std::int64_t>(x.size()));
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(BlockQ8_0)) == 0);
    auto bad = x;
    bad[100] = INFINITY;
    CHECK_THROWS_WITH(quantize_row_q8_0(bad.data(), got.data(), static_cast<std::int64_t>(bad.size())),
                      Catch::Contains("value 100 is not finite"));
  }
}

TEST_CASE("quant: matmul gives the same bits on every instruction set for the model's shapes and odd ones") {
  IsaGuard guard;
  struct Shape {
    int rows, in, out;
  };
  // 576 = 18 blocks (the 135M model's hidden size: a partial 16-block step);
  // 1536 = 48 blocks; 96 and 544 end in partial quads.
  for (const Shape shape : {Shape{1, 576, 192}, Shape{3, 1536, 37}, Shape{5, 96, 9}, Shape{2, 544, 300}}) {
    const auto w = random_row(static_cast<std::size_t>(shape.in) * shape.out, 15, 0.05F);
    const auto x = random_row(static_cast<std::size_t>(shape.in) * shape.rows, 16);
    for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
      std::vector<std::uint8_t> packed(row_bytes(type, shape.in) * shape.out);
      REQUIRE(set_isa("portable"));
      quantize_rows(type, w.data(), packed.data(), shape.out, shape.in);
      std::vector<float> want(static_cast<std::size_t>(shape.rows) * shape.out), got(want.size());
      matmul(type, packed.data(), x.data(), want.data(), shape.rows, shape.in, shape.out);
      for (const std::string& isa : fast_isas()) {
        REQUIRE(set_isa(isa.c_str()));
        INFO(quant_type_name(type) << " on " << isa << ": " << shape.rows << " x " << shape.in << " -> " << shape.out);
        matmul(type, packed.data(), x.data(), got.data(), shape.rows, shape.in, shape.out);
        CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("quant: the software prefetch changes no bit, and a negative distance is refused") {
  struct PrefetchGuard {
    int saved = prefetch_bytes();
    ~PrefetchGuard() { set_prefetch_bytes(saved); }
  } guard;
  CHECK(prefetch_bytes() == 4096);  // the default the docs and bench_quant report
  // Odd output counts end in a single row after the row pairs.
  const int in = 576, out = 301, rows = 2;
  const auto w = random_row(static_cast<std::size_t>(in) * out, 21, 0.05F);
  const auto x = random_row(static_cast<std::size_t>(in) * rows, 22);
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    std::vector<std::uint8_t> packed(row_bytes(type, in) * out);
    quantize_rows(type, w.data(), packed.data(), out, in);
    std::vector<float> without(static_cast<std::size_t>(rows) * out), with(without.size());
    set_prefetch_bytes(0);
    matmul(type, packed.data(), x.data(), without.data(), rows, in, out);
    for (int bytes : {64, 4096, 1 << 20}) {  // up to far past the matrix's end
      set_prefetch_bytes(bytes);
      matmul(type, packed.data(), x.data(), with.data(), rows, in, out);
      INFO(quant_type_name(type) << " prefetching " << bytes << " bytes ahead");
      CHECK(std::memcmp(with.data(), without.data(), with.size() * sizeof(float)) == 0);
    }
  }
  CHECK_THROWS_WITH(set_prefetch_bytes(-1), Catch::Contains("prefetch distance -1 is negative"));
}

TEST_CASE("quant: matvec over quantized rows is close to the f32 product") {
  const int in = 512, out = 64;
  const auto w = random_row(static_cast<std::size_t>(in) * out, 4, 0.05F), x = random_row(in, 5);
  std::vector<BlockQ8_0> w8(static_cast<std::size_t>(in) * out / 32);
  std::vector<BlockQ4_0> w4(w8.size());
  quantize_row_q8_0(w.data(), w8.data(), static_cast<std::int64_t>(w.size()));
  quantize_row_q4_0(w.data(), w4.data(), static_cast<std::int64_t>(w.size()));
  std::vector<float> y8(out), y4(out);
  matvec_q8_0(w8.data(), x.data(), y8.data(), in, out);
  matvec_q4_0(w4.data(), x.data(), y4.data(), in, out);
  double err8 = 0, err4 = 0, norm = 0;
  for (int j = 0; j < out; ++j) {
    double ref = 0;
    for (int i = 0; i < in; ++i) ref += static_cast<double>(w[j * in + i]) * x[i];
    err8 += (y8[j] - ref) * (y8[j] - ref);
    err4 += (y4[j] - ref) * (y4[j] - ref);
    norm += ref * ref;
  }
  CHECK(std::sqrt(err8 / norm) < 0.02);  // 8-bit weights and activations
  CHECK(std::sqrt(err4 / norm) < 0.15);  // 4-bit weights
}

TEST_CASE("quant: matmul over several rows gives each row's matvec bits, and whole matrices round-trip by rows") {
  const int in = 96, out = 40, rows = 5;
  const auto w = random_row(static_cast<std::size_t>(in) * out, 6, 0.05F);
  const auto x = random_row(static_cast<std::size_t>(in) * rows, 7);
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    INFO(quant_type_name(type));
    std::vector<std::uint8_t> packed(row_bytes(type, in) * out);
    quantize_rows(type, w.data(), packed.data(), out, in);
    std::vector<float> y(static_cast<std::size_t>(rows) * out), one(out);
    matmul(type, packed.data(), x.data(), y.data(), rows, in, out);
    for (int r = 0; r < rows; ++r) {
      if (type == QuantType::kQ8_0)
        matvec_q8_0(reinterpret_cast<const BlockQ8_0*>(packed.data()), x.data() + r * in, one.data(), in, out);
      else
        matvec_q4_0(reinterpret_cast<const BlockQ4_0*>(packed.data()), x.data() + r * in, one.data(), in, out);
      CHECK(std::memcmp(one.data(), y.data() + r * out, out * sizeof(float)) == 0);
    }
    // Whole-matrix (de)quantization equals the row functions on the flat matrix.
    std::vector<float> back(w.size()), flat(w.size());
    dequantize_rows(type, packed.data(), back.data(), out, in);
    if (type == QuantType::kQ8_0)
      dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(packed.data()), flat.data(), static_cast<std::int64_t>(w.size()));
    else
      dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(packed.data()), flat.data(), static_cast<std::int64_t>(w.size()));
    CHECK(back == flat);
  }
  std::vector<float> y(4);
  std::vector<std::uint8_t> packed(row_bytes(QuantType::kQ8_0, 64));
  CHECK_THROWS_AS(matmul(QuantType::kQ8_0, packed.data(), y.data(), y.data(), 1, 33, 1), Error);
}

TEST_CASE("quant: a group of products over one input gives each product's matmul bits") {
  const int in = 576, rows = 3;
  const int outs[3] = {576, 192, 67};  // q, k and an odd size: chunks end mid-pair
  const auto x = random_row(static_cast<std::size_t>(in) * rows, 17);
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    INFO(quant_type_name(type));
    std::vector<std::vector<std::uint8_t>> packed(3);
    std::vector<std::vector<float>> alone(3), grouped(3);
    std::vector<MatmulJob> jobs;
    for (int i = 0; i < 3; ++i) {
      const auto w = random_row(static_cast<std::size_t>(in) * outs[i], 18 + i, 0.05F);
      packed[i].resize(row_bytes(type, in) * outs[i]);
      quantize_rows(type, w.data(), packed[i].data(), outs[i], in);
      alone[i].resize(static_cast<std::size_t>(rows) * outs[i]);
      grouped[i].assign(alone[i].size(), NAN);
      matmul(type, packed[i].data(), x.data(), alone[i].data(), rows, in, outs[i]);
      jobs.push_back({packed[i].data(), grouped[i].data(), outs[i]});
    }
    matmul_group(type, jobs.data(), 3, x.data(), rows, in);
    for (int i = 0; i < 3; ++i) CHECK(std::memcmp(alone[i].data(), grouped[i].data(), alone[i].size() * 4) == 0);
  }
  std::vector<MatmulJob> too_many(kMaxGroup + 1, MatmulJob{nullptr, nullptr, 0});
  std::vector<float> x32(32);
  CHECK_THROWS_WITH(matmul_group(QuantType::kQ8_0, too_many.data(), kMaxGroup + 1, x32.data(), 1, 32),
                    Catch::Contains("at most 8"));
}

TEST_CASE("quant: lengths that are not whole blocks and non-finite inputs are refused") {
  std::vector<float> x(33, 1.0F);
  std::vector<BlockQ8_0> b8(2);
  std::vector<BlockQ4_0> b4(2);
  CHECK_THROWS_WITH(quantize_row_q8_0(x.data(), b8.data(), 33), Catch::Contains("32-value blocks"));
  CHECK_THROWS_AS(quantize_row_q4_0(x.data(), b4.data(), 31), Error);
  CHECK_THROWS_AS(row_bytes(QuantType::kQ4_0, -32), Error);
  CHECK(row_bytes(QuantType::kQ8_0, 64) == 68);
  CHECK(row_bytes(QuantType::kQ4_0, 64) == 36);
  x[5] = NAN;
  CHECK_THROWS_WITH(quantize_row_q8_0(x.data(), b8.data(), 32), Catch::Contains("value 5 is not finite"));
  std::vector<float> y(32);
  CHECK_THROWS_AS(matvec_q8_0(b8.data(), x.data(), y.data(), 33, 1), Error);
  CHECK_FALSE(set_isa("neon-on-x86"));
}
