// The k-quants Q4_K and Q6_K (GGUF's super-blocks of 256 weights): their
// quantizers, dequantizers and row dots against Q8_0 activations.
//
// A row dot reads each super-block as 8 units of 32 weights, one per
// activation block: the units' integer sums are exact on every path, and the
// float part is the one sequence quant.h describes, so every instruction set
// gives the same bits.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fedge/common/safetensors.h"  // f16 <-> f32
#include "internal.h"

#if defined(__x86_64__)
// GCC 12 flags the AVX-512 intrinsics headers' own undefined-vector idiom.
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"  // the fuzz build's clang lacks the next one
#endif
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define FEDGE_QUANT_K_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define FEDGE_QUANT_K_NEON 1
#endif

namespace fedge::inference::quant {
namespace detail {
namespace {

constexpr int kUnits = kSuperBlockSize / kBlockSize;  // 8 units of 32 weights per super-block

int nearest_int(float v) { return static_cast<int>(std::nearbyint(v)); }

// ---------------------------------------------------------------- Q4_K layout

// Sub-block j's 6-bit scale and min (the 12-byte packing of quant.h).
void scale_min_q4_k(const std::uint8_t* q, int j, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void pack_scale_min_q4_k(std::uint8_t* q, int j, int scale, int min) {
  if (j < 4) {
    q[j] = static_cast<std::uint8_t>(scale);
    q[j + 4] = static_cast<std::uint8_t>(min);
  } else {
    q[j + 4] = static_cast<std::uint8_t>((scale & 0x0F) | ((min & 0x0F) << 4));
    q[j - 4] = static_cast<std::uint8_t>(q[j - 4] | ((scale >> 4) << 6));
    q[j] = static_cast<std::uint8_t>(q[j] | ((min >> 4) << 6));
  }
}

// The 4-bit value of weight l (< 32) of unit u.
int nibble_q4_k(const BlockQ4_K& b, int u, int l) {
  const std::uint8_t byte = b.qs[32 * (u / 2) + l];
  return u % 2 == 0 ? byte & 0x0F : byte >> 4;
}

// ---------------------------------------------------------------- Q6_K layout

// The 6-bit value (0..63) of weight i (< 256).
int value_q6_k(const BlockQ6_K& b, int i) {
  const int h = i / 128, p = (i % 128) / 32, l = i % 32;
  const std::uint8_t low = b.ql[64 * h + l + 32 * (p & 1)];
  const int low4 = (p >> 1) ? low >> 4 : low & 0x0F;
  const int high2 = (b.qh[32 * h + l] >> (2 * p)) & 3;
  return low4 | (high2 << 4);
}

// ---------------------------------------------------------------- quantizers

// Q6_K's per-sub-block scale: the scale s minimizing sum x^2 (x - s q)^2 over
// q = round(x / s) clamped to [-nmax, nmax - 1], searched over 19 candidates
// around max / -nmax (the value of largest magnitude maps to -nmax). L gets
// q + nmax.
float symmetric_scale(const float* x, int n, int nmax, std::uint8_t* L) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax < 1e-15F) {
    std::fill_n(L, n, static_cast<std::uint8_t>(nmax));
    return 0;
  }
  const auto fit = [&](float iscale, std::uint8_t* out, float& sumlx, float& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      out[i] = static_cast<std::uint8_t>(l + nmax);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l * l);
    }
  };
  float sumlx, suml2;
  fit(-static_cast<float>(nmax) / max, L, sumlx, suml2);
  float scale = suml2 > 0 ? sumlx / suml2 : 0.0F;
  float best = scale * sumlx;
  std::uint8_t trial[kBlockSize];
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    fit(-(static_cast<float>(nmax) + 0.1F * static_cast<float>(step)) / max, trial, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      std::copy_n(trial, n, L);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K's per-sub-block scale and min: x ~ scale * q - min with q in [0, nmax],
// min >= 0, weights w; the weighted least-squares fit of scale and min for the
// q that each of 21 candidate scales gives, the best kept. Returns scale,
// sets `min` (the amount subtracted) and L.
float affine_scale(const float* x, const float* w, int n, int nmax, float& min_out, std::uint8_t* L) {
  float lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
  lo = std::min(lo, 0.0F);
  if (hi == lo) {
    std::fill_n(L, n, std::uint8_t{0});
    min_out = -lo;
    return 0;
  }
  float sum_w = 0, sum_x = 0;
  for (int i = 0; i < n; ++i) {
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  const auto quantize_with = [&](float iscale, float offset, std::uint8_t* out) {
    for (int i = 0; i < n; ++i)
      out[i] = static_cast<std::uint8_t>(std::clamp(nearest_int(iscale * (x[i] - offset)), 0, nmax));
  };
  const auto error_of = [&](const std::uint8_t* q, float scale, float offset) {
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float d = scale * static_cast<float>(q[i]) + offset - x[i];
      e += w[i] * d * d;
    }
    return e;
  };
  float iscale = static_cast<float>(nmax) / (hi - lo);
  float scale = 1.0F / iscale, offset = lo;
  quantize_with(iscale, lo, L);
  float best = error_of(L, scale, offset);
  std::uint8_t trial[kBlockSize];
  for (int step = 0; step <= 20; ++step) {
    iscale = (-1.0F + 0.1F * static_cast<float>(step) + static_cast<float>(nmax)) / (hi - lo);
    quantize_with(iscale, lo, trial);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const float l = trial[i];
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_offset = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_offset > 0) {  // the fit wants a positive offset: fix it at 0
      this_offset = 0;
      this_scale = sum_xl / sum_l2;
    }
    const float e = error_of(trial, this_scale, this_offset);
    if (e < best) {
      std::copy_n(trial, n, L);
      best = e;
      scale = this_scale;
      offset = this_offset;
    }
  }
  min_out = -offset;
  return scale;
}

void quantize_super_q4_k(const float* x, BlockQ4_K& y) {
  float scales[kUnits], mins[kUnits], weights[kBlockSize];
  std::uint8_t L[kSuperBlockSize];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < kUnits; ++j) {
    const float* v = x + kBlockSize * j;
    float sum_x2 = 0;
    for (int l = 0; l < kBlockSize; ++l) sum_x2 += v[l] * v[l];
    const float av_x = std::sqrt(sum_x2 / kBlockSize);
    for (int l = 0; l < kBlockSize; ++l) weights[l] = av_x + std::fabs(v[l]);
    scales[j] = affine_scale(v, weights, kBlockSize, 15, mins[j], L + kBlockSize * j);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  std::memset(&y, 0, sizeof y);
  const float inv_scale = max_scale > 0 ? 63.0F / max_scale : 0.0F;
  const float inv_min = max_min > 0 ? 63.0F / max_min : 0.0F;
  for (int j = 0; j < kUnits; ++j)
    pack_scale_min_q4_k(y.scales, j, std::min(63, nearest_int(inv_scale * scales[j])),
                        std::min(63, nearest_int(inv_min * mins[j])));
  y.d = f32_to_f16(max_scale / 63.0F);
  y.dmin = f32_to_f16(max_min / 63.0F);
  // Quantize again against the scales and mins as stored (6-bit, under f16).
  for (int j = 0; j < kUnits; ++j) {
    int sc, m;
    scale_min_q4_k(y.scales, j, sc, m);
    const float d = f16_to_f32(y.d) * static_cast<float>(sc);
    if (d == 0) continue;  // L keeps the search's values; the unit dequantizes to -dmin * m
    const float dm = f16_to_f32(y.dmin) * static_cast<float>(m);
    for (int l = 0; l < kBlockSize; ++l)
      L[kBlockSize * j + l] =
          static_cast<std::uint8_t>(std::clamp(nearest_int((x[kBlockSize * j + l] + dm) / d), 0, 15));
  }
  for (int c = 0; c < kSuperBlockSize / 64; ++c)
    for (int l = 0; l < 32; ++l)
      y.qs[32 * c + l] = static_cast<std::uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

void quantize_super_q6_k(const float* x, BlockQ6_K& y) {
  constexpr int kSub = 16;
  float scales[kSuperBlockSize / kSub];
  std::uint8_t L[kSuperBlockSize];
  float max_scale = 0, max_abs = 0;
  for (int ib = 0; ib < kSuperBlockSize / kSub; ++ib) {
    scales[ib] = symmetric_scale(x + kSub * ib, kSub, 32, L + kSub * ib);
    if (std::fabs(scales[ib]) > max_abs) {
      max_abs = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(&y, 0, sizeof y);
  if (max_abs < 1e-15F) return;  // all zero: d = 0, and q = 0 (weights of 0 * (0 - 32))
  const float iscale = -128.0F / max_scale;
  y.d = f32_to_f16(1.0F / iscale);
  for (int ib = 0; ib < kSuperBlockSize / kSub; ++ib)
    y.scales[ib] = static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  for (int ib = 0; ib < kSuperBlockSize / kSub; ++ib) {
    const float d = f16_to_f32(y.d) * static_cast<float>(y.scales[ib]);
    if (d == 0) continue;
    for (int l = 0; l < kSub; ++l)
      L[kSub * ib + l] =
          static_cast<std::uint8_t>(std::clamp(nearest_int(x[kSub * ib + l] / d), -32, 31) + 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[128 * h + l], q2 = L[128 * h + 32 + l], q3 = L[128 * h + 64 + l], q4 = L[128 * h + 96 + l];
      y.ql[64 * h + l] = static_cast<std::uint8_t>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
      y.ql[64 * h + 32 + l] = static_cast<std::uint8_t>((q2 & 0x0F) | ((q4 & 0x0F) << 4));
      y.qh[32 * h + l] = static_cast<std::uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

// ---------------------------------------------------------------- unit sums (exact integers)

// Q4_K: per unit u, sum_l q(u, l) * a[u].qs[l] (the 4-bit values, no scale).
void unit_sums_scalar(const BlockQ4_K& w, const BlockQ8_0* a, std::int32_t* isum) {
  for (int u = 0; u < kUnits; ++u) {
    std::int32_t s = 0;
    for (int l = 0; l < kBlockSize; ++l) s += nibble_q4_k(w, u, l) * a[u].qs[l];
    isum[u] = s;
  }
}

// Q6_K: per unit u, scales[2u] * (its first 16 weights' sum) + scales[2u + 1]
// * (the last 16's), with the weights' values q - 32. The super-block is
// unpacked first in the layout's own order: reading each weight through
// value_q6_k took ~8x as long (bench_quant 1536 17280, portable unit sums).
void unit_sums_scalar(const BlockQ6_K& w, const BlockQ8_0* a, std::int32_t* isum) {
  std::int8_t v[kSuperBlockSize];  // q - 32, by weight
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int lo0 = w.ql[64 * h + l], lo1 = w.ql[64 * h + 32 + l], hi = w.qh[32 * h + l];
      std::int8_t* out = v + 128 * h + l;
      out[0] = static_cast<std::int8_t>(((lo0 & 0x0F) | (hi & 3) << 4) - 32);
      out[32] = static_cast<std::int8_t>(((lo1 & 0x0F) | (hi >> 2 & 3) << 4) - 32);
      out[64] = static_cast<std::int8_t>(((lo0 >> 4) | (hi >> 4 & 3) << 4) - 32);
      out[96] = static_cast<std::int8_t>(((lo1 >> 4) | (hi >> 6 & 3) << 4) - 32);
    }
  for (int u = 0; u < kUnits; ++u) {
    std::int32_t half[2] = {0, 0};
    for (int k = 0; k < 2; ++k)
      for (int l = 0; l < 16; ++l) half[k] += v[kBlockSize * u + 16 * k + l] * a[u].qs[16 * k + l];
    isum[u] = w.scales[2 * u] * half[0] + w.scales[2 * u + 1] * half[1];
  }
}

#ifdef FEDGE_QUANT_K_X86
__attribute__((target("avx2"))) inline __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Eight units' partial int32 sums reduced together: lane u is unit u's sum.
__attribute__((target("avx2"))) inline __m256i hsum8(const __m256i* unit) {
  const __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(unit[0], unit[1]), _mm256_hadd_epi32(unit[2], unit[3]));
  const __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(unit[4], unit[5]), _mm256_hadd_epi32(unit[6], unit[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
}

// Q4_K: the 32 bytes qs[32c..] hold units 2c (low nibbles) and 2c + 1 (high
// ones). maddubs takes the nibbles (0..15) as its unsigned operand: a pair is
// at most 2 * 15 * 128 in magnitude, far inside int16, so every sum is exact
// for any activation byte.
__attribute__((target("avx2"))) inline __m256i unit_sums_avx2(const BlockQ4_K& w, const BlockQ8_0* a) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i unit[kUnits];
#pragma GCC unroll 4
  for (int c = 0; c < kUnits / 2; ++c) {
    const __m256i packed = load32(w.qs + 32 * c);
    const __m256i lo = _mm256_and_si256(packed, low4);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
    unit[2 * c] = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(a[2 * c].qs)), ones);
    unit[2 * c + 1] = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(a[2 * c + 1].qs)), ones);
  }
  return hsum8(unit);
}

// Q6_K: unit 4h + p's 6-bit values are bytes of ql[64h + 32 (p & 1)..] (low
// or high nibble by p >> 1) with the 2 bits of qh[32h..] >> 2p on top.
// maddubs(q, a) - maddubs(32, a) is the pairs' (q - 32) * a: both are exact
// (|pair| <= 2 * 63 * 128 = 16128 and 2 * 32 * 128 < 2^15) and so is their
// difference (|.| <= 8192). madd then weighs the first 16 bytes' pairs (the
// low 128 bits) by scales[2u] and the last 16's by scales[2u + 1]: at most
// 2 * 8192 * 128 per int32. The 16 scales are loaded once: unit u's pair
// (scales[2u] in the low 8 bytes, scales[2u + 1] in the high 8) is one byte
// shuffle, widened to int16 lanes. qh's 2 bits for p are masked in place and
// moved to bits 4-5 by one shift (within each byte: the mask clears the bits
// a 16-bit shift would carry across).
__attribute__((target("avx2"))) inline __m256i unit_sums_avx2(const BlockQ6_K& w, const BlockQ8_0* a) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i bias = _mm256_set1_epi8(32);
  const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales));
  __m256i unit[kUnits];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i ql[2] = {load32(w.ql + 64 * h), load32(w.ql + 64 * h + 32)};
    const __m256i qh = load32(w.qh + 32 * h);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      const int u = 4 * h + p;
      const __m256i low = _mm256_and_si256(p >> 1 ? _mm256_srli_epi16(ql[p & 1], 4) : ql[p & 1], low4);
      const __m256i bits = _mm256_and_si256(qh, _mm256_set1_epi8(static_cast<char>(3 << (2 * p))));
      const __m256i high = p == 3 ? _mm256_srli_epi16(bits, 2) : p == 2 ? bits : _mm256_slli_epi16(bits, 4 - 2 * p);
      const __m256i q = _mm256_or_si256(low, high);
      const __m256i act = load32(a[u].qs);
      const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(q, act), _mm256_maddubs_epi16(bias, act));
      const long long first = 0x0101010101010101LL * (2 * u);
      const __m256i scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, _mm_set_epi64x(first + 0x0101010101010101LL, first)));
      unit[u] = _mm256_madd_epi16(pairs, scale);
    }
  }
  return hsum8(unit);
}
#endif

#ifdef FEDGE_QUANT_K_NEON

// Q4_K: units 2c and 2c + 1 are the low and high nibbles of qs[32c..], used
// as signed bytes (0..15). Lane u of lo (units 0-3) and hi (units 4-7) is
// unit u's sum.
inline void unit_sums_neon(const BlockQ4_K& w, const BlockQ8_0* a, int32x4_t& lo, int32x4_t& hi) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  int32x4_t unit[kUnits];
  for (int c = 0; c < kUnits / 2; ++c) {
    int32x4_t lo_sum = vdupq_n_s32(0), hi_sum = vdupq_n_s32(0);
    for (int k = 0; k < 2; ++k) {
      const uint8x16_t packed = vld1q_u8(w.qs + 32 * c + 16 * k);
      const int8x16_t lo_nib = vreinterpretq_s8_u8(vandq_u8(packed, low4));
      const int8x16_t hi_nib = vreinterpretq_s8_u8(vshrq_n_u8(packed, 4));
      lo_sum = dot_i8x16(lo_sum, lo_nib, vld1q_s8(a[2 * c].qs + 16 * k));
      hi_sum = dot_i8x16(hi_sum, hi_nib, vld1q_s8(a[2 * c + 1].qs + 16 * k));
    }
    unit[2 * c] = lo_sum;
    unit[2 * c + 1] = hi_sum;
  }
  lo = vpaddq_s32(vpaddq_s32(unit[0], unit[1]), vpaddq_s32(unit[2], unit[3]));
  hi = vpaddq_s32(vpaddq_s32(unit[4], unit[5]), vpaddq_s32(unit[6], unit[7]));
}

// Q6_K: the values unpacked as the AVX2 path does, minus 32 (-32..31 as
// signed bytes); each 16-weight half's partial sums are weighed by its scale
// (at most 4 * 32 * 128 * 128 per int32 lane), then the units reduced as Q4_K's.
inline void unit_sums_neon(const BlockQ6_K& w, const BlockQ8_0* a, int32x4_t& lo, int32x4_t& hi) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F), two_bits = vdupq_n_u8(3);
  const int8x16_t bias = vdupq_n_s8(32);
  int32x4_t unit[kUnits];
  for (int h = 0; h < 2; ++h)
    for (int p = 0; p < 4; ++p) {
      const int u = 4 * h + p;
      int32x4_t half[2];
      for (int k = 0; k < 2; ++k) {
        const uint8x16_t packed = vld1q_u8(w.ql + 64 * h + 32 * (p & 1) + 16 * k);
        const uint8x16_t low = p >> 1 ? vshrq_n_u8(packed, 4) : vandq_u8(packed, low4);
        const uint8x16_t bits = vshlq_u8(vld1q_u8(w.qh + 32 * h + 16 * k), vdupq_n_s8(static_cast<std::int8_t>(-2 * p)));
        const uint8x16_t q = vorrq_u8(low, vshlq_n_u8(vandq_u8(bits, two_bits), 4));
        const int8x16_t centered = vsubq_s8(vreinterpretq_s8_u8(q), bias);
        half[k] = dot_i8x16(vdupq_n_s32(0), centered, vld1q_s8(a[u].qs + 16 * k));
      }
      unit[u] = vmlaq_n_s32(vmulq_n_s32(half[0], w.scales[2 * u]), half[1], w.scales[2 * u + 1]);
    }
  lo = vpaddq_s32(vpaddq_s32(unit[0], unit[1]), vpaddq_s32(unit[2], unit[3]));
  hi = vpaddq_s32(vpaddq_s32(unit[4], unit[5]), vpaddq_s32(unit[6], unit[7]));
}
#endif

// ---------------------------------------------------------------- the float part

static_assert(std::endian::native == std::endian::little, "the scale unpacking reads little-endian words");

// Q4_K's 8 scales and 8 mins (byte u = unit u's, 0..63) from the 12-byte
// packing, four at a time in 32-bit words: scales[0..3] and mins[0..3] are
// the low 6 bits of bytes 0-3 and 4-7; scales[4..7] and mins[4..7] are the
// low and high nibbles of bytes 8-11 with bytes 0-3's and 4-7's top 2 bits
// on top.
inline void unpack_scales_mins_q4_k(const std::uint8_t* q, std::uint64_t& scales, std::uint64_t& mins) {
  std::uint32_t v[3];
  std::memcpy(v, q, sizeof v);
  constexpr std::uint32_t low6 = 0x3F3F3F3F, low4 = 0x0F0F0F0F, low2 = 0x03030303;
  const std::uint32_t sc_hi = (v[2] & low4) | ((v[0] >> 6) & low2) << 4;
  const std::uint32_t m_hi = ((v[2] >> 4) & low4) | ((v[1] >> 6) & low2) << 4;
  scales = (v[0] & low6) | static_cast<std::uint64_t>(sc_hi) << 32;
  mins = (v[1] & low6) | static_cast<std::uint64_t>(m_hi) << 32;
}

#ifdef FEDGE_QUANT_K_X86
// The float part eight units at once, lane u = unit u = accumulator u: the
// portable path's multiplies, subtracts and adds (no FMA), the f16 scales
// widened by F16C in registers (exact, as the table is, whose lookups miss L1).
__attribute__((target("avx2,f16c"))) inline __m256 act_scales_avx2(const BlockQ8_0* a) {
  const __m128i bits = _mm_setr_epi16(static_cast<short>(a[0].d), static_cast<short>(a[1].d),
                                      static_cast<short>(a[2].d), static_cast<short>(a[3].d),
                                      static_cast<short>(a[4].d), static_cast<short>(a[5].d),
                                      static_cast<short>(a[6].d), static_cast<short>(a[7].d));
  return _mm256_cvtph_ps(bits);
}

__attribute__((target("avx2"))) inline __m256 bytes_to_ps(std::uint64_t bytes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(bytes))));
}

// One super-block's float part in 8 lanes (lane u = unit u), the portable
// path's multiplies and adds in its order (no FMA): the AVX2 and AVX-512
// paths differ only in how they get the unit sums.
__attribute__((target("avx2,f16c"))) inline __m256 add_super(__m256 acc, __m256i units, const BlockQ4_K& w,
                                                             const BlockQ8_0* as, const std::int32_t* asum) {
  const __m256 isum = _mm256_cvtepi32_ps(units);
  std::uint64_t sc, m;
  unpack_scales_mins_q4_k(w.scales, sc, m);
  const __m256 ds = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w.d)), bytes_to_ps(sc));
  const __m256 dm = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w.dmin)), bytes_to_ps(m));
  const __m256 bsum = _mm256_cvtepi32_ps(load32(asum));
  const __m256 inner = _mm256_sub_ps(_mm256_mul_ps(ds, isum), _mm256_mul_ps(dm, bsum));
  return _mm256_add_ps(acc, _mm256_mul_ps(act_scales_avx2(as), inner));
}

__attribute__((target("avx2,f16c"))) inline __m256 add_super(__m256 acc, __m256i units, const BlockQ6_K& w,
                                                             const BlockQ8_0* as, const std::int32_t*) {
  const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w.d)), act_scales_avx2(as));
  return _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(units)));
}

// Super-block s's activation byte sums (Q6_K's rows get none: null).
inline const std::int32_t* sums_at(const std::int32_t* asum, std::int64_t s) {
  return asum ? asum + kUnits * s : nullptr;
}

__attribute__((target("avx2"))) inline float sum_acc(__m256 acc) {
  float lanes[kLanes];
  _mm256_storeu_ps(lanes, acc);
  return sum_lanes(lanes);
}

template <class Block>
__attribute__((target("avx2,f16c"))) float row_dot_avx2(const Block* w, std::int64_t supers, const BlockQ8_0* a,
                                                        const std::int32_t* asum) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t s = 0; s < supers; ++s)
    acc = add_super(acc, unit_sums_avx2(w[s], a + kUnits * s), w[s], a + kUnits * s, sums_at(asum, s));
  return sum_acc(acc);
}
#endif

#ifdef FEDGE_QUANT_K_X86
// ---------------------------------------------------------------- AVX-512 (VNNI)
#define FEDGE_QUANT_K_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,f16c"

// Units u and u + 4 side by side: p's 32 bytes in the low half, q's in the high.
__attribute__((target(FEDGE_QUANT_K_AVX512))) inline __m512i load_pair(const void* p, const void* q) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(static_cast<const __m256i*>(p))),
                            _mm256_loadu_si256(static_cast<const __m256i*>(q)), 1);
}

// v_i holds units i (low 256 bits) and i + 4 (high), 8 dword partial sums
// each. Result 128-bit lane j, dword i: v_i's lane j's sum, so lanes 0 and 1
// are the first and last 16 weights of units 0-3, lanes 2 and 3 those of 4-7.
__attribute__((target(FEDGE_QUANT_K_AVX512))) inline __m512i halves_avx512(__m512i v0, __m512i v1, __m512i v2,
                                                                            __m512i v3) {
  const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
  const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

// The halves' sums added per unit: lane u is unit u's sum.
__attribute__((target(FEDGE_QUANT_K_AVX512))) inline __m256i units_avx512(__m512i halves) {
  const __m512i paired = _mm512_shuffle_i32x4(halves, halves, _MM_SHUFFLE(3, 1, 2, 0));  // lanes 0, 2, 1, 3
  return _mm256_add_epi32(_mm512_castsi512_si256(paired), _mm512_extracti64x4_epi64(paired, 1));
}

// Q4_K: qs[32c..] holds units 2c (low nibbles) and 2c + 1 (high). With
// chunks c and c + 2 side by side, the low nibbles are units (2c, 2c + 4)
// and the high ones (2c + 1, 2c + 5). vpdpbusd takes the nibbles (0..15) as
// its unsigned operand: every sum is exact.
__attribute__((target(FEDGE_QUANT_K_AVX512))) inline __m256i unit_sums_avx512(const BlockQ4_K& w, const BlockQ8_0* a) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i w02 = load_pair(w.qs, w.qs + 64), w13 = load_pair(w.qs + 32, w.qs + 96);
  const __m512i v0 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(w02, low4), load_pair(a[0].qs, a[4].qs));
  const __m512i v1 =
      _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(w02, 4), low4), load_pair(a[1].qs, a[5].qs));
  const __m512i v2 = _mm512_dpbusd_epi32(zero, _mm512_and_si512(w13, low4), load_pair(a[2].qs, a[6].qs));
  const __m512i v3 =
      _mm512_dpbusd_epi32(zero, _mm512_and_si512(_mm512_srli_epi16(w13, 4), low4), load_pair(a[3].qs, a[7].qs));
  return units_avx512(halves_avx512(v0, v1, v2, v3));
}

// Q6_K: unit 4h + p as in unit_sums_avx2, units p and p + 4 side by side
// (h = 0 low, h = 1 high; qh's 64 bytes are exactly that pair). vpdpbusd of
// q (0..63) and of 32 with the activations give sum q a and 32 sum a per 4
// bytes (exact); their difference is sum (q - 32) a. Each 16-weight half is a
// 128-bit lane, so after halves_avx512 one multiply by the scales (lane j,
// dword i: scales[2i + (j & 1) + 8 (j >> 1)]) weighs every half (|.| <=
// 16 * 32 * 128 * 128), and the halves are added per unit.
__attribute__((target(FEDGE_QUANT_K_AVX512))) inline __m256i unit_sums_avx512(const BlockQ6_K& w, const BlockQ8_0* a) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i bias = _mm512_set1_epi8(32);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i ql[2] = {load_pair(w.ql, w.ql + 64), load_pair(w.ql + 32, w.ql + 96)};
  const __m512i qh = _mm512_loadu_si512(w.qh);
  __m512i v[4];
#pragma GCC unroll 4
  for (int p = 0; p < 4; ++p) {
    const __m512i low = _mm512_and_si512(p >> 1 ? _mm512_srli_epi16(ql[p & 1], 4) : ql[p & 1], low4);
    const __m512i bits = _mm512_and_si512(qh, _mm512_set1_epi8(static_cast<char>(3 << (2 * p))));
    const __m512i high = p == 3 ? _mm512_srli_epi16(bits, 2) : p == 2 ? bits : _mm512_slli_epi16(bits, 4 - 2 * p);
    const __m512i q = _mm512_or_si512(low, high);
    const __m512i act = load_pair(a[p].qs, a[p + 4].qs);
    v[p] = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, q, act), _mm512_dpbusd_epi32(zero, bias, act));
  }
  const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  const __m512i scales =
      _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales)), order));
  return units_avx512(_mm512_mullo_epi32(halves_avx512(v[0], v[1], v[2], v[3]), scales));
}

// The float part is row_dot_avx2's (add_super).
template <class Block>
__attribute__((target(FEDGE_QUANT_K_AVX512))) float row_dot_avx512(const Block* w, std::int64_t supers,
                                                                    const BlockQ8_0* a, const std::int32_t* asum) {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t s = 0; s < supers; ++s)
    acc = add_super(acc, unit_sums_avx512(w[s], a + kUnits * s), w[s], a + kUnits * s, sums_at(asum, s));
  return sum_acc(acc);
}
#endif

#ifdef FEDGE_QUANT_K_NEON
// The same on NEON, units 0-3 and 4-7 as two vectors (vmulq, vsubq and vaddq,
// never vfmaq); the f16 scales widen exactly in registers.
inline float32x4_t f16_dup(std::uint16_t bits) { return vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(bits))); }

inline float16x8_t act_scales_neon(const BlockQ8_0* a) {
  std::uint16_t bits[kUnits];
  for (int u = 0; u < kUnits; ++u) bits[u] = a[u].d;
  return vreinterpretq_f16_u16(vld1q_u16(bits));
}

float row_dot_neon(const BlockQ4_K* w, std::int64_t supers, const BlockQ8_0* a, const std::int32_t* asum) {
  float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
  for (std::int64_t s = 0; s < supers; ++s) {
    const BlockQ8_0* as = a + kUnits * s;
    int32x4_t isum0, isum1;
    unit_sums_neon(w[s], as, isum0, isum1);
    std::uint64_t sc, m;
    unpack_scales_mins_q4_k(w[s].scales, sc, m);
    const uint16x8_t sc16 = vmovl_u8(vcreate_u8(sc)), m16 = vmovl_u8(vcreate_u8(m));
    const float32x4_t d = f16_dup(w[s].d), dmin = f16_dup(w[s].dmin);
    const float32x4_t ds0 = vmulq_f32(d, vcvtq_f32_u32(vmovl_u16(vget_low_u16(sc16))));
    const float32x4_t ds1 = vmulq_f32(d, vcvtq_f32_u32(vmovl_high_u16(sc16)));
    const float32x4_t dm0 = vmulq_f32(dmin, vcvtq_f32_u32(vmovl_u16(vget_low_u16(m16))));
    const float32x4_t dm1 = vmulq_f32(dmin, vcvtq_f32_u32(vmovl_high_u16(m16)));
    const float32x4_t inner0 = vsubq_f32(vmulq_f32(ds0, vcvtq_f32_s32(isum0)),
                                         vmulq_f32(dm0, vcvtq_f32_s32(vld1q_s32(asum + kUnits * s))));
    const float32x4_t inner1 = vsubq_f32(vmulq_f32(ds1, vcvtq_f32_s32(isum1)),
                                         vmulq_f32(dm1, vcvtq_f32_s32(vld1q_s32(asum + kUnits * s + 4))));
    const float16x8_t ad = act_scales_neon(as);
    acc0 = vaddq_f32(acc0, vmulq_f32(vcvt_f32_f16(vget_low_f16(ad)), inner0));
    acc1 = vaddq_f32(acc1, vmulq_f32(vcvt_high_f32_f16(ad), inner1));
  }
  float lanes[kLanes];
  vst1q_f32(lanes, acc0);
  vst1q_f32(lanes + 4, acc1);
  return sum_lanes(lanes);
}

float row_dot_neon(const BlockQ6_K* w, std::int64_t supers, const BlockQ8_0* a) {
  float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
  for (std::int64_t s = 0; s < supers; ++s) {
    const BlockQ8_0* as = a + kUnits * s;
    int32x4_t isum0, isum1;
    unit_sums_neon(w[s], as, isum0, isum1);
    const float32x4_t d = f16_dup(w[s].d);
    const float16x8_t ad = act_scales_neon(as);
    acc0 = vaddq_f32(acc0, vmulq_f32(vmulq_f32(d, vcvt_f32_f16(vget_low_f16(ad))), vcvtq_f32_s32(isum0)));
    acc1 = vaddq_f32(acc1, vmulq_f32(vmulq_f32(d, vcvt_high_f32_f16(ad)), vcvtq_f32_s32(isum1)));
  }
  float lanes[kLanes];
  vst1q_f32(lanes, acc0);
  vst1q_f32(lanes + 4, acc1);
  return sum_lanes(lanes);
}
#endif

}  // namespace

// kAvx512 (only on CPUs with every FEDGE_QUANT_K_AVX512 feature) runs the
// vpdpbusd unit sums. The portable path is the reference the SIMD paths reproduce bit for bit.
float row_dot_k(const BlockQ4_K* w, std::int64_t supers, const BlockQ8_0* a, const std::int32_t* asum, Isa use) {
#ifdef FEDGE_QUANT_K_X86
  if (use == Isa::kAvx512) return row_dot_avx512(w, supers, a, asum);
  if (use == Isa::kAvx2) return row_dot_avx2(w, supers, a, asum);
#endif
#ifdef FEDGE_QUANT_K_NEON
  if (use == Isa::kNeon) return row_dot_neon(w, supers, a, asum);
#endif
  (void)use;
  const float* half = f16_table();
  float acc[kLanes] = {};
  std::int32_t isum[kUnits];
  for (std::int64_t s = 0; s < supers; ++s) {
    unit_sums_scalar(w[s], a + kUnits * s, isum);
    const float d = half[w[s].d], dmin = half[w[s].dmin];
    for (int u = 0; u < kUnits; ++u) {
      int sc, m;
      scale_min_q4_k(w[s].scales, u, sc, m);
      const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
      const float inner = ds * static_cast<float>(isum[u]) - dm * static_cast<float>(asum[kUnits * s + u]);
      acc[u] += half[a[kUnits * s + u].d] * inner;  // unit u of a super-block is block 8s + u: lane u
    }
  }
  return sum_lanes(acc);
}

float row_dot_k(const BlockQ6_K* w, std::int64_t supers, const BlockQ8_0* a, const std::int32_t* asum, Isa use) {
  (void)asum;
#ifdef FEDGE_QUANT_K_X86
  if (use == Isa::kAvx512) return row_dot_avx512(w, supers, a, nullptr);
  if (use == Isa::kAvx2) return row_dot_avx2(w, supers, a, nullptr);
#endif
#ifdef FEDGE_QUANT_K_NEON
  if (use == Isa::kNeon) return row_dot_neon(w, supers, a);
#endif
  (void)use;
  const float* half = f16_table();
  float acc[kLanes] = {};
  std::int32_t isum[kUnits];
  for (std::int64_t s = 0; s < supers; ++s) {
    unit_sums_scalar(w[s], a + kUnits * s, isum);
    const float d = half[w[s].d];
    for (int u = 0; u < kUnits; ++u) acc[u] += (d * half[a[kUnits * s + u].d]) * static_cast<float>(isum[u]);
  }
  return sum_lanes(acc);
}

}  // namespace detail

using detail::check_finite;
using detail::check_length;

void quantize_row_q4_k(const float* x, BlockQ4_K* y, std::int64_t n) {
  check_length(n, kSuperBlockSize, "quantize q4_k");
  check_finite(x, n, "quantize q4_k");
  for (std::int64_t s = 0; s < n / kSuperBlockSize; ++s) detail::quantize_super_q4_k(x + s * kSuperBlockSize, y[s]);
}

void quantize_row_q6_k(const float* x, BlockQ6_K* y, std::int64_t n) {
  check_length(n, kSuperBlockSize, "quantize q6_k");
  check_finite(x, n, "quantize q6_k");
  for (std::int64_t s = 0; s < n / kSuperBlockSize; ++s) detail::quantize_super_q6_k(x + s * kSuperBlockSize, y[s]);
}

void dequantize_row_q4_k(const BlockQ4_K* x, float* y, std::int64_t n) {
  check_length(n, kSuperBlockSize, "dequantize q4_k");
  for (std::int64_t s = 0; s < n / kSuperBlockSize; ++s) {
    const float d = f16_to_f32(x[s].d), dmin = f16_to_f32(x[s].dmin);
    for (int u = 0; u < detail::kUnits; ++u) {
      int sc, m;
      detail::scale_min_q4_k(x[s].scales, u, sc, m);
      const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
      for (int l = 0; l < kBlockSize; ++l)
        y[s * kSuperBlockSize + kBlockSize * u + l] = ds * static_cast<float>(detail::nibble_q4_k(x[s], u, l)) - dm;
    }
  }
}

void dequantize_row_q6_k(const BlockQ6_K* x, float* y, std::int64_t n) {
  check_length(n, kSuperBlockSize, "dequantize q6_k");
  for (std::int64_t s = 0; s < n / kSuperBlockSize; ++s) {
    const float d = f16_to_f32(x[s].d);
    for (int i = 0; i < kSuperBlockSize; ++i)
      y[s * kSuperBlockSize + i] =
          d * static_cast<float>(x[s].scales[i / 16]) * static_cast<float>(detail::value_q6_k(x[s], i) - 32);
  }
}

}  // namespace fedge::inference::quant
