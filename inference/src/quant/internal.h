// What quant.cpp (Q8_0, Q4_0, Q5_0, the products and their threads) and
// quant_k.cpp (the k-quants Q4_K and Q6_K) share: the instruction-set choice
// and the k-quant row dots that the products call.
#pragma once

#include <cstdint>
#include <string>

#include "fedge/inference/quant.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace fedge::inference::quant::detail {

#if defined(__aarch64__)
// 16 signed bytes times 16 signed bytes added into 4 int32 lanes: one sdot
// where the CPU has the dot-product extension (ARMv8.2+, a compile-time
// feature: -march=armv8.2-a+dotprod), widening multiplies otherwise (each
// pair of products fits int16: |w| <= 128, |a| <= 127). Either way the sum
// is exact.
inline int32x4_t dot_i8x16(int32x4_t acc, int8x16_t w, int8x16_t a) {
#ifdef __ARM_FEATURE_DOTPROD
  return vdotq_s32(acc, w, a);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
  const int16x8_t hi = vmull_high_s8(w, a);
  return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}
#endif

// kScalar is the portable C++ path ("portable").
enum class Isa { kScalar, kNeon, kAvx2, kAvx512 };

// Error(kInvalidInput) unless n >= 0 is a multiple of `block` values.
void check_length(std::int64_t n, int block, const char* what);
void check_finite(const float* x, std::int64_t n, const char* what);

// f32 of every f16 bit pattern (a 256 KB table, built once).
const float* f16_table();

// A k-quant row of `supers` super-blocks against an activation row of
// 8 * supers Q8_0 blocks whose byte sums are `asum` (used by Q4_K's mins);
// the float order is the one quant.h describes, on every path.
float row_dot_k(const BlockQ4_K* w, std::int64_t supers, const BlockQ8_0* a, const std::int32_t* asum, Isa use);
float row_dot_k(const BlockQ6_K* w, std::int64_t supers, const BlockQ8_0* a, const std::int32_t* asum, Isa use);

// The 8 accumulators of a row, added in the fixed tree.
inline float sum_lanes(const float* acc) {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
inline constexpr int kLanes = 8;

}  // namespace fedge::inference::quant::detail
