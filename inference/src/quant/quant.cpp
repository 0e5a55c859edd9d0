#include "fedge/inference/quant.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "fedge/common/cpu_features.h"
#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"  // f16 <-> f32
#include "fedge/inference/kernels_info.h"  // quant::available_isas
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12 flags the AVX-512 intrinsics headers' own undefined-vector idiom.
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"  // the fuzz build's clang lacks the next one
#endif
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define FEDGE_QUANT_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define FEDGE_QUANT_NEON 1
#endif

namespace fedge::inference::quant {
namespace {

std::atomic<int>& prefetch_setting() {
  static std::atomic<int> bytes{4096};
  return bytes;
}

using detail::Isa;
using detail::kLanes;
using detail::sum_lanes;

// Blocks of each type: weights per block, and the type's name.
template <class Block>
constexpr int kWeightsPer = std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ6_K> ? kSuperBlockSize
                                                                                                  : kBlockSize;
template <class Block>
constexpr bool kIsSuperBlock = kWeightsPer<Block> == kSuperBlockSize;

bool cpu_has(Isa want) {
  switch (want) {
    case Isa::kScalar: return true;
#ifdef FEDGE_QUANT_NEON
    case Isa::kNeon: return true;  // Advanced SIMD is part of every AArch64 CPU
#endif
#ifdef FEDGE_QUANT_X86
    case Isa::kAvx2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2") && cpu_has_f16c();
    case Isa::kAvx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#endif
    default: return false;
  }
}

constexpr Isa kFastestFirst[] = {Isa::kAvx512, Isa::kAvx2, Isa::kNeon, Isa::kScalar};

Isa detect() {
#if defined(FEDGE_PORTABLE) && FEDGE_PORTABLE
  return Isa::kScalar;
#else
  for (Isa best : kFastestFirst)
    if (cpu_has(best)) return best;
  return Isa::kScalar;
#endif
}

const char* name_of(Isa level) {
  switch (level) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kNeon: return "neon";
    default: return "portable";
  }
}

std::atomic<Isa>& isa() {
  static std::atomic<Isa> chosen{detect()};
  return chosen;
}

void check_length(std::int64_t n, const char* what) { detail::check_length(n, kBlockSize, what); }
using detail::check_finite;

// Without a pool installed (set_parallel_for), chunks go to OpenMP.
void openmp_for(int tasks, void (*fn)(const void*, int), const void* ctx, bool parallel) {
  if (!parallel || tasks < 2 || omp_get_max_threads() < 2) {  // an inactive region still costs microseconds
    for (int t = 0; t < tasks; ++t) fn(ctx, t);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int t = 0; t < tasks; ++t) fn(ctx, t);
}

std::atomic<ParallelFor>& parallel_runner() {
  static std::atomic<ParallelFor> runner{&openmp_for};
  return runner;
}

// ---- per-block integer dot products: the only instruction-set-specific part ----

std::int32_t block_dot_q8_scalar(const std::int8_t* w, const std::int8_t* a) {
  std::int32_t s = 0;
  for (int i = 0; i < kBlockSize; ++i) s += static_cast<std::int32_t>(w[i]) * a[i];
  return s;
}

std::int32_t block_dot_q4_scalar(const std::uint8_t* w, const std::int8_t* a) {
  std::int32_t s = 0;
  for (int j = 0; j < kBlockSize / 2; ++j) {
    s += (static_cast<std::int32_t>(w[j] & 0x0F) - 8) * a[j];
    s += (static_cast<std::int32_t>(w[j] >> 4) - 8) * a[j + kBlockSize / 2];
  }
  return s;
}

// Q5_0's weight i (0..31) as its five-bit value minus 16.
inline int value_q5_0(const BlockQ5_0& b, int i) {
  const std::uint32_t high = static_cast<std::uint32_t>(b.qh[0]) | static_cast<std::uint32_t>(b.qh[1]) << 8 |
                             static_cast<std::uint32_t>(b.qh[2]) << 16 | static_cast<std::uint32_t>(b.qh[3]) << 24;
  const int low = i < kBlockSize / 2 ? b.qs[i] & 0x0F : b.qs[i - kBlockSize / 2] >> 4;
  return (low | static_cast<int>((high >> i) & 1) << 4) - 16;
}

std::int32_t block_dot_q5_scalar(const BlockQ5_0& w, const std::int8_t* a) {
  std::int32_t s = 0;
  for (int i = 0; i < kBlockSize; ++i) s += value_q5_0(w, i) * a[i];
  return s;
}

#ifdef FEDGE_QUANT_X86
// 32 signed bytes times 32 signed bytes, as 8 partial int32 sums: maddubs
// needs an unsigned left operand, so multiply |w| by a with w's sign moved
// onto it (|w| <= 128 and |a| <= 127 keep each pair sum inside int16).
__attribute__((target("avx2"))) inline __m256i dot_i8x32(__m256i w, __m256i a) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

__attribute__((target("avx2"))) inline __m256i load_q8(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// Weights 0..15 from the low nibbles, 16..31 from the high ones, minus 8.
__attribute__((target("avx2"))) inline __m256i load_q4(const BlockQ4_0& b) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
  return _mm256_sub_epi8(_mm256_set_m128i(high, low), _mm256_set1_epi8(8));
}

// Q5_0: Q4_0's nibbles plus each weight's fifth bit (qh bit i -> 0x10 of
// byte i), minus 16.
__attribute__((target("avx2"))) inline __m256i load_q5(const BlockQ5_0& b) {
  std::uint32_t bits;
  std::memcpy(&bits, b.qh, 4);
  // Byte i of the broadcast gets qh's byte i / 8; the mask picks bit i % 8.
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                                             _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL,
                                                                0x0303030303030303LL));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
  const __m128i hi4 = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
  return _mm256_sub_epi8(_mm256_or_si256(_mm256_set_m128i(hi4, low), high), _mm256_set1_epi8(16));
}

template <class Block>
__attribute__((target("avx2"))) inline __m256i partial_dot(const Block& w, const BlockQ8_0& a) {
  if constexpr (std::is_same_v<Block, BlockQ8_0>) return dot_i8x32(load_q8(w), load_q8(a));
  else if constexpr (std::is_same_v<Block, BlockQ5_0>) return dot_i8x32(load_q5(w), load_q8(a));
  else return dot_i8x32(load_q4(w), load_q8(a));
}

__attribute__((target("avx2"))) inline std::int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Four blocks' partial sums reduced together: after two hadds each 128-bit
// lane holds one lane-half of each block's sum.
__attribute__((target("avx2"))) inline __m128i hsum4(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(q0, q1), _mm256_hadd_epi32(q2, q3));
  return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

template <class Block>
__attribute__((target("avx2"))) void block_dots_avx2(const Block* w, const BlockQ8_0* a, int count,
                                                     std::int32_t* out) {
  int i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m128i s = hsum4(partial_dot(w[i], a[i]), partial_dot(w[i + 1], a[i + 1]), partial_dot(w[i + 2], a[i + 2]),
                            partial_dot(w[i + 3], a[i + 3]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), s);
  }
  for (; i < count; ++i) out[i] = hsum(partial_dot(w[i], a[i]));
}
#endif

#ifdef FEDGE_QUANT_NEON
using detail::dot_i8x16;

inline std::int32_t block_dot_neon(const BlockQ8_0& w, const BlockQ8_0& a) {
  const int32x4_t s = dot_i8x16(vdupq_n_s32(0), vld1q_s8(w.qs), vld1q_s8(a.qs));
  return vaddvq_s32(dot_i8x16(s, vld1q_s8(w.qs + 16), vld1q_s8(a.qs + 16)));
}

// Weights 0..15 are the low nibbles, 16..31 the high ones, each minus 8.
inline std::int32_t block_dot_neon(const BlockQ4_0& w, const BlockQ8_0& a) {
  const uint8x16_t packed = vld1q_u8(w.qs);
  const int8x16_t eight = vdupq_n_s8(8);
  const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))), eight);
  const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
  const int32x4_t s = dot_i8x16(vdupq_n_s32(0), lo, vld1q_s8(a.qs));
  return vaddvq_s32(dot_i8x16(s, hi, vld1q_s8(a.qs + 16)));
}

// Q5_0: the weights as bytes (-16..15), then Q8_0's dot. Byte i of a
// 16-weight half gets qh's byte i / 8 (weights 0-15: qh[0..1], 16-31:
// qh[2..3]) and vtst picks its bit i % 8; a weight is its nibble less 16
// where that fifth bit is clear (bytes wrap: the same as (nibble | bit << 4)
// - 16 read as signed).
inline std::int32_t block_dot_neon(const BlockQ5_0& w, const BlockQ8_0& a) {
  const uint8x16_t bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ULL));
  const uint8x16_t sixteen = vdupq_n_u8(0x10);
  const uint8x16_t lo_bits = vcombine_u8(vdup_n_u8(w.qh[0]), vdup_n_u8(w.qh[1]));
  const uint8x16_t hi_bits = vcombine_u8(vdup_n_u8(w.qh[2]), vdup_n_u8(w.qh[3]));
  const uint8x16_t packed = vld1q_u8(w.qs);
  const uint8x16_t lo = vsubq_u8(vandq_u8(packed, vdupq_n_u8(0x0F)), vbicq_u8(sixteen, vtstq_u8(lo_bits, bit)));
  const uint8x16_t hi = vsubq_u8(vshrq_n_u8(packed, 4), vbicq_u8(sixteen, vtstq_u8(hi_bits, bit)));
  const int32x4_t s = dot_i8x16(vdupq_n_s32(0), vreinterpretq_s8_u8(lo), vld1q_s8(a.qs));
  return vaddvq_s32(dot_i8x16(s, vreinterpretq_s8_u8(hi), vld1q_s8(a.qs + 16)));
}
#endif

template <class Block>
void block_dots(const Block* w, const BlockQ8_0* a, int count, std::int32_t* out, Isa use) {
#ifdef FEDGE_QUANT_X86
  if (use == Isa::kAvx2) return block_dots_avx2(w, a, count, out);
#endif
#ifdef FEDGE_QUANT_NEON
  if (use == Isa::kNeon) {
    for (int i = 0; i < count; ++i) out[i] = block_dot_neon(w[i], a[i]);
    return;
  }
#endif
  (void)use;
  for (int i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<Block, BlockQ8_0>) out[i] = block_dot_q8_scalar(w[i].qs, a[i].qs);
    else if constexpr (std::is_same_v<Block, BlockQ5_0>) out[i] = block_dot_q5_scalar(w[i], a[i].qs);
    else out[i] = block_dot_q4_scalar(w[i].qs, a[i].qs);
  }
}

// The float part of a row: block b's scaled integer sum goes to accumulator
// b % 8, and the 8 accumulators are added in one fixed tree at the end. The
// order is the same on every path (so the bits are), and 8 independent
// chains do not wait on one add's latency per block.

template <class Block>
void accumulate_scalar(const float* half, const Block* w, const BlockQ8_0* a, const std::int32_t* isum, int count,
                       float* acc) {
  for (int i = 0; i < count; ++i) {
    const float scale = half[w[i].d] * half[a[i].d];
    acc[i % kLanes] += scale * static_cast<float>(isum[i]);
  }
}

#ifdef FEDGE_QUANT_X86
// The same multiplies and adds, eight lanes at once (no FMA: the scalar path
// rounds twice). Scales are converted by F16C in registers (exact, as the
// table is): the 256 KB table's lookups miss L1 on every block.
template <class Block>
__attribute__((target("avx2,f16c"))) void accumulate_avx2(const float* half, const Block* w, const BlockQ8_0* a,
                                                          const std::int32_t* isum, int count, float* acc) {
  __m256 lanes = _mm256_loadu_ps(acc);
  int i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    alignas(16) std::uint16_t hw[kLanes], ha[kLanes];
#pragma GCC unroll 8
    for (int k = 0; k < kLanes; ++k) {
      hw[k] = w[i + k].d;
      ha[k] = a[i + k].d;
    }
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(hw))),
                                       _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(ha))));
    const __m256 sums = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(isum + i)));
    lanes = _mm256_add_ps(lanes, _mm256_mul_ps(scale, sums));
  }
  _mm256_storeu_ps(acc, lanes);
  accumulate_scalar(half, w + i, a + i, isum + i, count - i, acc);  // i is a multiple of 8: lanes line up
}
#endif

#ifdef FEDGE_QUANT_NEON
// The scalar path's multiplies and adds, lanes 0-3 and 4-7 as two vectors
// (separate multiply and add: vmulq then vaddq, never vfmaq). The f16 scales
// widen exactly in registers.
template <class Block>
void accumulate_neon(const float* half, const Block* w, const BlockQ8_0* a, const std::int32_t* isum, int count,
                     float* acc) {
  float32x4_t lanes0 = vld1q_f32(acc), lanes1 = vld1q_f32(acc + 4);
  int i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    std::uint16_t hw[kLanes], ha[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      hw[k] = w[i + k].d;
      ha[k] = a[i + k].d;
    }
    const float16x8_t fw = vreinterpretq_f16_u16(vld1q_u16(hw)), fa = vreinterpretq_f16_u16(vld1q_u16(ha));
    const float32x4_t scale0 = vmulq_f32(vcvt_f32_f16(vget_low_f16(fw)), vcvt_f32_f16(vget_low_f16(fa)));
    const float32x4_t scale1 = vmulq_f32(vcvt_high_f32_f16(fw), vcvt_high_f32_f16(fa));
    lanes0 = vaddq_f32(lanes0, vmulq_f32(scale0, vcvtq_f32_s32(vld1q_s32(isum + i))));
    lanes1 = vaddq_f32(lanes1, vmulq_f32(scale1, vcvtq_f32_s32(vld1q_s32(isum + i + 4))));
  }
  vst1q_f32(acc, lanes0);
  vst1q_f32(acc + 4, lanes1);
  accumulate_scalar(half, w + i, a + i, isum + i, count - i, acc);  // i is a multiple of 8: lanes line up
}
#endif

template <class Block>
float row_dot(std::int64_t blocks, const Block* w, const BlockQ8_0* a, Isa use) {
  const float* half = detail::f16_table();
  constexpr int kGroup = 16;  // a multiple of kLanes, so lane = block % 8 across groups
  std::int32_t isum[kGroup];
  float acc[kLanes] = {};
  for (std::int64_t b = 0; b < blocks; b += kGroup) {
    const int count = static_cast<int>(std::min<std::int64_t>(kGroup, blocks - b));
    block_dots(w + b, a + b, count, isum, use);
#ifdef FEDGE_QUANT_X86
    if (use == Isa::kAvx2) {
      accumulate_avx2(half, w + b, a + b, isum, count, acc);
      continue;
    }
#endif
#ifdef FEDGE_QUANT_NEON
    if (use == Isa::kNeon) {
      accumulate_neon(half, w + b, a + b, isum, count, acc);
      continue;
    }
#endif
    accumulate_scalar(half, w + b, a + b, isum, count, acc);
  }
  return sum_lanes(acc);
}

// ---- AVX-512 (F, BW, VL, DQ, VNNI, VBMI: Ice Lake, Zen 4 and later) ----
//
// An activation row is laid out once for all the weight rows it meets, so
// that a weight row is read, unpacked and dotted with few instructions:
// vpdpbusd multiplies unsigned weight bytes by signed activation bytes, so
// Q8_0 weights are biased by +128 (w ^ 0x80), Q4_0's nibbles are used as
// they are (0..15 instead of -8..7) and Q5_0's five bits too (0..31 instead
// of -16..15); the bias times the block's activation sum is subtracted
// afterwards. Each block's integer sum stays exact, so the
// float part (the same as the scalar path's) gives the same bits.
constexpr int kWide = 16;  // blocks per AVX-512 step (16 f32 lanes)

struct PreparedRow {
  std::vector<std::int8_t> qs;     // 32 bytes a block, ordered for the weight type
  std::vector<float> scale;        // the block's f16 scale as f32
  std::vector<std::int32_t> bias;  // 128 (Q8_0), 8 (Q4_0) or 16 (Q5_0) times the block's byte sum
};

std::int64_t padded_blocks(std::int64_t blocks) { return (blocks + kWide - 1) / kWide * kWide; }

// Q8_0 weights: the activation's bytes in block order. Q4_0 and Q5_0
// weights: per group of 4 blocks, the 4 blocks' first halves (they meet the low nibbles)
// and then their 4 second halves (the high nibbles). Zero blocks pad the row
// to a whole step, so a partial step adds nothing.
template <class Block>
void prepare_row(const BlockQ8_0* a, std::int64_t blocks, PreparedRow& out) {
  const std::int64_t padded = padded_blocks(blocks);
  out.qs.assign(static_cast<std::size_t>(padded * kBlockSize), 0);
  out.scale.assign(static_cast<std::size_t>(padded), 0.0F);
  out.bias.assign(static_cast<std::size_t>(padded), 0);
  constexpr bool kQ8 = std::is_same_v<Block, BlockQ8_0>;
  constexpr std::int32_t kBias = kQ8 ? 128 : std::is_same_v<Block, BlockQ5_0> ? 16 : 8;
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::int32_t sum = 0;
    for (int i = 0; i < kBlockSize; ++i) sum += a[b].qs[i];
    out.bias[b] = kBias * sum;
    out.scale[b] = f16_to_f32(a[b].d);
    constexpr int kHalf = kBlockSize / 2;
    if constexpr (kQ8) {
      std::memcpy(&out.qs[b * kBlockSize], a[b].qs, kBlockSize);
    } else {
      std::int8_t* quad = &out.qs[(b / 4) * 4 * kBlockSize];
      std::memcpy(quad + (b % 4) * kHalf, a[b].qs, kHalf);
      std::memcpy(quad + 4 * kHalf + (b % 4) * kHalf, a[b].qs + kHalf, kHalf);
    }
  }
}

#ifdef FEDGE_QUANT_X86
#define FEDGE_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,f16c"

// Per 128-bit lane q of v0..v3: result lane q holds the four sums of lane q
// of v0, v1, v2, v3 (dword 4q + p = sum of v_p's lane q).
__attribute__((target(FEDGE_AVX512))) inline __m512i reduce_lanes(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i a = _mm512_add_epi32(_mm512_unpacklo_epi32(v0, v1), _mm512_unpackhi_epi32(v0, v1));
  const __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi32(v2, v3), _mm512_unpackhi_epi32(v2, v3));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
}

__attribute__((target(FEDGE_AVX512))) inline __mmask64 first_bytes(int n) {
  return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

// Output byte 16k + i of a Q4_0 quad is nibble byte i of its block k (at
// 18k + 2 + i of the quad's 72 bytes).
alignas(64) constexpr std::uint8_t kQuadNibbles[64] = {
    2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49,
    50, 51, 52, 53, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71};

// The 16 blocks' integer sums w . a, in block order, and their f16 scales
// (`halves`); absent blocks give 0.
__attribute__((target(FEDGE_AVX512))) inline __m512i step_sums(const BlockQ4_0* w, const std::int8_t* aq, int count,
                                                               __m256i& halves) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(w);
  const __m512i index = _mm512_load_si512(kQuadNibbles);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i quad[4], head[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const int have = count - 4 * k;
    if (have <= 0) {
      quad[k] = head[k] = _mm512_setzero_si512();
      continue;
    }
    const std::uint8_t* p = bytes + 72 * k;
    const int n = 18 * std::min(have, 4);
    __m512i x, y;
    if (have >= 4) {  // whole quad: plain loads (masked ones cost more)
      x = _mm512_loadu_si512(p);
      y = _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 64)));
    } else {  // 1-3 blocks: 18-54 bytes, all in x
      x = _mm512_maskz_loadu_epi8(first_bytes(n), p);
      y = _mm512_setzero_si512();
    }
    head[k] = x;
    const __m512i packed = _mm512_permutex2var_epi8(x, index, y);
    const __m512i lo = _mm512_and_si512(packed, low4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
    const std::int8_t* act = aq + 4 * k * kBlockSize;
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(act));
    quad[k] = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(act + 2 * kBlockSize));
  }
  // A quad's scales are its words 0, 9, 18 and 27 (bytes 0, 18, 36, 54):
  // quads 0-1 give halves 0-7, quads 2-3 halves 8-15.
  const __m512i scale_words = _mm512_setr_epi32(9 << 16, 27 << 16 | 18, (32 + 9) << 16 | 32, (32 + 27) << 16 | (32 + 18),
                                                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i low = _mm512_permutex2var_epi16(head[0], scale_words, head[1]);
  const __m512i high = _mm512_permutex2var_epi16(head[2], scale_words, head[3]);
  halves = _mm256_inserti128_si256(_mm512_castsi512_si256(low), _mm512_castsi512_si128(high), 1);
  // Lane q of quad p is block 4p + q: dword 4q + p -> block 4p + q.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, reduce_lanes(quad[0], quad[1], quad[2], quad[3]));
}

__attribute__((target(FEDGE_AVX512))) inline __m512i step_sums(const BlockQ8_0* w, const std::int8_t* aq, int count,
                                                               __m256i& halves) {
  // Each block's f16 scale (a 32-bit gather at a block's start keeps it in the low half).
  const __m512i scale_at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(sizeof(BlockQ8_0)));
  if (count >= kWide) {  // 16 scalar copies cost less than a gather on AMD's cores
    alignas(32) std::uint16_t d[kWide];
#pragma GCC unroll 16
    for (int i = 0; i < kWide; ++i) d[i] = w[i].d;
    halves = _mm256_load_si256(reinterpret_cast<const __m256i*>(d));
  } else {
    const auto live = static_cast<__mmask16>((1u << count) - 1);
    halves = _mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, scale_at, w, 1));
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i pair[8];
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
    const int have = count - 2 * k;
    if (have <= 0) {
      pair[k] = _mm512_setzero_si512();
      continue;
    }
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[2 * k].qs));
    const __m256i hi =
        have >= 2 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[2 * k + 1].qs)) : _mm256_setzero_si256();
    // An absent block's bytes become 0x80 and meet zero activations.
    const __m512i biased = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), flip);
    pair[k] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), biased, _mm512_loadu_si512(aq + 2 * k * kBlockSize));
  }
  // Pair p holds block 2p in lanes 0-1 and block 2p + 1 in lanes 2-3.
  const __m512i r0 = reduce_lanes(pair[0], pair[1], pair[2], pair[3]);
  const __m512i r1 = reduce_lanes(pair[4], pair[5], pair[6], pair[7]);
  const __m512i s = _mm512_add_epi32(_mm512_shuffle_i64x2(r0, r1, 0x88), _mm512_shuffle_i64x2(r0, r1, 0xDD));
  // s's lane L, dword p: block 8 (L / 2) + 2p + L % 2.
  const __m512i order = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
  return _mm512_permutexvar_epi32(order, s);
}

// Q5_0: a quad of 4 blocks is 88 bytes, read as two whole loads that
// overlap, x = bytes 0..63 and y = bytes 24..87 (never past the quad). The
// index of quad byte o for a two-source byte permute of x and y:
constexpr std::uint8_t q5_quad_byte(int o) { return static_cast<std::uint8_t>(o < 64 ? o : 64 + (o - 24)); }

// Output byte 16k + i: block k's nibble byte i (quad byte 22k + 6 + i), and
// the qh bytes holding the fifth bits of weight i (qh bit i: quad byte
// 22k + 2 + i / 8) and weight 16 + i (qh bit 16 + i: byte 22k + 4 + i / 8);
// a test against bit i % 8 then gives a byte mask in the nibbles' order.
struct Q5Tables {
  alignas(64) std::uint8_t nibbles[64];
  alignas(64) std::uint8_t low_bits[64];
  alignas(64) std::uint8_t high_bits[64];
};
constexpr Q5Tables make_q5_tables() {
  Q5Tables t{};
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 16; ++i) {
      t.nibbles[16 * k + i] = q5_quad_byte(22 * k + 6 + i);
      t.low_bits[16 * k + i] = q5_quad_byte(22 * k + 2 + i / 8);
      t.high_bits[16 * k + i] = q5_quad_byte(22 * k + 4 + i / 8);
    }
  return t;
}
alignas(64) constexpr Q5Tables kQ5Quad = make_q5_tables();

// One Q5_0 quad (`have` of its 4 blocks present) against its prepared
// activations: 128-bit lane q holds block q's 4 partial sums (an absent
// block's are 0). `scales` gets the blocks' f16 scales in words 0..3.
__attribute__((target(FEDGE_AVX512))) inline __m512i quad_sums_q5(const BlockQ5_0* w, int have, const std::int8_t* act,
                                                                  __m512i& scales) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(w);
  __m512i x, y;
  if (have >= 4) {
    x = _mm512_loadu_si512(p);
    y = _mm512_loadu_si512(p + 24);
  } else {  // 22-66 bytes; masked bytes read as 0 and never fault
    const int n = 22 * have;
    x = _mm512_maskz_loadu_epi8(first_bytes(std::min(n, 64)), p);
    y = n > 64 ? _mm512_maskz_loadu_epi8(first_bytes(n - 24), p + 24) : _mm512_setzero_si512();
  }
  const __m512i low4 = _mm512_set1_epi8(0x0F), sixteen = _mm512_set1_epi8(0x10);
  const __m512i bit = _mm512_set1_epi64(static_cast<long long>(0x8040201008040201ULL));
  const __m512i packed = _mm512_permutex2var_epi8(x, _mm512_load_si512(kQ5Quad.nibbles), y);
  const __mmask64 fifth_lo =
      _mm512_test_epi8_mask(_mm512_permutex2var_epi8(x, _mm512_load_si512(kQ5Quad.low_bits), y), bit);
  const __mmask64 fifth_hi =
      _mm512_test_epi8_mask(_mm512_permutex2var_epi8(x, _mm512_load_si512(kQ5Quad.high_bits), y), bit);
  __m512i lo = _mm512_and_si512(packed, low4);
  __m512i hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
  lo = _mm512_mask_add_epi8(lo, fifth_lo, lo, sixteen);
  hi = _mm512_mask_add_epi8(hi, fifth_hi, hi, sixteen);
  // Scales at quad bytes 0, 22, 44 (x's words 0, 11, 22) and 66 (y's word 21).
  const __m512i scale_words =
      _mm512_setr_epi32(11 << 16, (32 + 21) << 16 | 22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  scales = _mm512_permutex2var_epi16(x, scale_words, y);
  const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(act));
  return _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(act + 2 * kBlockSize));
}

__attribute__((target(FEDGE_AVX512))) inline __m512i step_sums(const BlockQ5_0* w, const std::int8_t* aq, int count,
                                                               __m256i& halves) {
  __m512i quad[4], scales[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const int have = count - 4 * k;
    if (have <= 0) {
      quad[k] = scales[k] = _mm512_setzero_si512();
      continue;
    }
    quad[k] = quad_sums_q5(w + 4 * k, have, aq + 4 * k * kBlockSize, scales[k]);
  }
  const __m128i low = _mm_unpacklo_epi64(_mm512_castsi512_si128(scales[0]), _mm512_castsi512_si128(scales[1]));
  const __m128i high = _mm_unpacklo_epi64(_mm512_castsi512_si128(scales[2]), _mm512_castsi512_si128(scales[3]));
  halves = _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
  // Lane q of quad p is block 4p + q: dword 4q + p -> block 4p + q.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(order, reduce_lanes(quad[0], quad[1], quad[2], quad[3]));
}

// A row's last 1-3 blocks, given as one quad's partial sums s (128-bit lane
// q: block q) and scales (words 0..3): adds into acc's lanes 0..3 (the step
// starts at a multiple of 16, so block % 8 = 0..3).
__attribute__((target(FEDGE_AVX512))) inline __m256 add_tail_sums(__m512i s, __m128i halves, const std::int32_t* bias,
                                                                 const float* scale_a, int count, __m256 acc) {
  // Each 128-bit lane is one block: sum its 4 dwords, then take dword 0 of each lane.
  s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_BADC));
  s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_CDAB));
  const __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m128i isum = _mm_sub_epi32(_mm512_castsi512_si128(_mm512_permutexvar_epi32(first, s)),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(bias)));
  const __m128 scale = _mm_mul_ps(_mm_cvtph_ps(halves), _mm_loadu_ps(scale_a));
  const __m128 term = _mm_mul_ps(scale, _mm_cvtepi32_ps(isum));
  return _mm256_mask_add_ps(acc, static_cast<__mmask8>((1u << count) - 1), acc, _mm256_castps128_ps256(term));
}

// A Q5_0 row's last 1-3 blocks as one quad, reduced on its own.
__attribute__((target(FEDGE_AVX512))) inline __m256 add_short_tail(const BlockQ5_0* w, const std::int8_t* aq,
                                                                  const std::int32_t* bias, const float* scale_a,
                                                                  int count, __m256 acc) {
  __m512i scales;
  const __m512i s = quad_sums_q5(w, count, aq, scales);
  return add_tail_sums(s, _mm512_castsi512_si128(scales), bias, scale_a, count, acc);
}

// A Q4_0 row's last 1-3 blocks (576 = 16 + 2 blocks) as one quad, reduced
// on its own: a third of a whole step's work.
__attribute__((target(FEDGE_AVX512))) inline __m256 add_short_tail(const BlockQ4_0* w, const std::int8_t* aq,
                                                                  const std::int32_t* bias, const float* scale_a,
                                                                  int count, __m256 acc) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i x = _mm512_maskz_loadu_epi8(first_bytes(18 * count), w);
  const __m512i packed = _mm512_permutexvar_epi8(_mm512_load_si512(kQuadNibbles), x);  // bytes >= 64 are never picked
  const __m512i lo = _mm512_and_si512(packed, low4);
  const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(aq));
  s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(aq + 2 * kBlockSize));
  const __m512i words = _mm512_setr_epi32(9 << 16, 27 << 16 | 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return add_tail_sums(s, _mm512_castsi512_si128(_mm512_permutexvar_epi16(words, x)), bias, scale_a, count, acc);
}

// R consecutive weight rows (R <= 2) against one activation row, their
// steps interleaved: two independent chains keep the core busy where one
// row's chain of dependent steps would wait, and they share the activation's
// loads. Each row's float order is the portable path's.
template <class Block, int R>
__attribute__((target(FEDGE_AVX512))) void rows_dot_avx512(std::int64_t blocks, const Block* w, const PreparedRow& a,
                                                            float* out) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (std::int64_t b = 0; b < blocks; b += kWide) {
    const int count = static_cast<int>(std::min<std::int64_t>(kWide, blocks - b));
    const std::int8_t* aq = a.qs.data() + b * kBlockSize;
    if constexpr (std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ5_0>) {
      if (count <= 3) {  // one quad
        for (int r = 0; r < R; ++r) acc[r] = add_short_tail(w + r * blocks + b, aq, &a.bias[b], &a.scale[b], count, acc[r]);
        continue;
      }
    }
    const __mmask16 live = static_cast<__mmask16>(count == kWide ? 0xFFFF : (1u << count) - 1);
    const __m512i bias = _mm512_loadu_si512(&a.bias[b]);
    const __m512 scale_a = _mm512_loadu_ps(&a.scale[b]);
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      __m256i halves;
      const __m512i isum = _mm512_sub_epi32(step_sums(w + r * blocks + b, aq, count, halves), bias);
      const __m512 scale = _mm512_mul_ps(_mm512_cvtph_ps(halves), scale_a);
      const __m512 term = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum));
      // Blocks b..b+7 then b+8..b+15 into lanes 0..7: block % 8, in block order.
      acc[r] = _mm256_mask_add_ps(acc[r], static_cast<__mmask8>(live), acc[r], _mm512_castps512_ps256(term));
      acc[r] = _mm256_mask_add_ps(acc[r], static_cast<__mmask8>(live >> 8), acc[r], _mm512_extractf32x8_ps(term, 1));
    }
  }
  for (int r = 0; r < R; ++r) {
    alignas(32) float lanes[kLanes];
    _mm256_store_ps(lanes, acc[r]);
    out[r] = sum_lanes(lanes);
  }
}

template <class Block>
float row_dot_avx512(std::int64_t blocks, const Block* w, const PreparedRow& a) {
  float out;
  rows_dot_avx512<Block, 1>(blocks, w, a, &out);
  return out;
}

// quantize_row_q8_0's answer, 32 values at a time: the same max, the same
// float divide and multiply, and round half away from zero done exactly
// (truncate, then step away from zero when the dropped part is >= 0.5).
__attribute__((target(FEDGE_AVX512))) bool quantize_q8_avx512(const float* x, BlockQ8_0* y, std::int64_t blocks) {
  const __m512 sign = _mm512_set1_ps(-0.0F), one = _mm512_set1_ps(1.0F), half = _mm512_set1_ps(0.5F);
  for (std::int64_t b = 0; b < blocks; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + b * kBlockSize), v1 = _mm512_loadu_ps(x + b * kBlockSize + 16);
    // Not finite (NaN or infinity): the scalar quantizer names the value.
    if (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) return false;
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.0F;
    const float id = d != 0 ? 1.0F / d : 0.0F;
    y[b].d = f32_to_f16(d);
    const __m512 scale = _mm512_set1_ps(id);
    for (int h = 0; h < 2; ++h) {
      const __m512 t = _mm512_mul_ps(h == 0 ? v0 : v1, scale);
      __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, r)), half, _CMP_GE_OQ);
      r = _mm512_mask_add_ps(r, up, r, _mm512_or_ps(_mm512_and_ps(t, sign), one));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16 * h), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r)));
    }
  }
  return true;
}
#endif

// GGUF's reference: d = max|x| / 127, q = round(x / d).
void quantize_q8_reference(const float* x, BlockQ8_0* y, std::int64_t n) {
  check_finite(x, n, "quantize q8_0");
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float* v = x + b * kBlockSize;
    float amax = 0;
    for (int i = 0; i < kBlockSize; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0F;
    const float id = d != 0 ? 1.0F / d : 0.0F;
    y[b].d = f32_to_f16(d);
    for (int i = 0; i < kBlockSize; ++i) y[b].qs[i] = static_cast<std::int8_t>(std::round(v[i] * id));
  }
}

void quantize_q8(const float* x, BlockQ8_0* y, std::int64_t n, Isa use) {
  check_length(n, "quantize q8_0");
#ifdef FEDGE_QUANT_X86
  if (use == Isa::kAvx512 && quantize_q8_avx512(x, y, n / kBlockSize)) return;
#endif
  (void)use;
  quantize_q8_reference(x, y, n);
}

// The activation rows of a product, quantized once (and laid out for the
// AVX-512 kernels when they run).
// Q8_0, Q4_0 and Q5_0 have AVX-512 kernels of their own; the other types'
// integer sums use the AVX2 path on an AVX-512 CPU.
template <class Block>
constexpr bool kHasAvx512Kernel =
    std::is_same_v<Block, BlockQ8_0> || std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ5_0>;

template <class Block>
Isa isa_for(Isa use) {
  // The k-quants have AVX-512 row dots of their own (quant_k.cpp) over the
  // plain Q8_0 activation rows: no AVX-512 layout, but the instruction set passes.
  return use == Isa::kAvx512 && !kHasAvx512Kernel<Block> && !kIsSuperBlock<Block> ? Isa::kAvx2 : use;
}

// One weight row (row_blocks blocks of its type) against activation row `a`
// (in / 32 Q8_0 blocks, byte sums `asum`), without the AVX-512 layout.
template <class Block>
float row_dot_any(const Block* w, std::int64_t row_blocks, const BlockQ8_0* a, const std::int32_t* asum, Isa use) {
  if constexpr (kIsSuperBlock<Block>) return detail::row_dot_k(w, row_blocks, a, asum, isa_for<Block>(use));
  else return row_dot(row_blocks, w, a, isa_for<Block>(use));
}

template <class Block>
struct Activations {
  Isa use = Isa::kScalar;
  std::int64_t blocks = 0;      // Q8_0 blocks of an activation row
  std::int64_t row_blocks = 0;  // blocks of a weight row
  std::vector<BlockQ8_0> q;
  std::vector<std::int32_t> sums;  // each Q8_0 block's byte sum (Q4_K's mins use them)
  std::vector<PreparedRow> prepared;

  // Refills the buffers (kept per thread, so a decode step allocates nothing).
  void fill(const float* x, int rows, std::int64_t in, Isa isa_in_use) {
    use = isa_in_use;
    blocks = in / kBlockSize;
    row_blocks = in / kWeightsPer<Block>;
    q.resize(static_cast<std::size_t>(rows * blocks));
    for (int r = 0; r < rows; ++r) quantize_q8(x + r * in, q.data() + r * blocks, in, use);
    if constexpr (std::is_same_v<Block, BlockQ4_K>) {
      sums.resize(q.size());
      for (std::size_t b = 0; b < q.size(); ++b) {
        std::int32_t sum = 0;
        for (int i = 0; i < kBlockSize; ++i) sum += q[b].qs[i];
        sums[b] = sum;
      }
    }
    if (kHasAvx512Kernel<Block> && use == Isa::kAvx512) {
      prepared.resize(static_cast<std::size_t>(rows));
      for (int r = 0; r < rows; ++r) prepare_row<Block>(q.data() + r * blocks, blocks, prepared[r]);
    }
  }

  // Two consecutive weight rows (w and w + row_blocks) against activation row `row`.
  void dot2(const Block* w, int row, float* out) const {
#ifdef FEDGE_QUANT_X86
    // Q4_0 and Q5_0 only: Q8_0's step already holds 8 independent pair products, and two rows' worth runs out of
    // registers.
    if constexpr (std::is_same_v<Block, BlockQ4_0> || std::is_same_v<Block, BlockQ5_0>)
      if (use == Isa::kAvx512) return rows_dot_avx512<Block, 2>(blocks, w, prepared[row], out);
#endif
    out[0] = dot(w, row);
    out[1] = dot(w + row_blocks, row);
  }

  float dot(const Block* w, int row) const {
#ifdef FEDGE_QUANT_X86
    if constexpr (kHasAvx512Kernel<Block>)
      if (use == Isa::kAvx512) return row_dot_avx512(blocks, w, prepared[row]);
#endif
    return row_dot_any(w, row_blocks, q.data() + row * blocks, sums.empty() ? nullptr : sums.data() + row * blocks,
                       use);
  }
};

// y [rows, out] = x [rows, in] W^T: the activation rows are quantized once,
// each weight row is read from memory once and dotted with every activation
// row while it sits in L1, and the weight rows are split over the threads.
template <class Block>
void matmul_typed(const MatmulJob* jobs, int count, const float* x, int rows, int in) {
  detail::check_length(in, kWeightsPer<Block>, "matmul input");
  if (rows < 0) throw Error(ErrorKind::kInvalidInput, "matmul: negative row count");
  if (count < 0 || count > kMaxGroup)
    throw Error(ErrorKind::kInvalidInput, "matmul_group: " + std::to_string(count) + " products (at most " +
                                              std::to_string(kMaxGroup) + ")");
  std::int64_t total_out = 0;
  for (int i = 0; i < count; ++i) {
    if (jobs[i].out < 0) throw Error(ErrorKind::kInvalidInput, "matmul: negative output size");
    total_out += jobs[i].out;
  }
  // The calling thread's buffers: a decode step allocates nothing. The
  // workers read them through `job`, never their own thread_local copy.
  thread_local Activations<Block> buffers;
  buffers.fill(x, rows, in, isa().load());
  struct Group {
    const MatmulJob* jobs;
    int count;
    const Activations<Block>* act;
    int rows, chunk_rows;
    int first_chunk[kMaxGroup + 1];  // job i owns chunks [first_chunk[i], first_chunk[i + 1])
  };
  // At least 32 row dots a chunk and at most about 16 chunks in all: claiming
  // a chunk is a contended atomic, and a 576-wide Q4_0 row is ~12 ns of work
  // (32-row chunks left 2-thread decode no faster than 1 thread); 16 chunks
  // still balance 2-8 threads. At most 0xffff chunks (the pool's limit).
  const int min_chunk = std::max(2, 32 / std::max(rows, 1));
  Group group{jobs, count, &buffers, rows, std::max<int>(min_chunk, static_cast<int>((total_out + 15) / 16)), {}};
  group.chunk_rows = std::max<int>(group.chunk_rows, static_cast<int>(total_out / 0xfff0 + 1));
  for (int i = 0; i < count; ++i)
    group.first_chunk[i + 1] = group.first_chunk[i] + (jobs[i].out + group.chunk_rows - 1) / group.chunk_rows;
  const auto run_chunk = [](const void* p, int chunk) {
    const Group& g = *static_cast<const Group*>(p);
    int i = 0;
    while (chunk >= g.first_chunk[i + 1]) ++i;
    const MatmulJob& job = g.jobs[i];
    const auto* w = static_cast<const Block*>(job.w);
    const std::int64_t blocks = g.act->row_blocks;
    const int j0 = (chunk - g.first_chunk[i]) * g.chunk_rows, j1 = std::min(job.out, j0 + g.chunk_rows);
    // The hardware prefetcher alone leaves Q4_0's products well short of the
    // memory's speed (see set_prefetch_bytes); ask for the bytes `ahead` of
    // each row pair as it starts. A chunk's rows continue into the next chunk
    // of the same thread's share, so prefetching past a chunk's end is not
    // wasted; a prefetch past the matrix's end never faults.
    const int ahead = prefetch_setting().load(std::memory_order_relaxed);
    const std::int64_t pair_bytes = 2 * blocks * static_cast<std::int64_t>(sizeof(Block));
    int j = j0;
    for (; j + 1 < j1; j += 2) {
      if (ahead > 0) {  // an address, not a pointer: it may lie past the matrix
        const std::uintptr_t next = reinterpret_cast<std::uintptr_t>(w + j * blocks) + ahead;
        for (std::int64_t at = 0; at < pair_bytes; at += 64)
          __builtin_prefetch(reinterpret_cast<const void*>(next + static_cast<std::uintptr_t>(at)), 0, 3);
      }
      for (int r = 0; r < g.rows; ++r) {
        float two[2];
        g.act->dot2(w + j * blocks, r, two);
        job.y[static_cast<std::int64_t>(r) * job.out + j] = two[0];
        job.y[static_cast<std::int64_t>(r) * job.out + j + 1] = two[1];
      }
    }
    if (j < j1)
      for (int r = 0; r < g.rows; ++r) job.y[static_cast<std::int64_t>(r) * job.out + j] = g.act->dot(w + j * blocks, r);
  };
  // Small products are not worth waking the other threads.
  const bool parallel = total_out * in * std::max(rows, 1) >= (1 << 15);
  parallel_runner().load()(group.first_chunk[count], run_chunk, &group, parallel);
}

template <class Block>
void matmul_typed(const Block* w, const float* x, float* y, int rows, int in, int out) {
  const MatmulJob job{w, y, out};
  matmul_typed<Block>(&job, 1, x, rows, in);
}

// One row's dot with an activation row already in Q8_0 (tests, llama.cpp's API).
template <class Block>
float vec_dot(std::int64_t n, const Block* w, const BlockQ8_0* a, Isa use) {
  detail::check_length(n, kWeightsPer<Block>, "vec_dot");
  const std::int64_t blocks = n / kBlockSize;
#ifdef FEDGE_QUANT_X86
  if constexpr (kHasAvx512Kernel<Block>)
    if (use == Isa::kAvx512) {
      PreparedRow prepared;
      prepare_row<Block>(a, blocks, prepared);
      return row_dot_avx512(blocks, w, prepared);
    }
#endif
  std::vector<std::int32_t> sums;  // the activation blocks' byte sums: Q4_K's mins need them
  if constexpr (std::is_same_v<Block, BlockQ4_K>) {
    sums.assign(static_cast<std::size_t>(blocks), 0);
    for (std::int64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < kBlockSize; ++i) sums[b] += a[b].qs[i];
  }
  return row_dot_any(w, n / kWeightsPer<Block>, a, sums.data(), use);
}

// Calls f with a null pointer of `type`'s block struct (to pick a template).
template <class F>
decltype(auto) with_block_type(QuantType type, F&& f) {
  switch (type) {
    case QuantType::kQ8_0: return f(static_cast<const BlockQ8_0*>(nullptr));
    case QuantType::kQ4_0: return f(static_cast<const BlockQ4_0*>(nullptr));
    case QuantType::kQ5_0: return f(static_cast<const BlockQ5_0*>(nullptr));
    case QuantType::kQ4_K: return f(static_cast<const BlockQ4_K*>(nullptr));
    case QuantType::kQ6_K: return f(static_cast<const BlockQ6_K*>(nullptr));
  }
  throw Error(ErrorKind::kInvalidInput, "unknown quantized type " + std::to_string(static_cast<int>(type)));
}

template <class Block>
using BlockOf = std::remove_const_t<std::remove_pointer_t<Block>>;

}  // namespace

namespace detail {

void check_length(std::int64_t n, int block, const char* what) {
  if (n < 0 || n % block != 0)
    throw Error(ErrorKind::kInvalidInput, std::string(what) + ": " + std::to_string(n) +
                                              " values is not a whole number of " + std::to_string(block) +
                                              "-value blocks");
}

void check_finite(const float* x, std::int64_t n, const char* what) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw Error(ErrorKind::kInvalidInput, std::string(what) + ": value " + std::to_string(i) + " is not finite");
}

// f16 -> f32 for every half, so a block's scale costs one load on every path.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(1u << 16);
    for (std::uint32_t h = 0; h < t.size(); ++h) t[h] = f16_to_f32(static_cast<std::uint16_t>(h));
    return t;
  }();
  return table.data();
}

}  // namespace detail

const char* quant_type_name(QuantType type) {
  switch (type) {
    case QuantType::kQ8_0: return "q8_0";
    case QuantType::kQ4_0: return "q4_0";
    case QuantType::kQ5_0: return "q5_0";
    case QuantType::kQ4_K: return "q4_k";
    case QuantType::kQ6_K: return "q6_k";
  }
  return "?";
}

int block_weights(QuantType type) {
  return with_block_type(type, [](auto tag) { return kWeightsPer<BlockOf<decltype(tag)>>; });
}

std::size_t block_bytes(QuantType type) {
  return with_block_type(type, [](auto tag) { return sizeof(BlockOf<decltype(tag)>); });
}

std::size_t row_bytes(QuantType type, std::int64_t n) {
  detail::check_length(n, block_weights(type), "row_bytes");
  return static_cast<std::size_t>(n / block_weights(type)) * block_bytes(type);
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t n) { quantize_q8(x, y, n, isa().load()); }

namespace {
// The first of a block's values of largest magnitude, sign kept (GGUF's
// reference maps it to the lowest level of Q4_0 and Q5_0).
float largest_magnitude(const float* v) {
  float amax = 0, max = 0;
  for (int i = 0; i < kBlockSize; ++i)
    if (amax < std::fabs(v[i])) {
      amax = std::fabs(v[i]);
      max = v[i];
    }
  return max;
}
}  // namespace

// GGUF's reference: as Q4_0 with 5 bits, the value of largest magnitude
// mapping to -16; the fifth bits go to qh.
void quantize_row_q5_0(const float* x, BlockQ5_0* y, std::int64_t n) {
  check_length(n, "quantize q5_0");
  check_finite(x, n, "quantize q5_0");
  constexpr int kHalf = kBlockSize / 2;
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float* v = x + b * kBlockSize;
    const float d = largest_magnitude(v) / -16.0F;
    const float id = d != 0 ? 1.0F / d : 0.0F;
    y[b].d = f32_to_f16(d);
    std::uint32_t high = 0;
    for (int j = 0; j < kHalf; ++j) {
      const int lo = std::min(31, static_cast<int>(static_cast<std::int8_t>(v[j] * id + 16.5F)));
      const int hi = std::min(31, static_cast<int>(static_cast<std::int8_t>(v[kHalf + j] * id + 16.5F)));
      y[b].qs[j] = static_cast<std::uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      high |= static_cast<std::uint32_t>(lo >> 4) << j;
      high |= static_cast<std::uint32_t>(hi >> 4) << (j + kHalf);
    }
    for (int k = 0; k < 4; ++k) y[b].qh[k] = static_cast<std::uint8_t>(high >> (8 * k));
  }
}

// GGUF's reference: the value of largest magnitude, sign kept, maps to -8:
// d = max / -8, nibble = min(15, trunc(x / d + 8.5)).
void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t n) {
  check_length(n, "quantize q4_0");
  check_finite(x, n, "quantize q4_0");
  constexpr int kHalf = kBlockSize / 2;
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float* v = x + b * kBlockSize;
    const float d = largest_magnitude(v) / -8.0F;
    const float id = d != 0 ? 1.0F / d : 0.0F;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < kHalf; ++j) {
      const auto lo = static_cast<std::uint8_t>(std::min(15, static_cast<int>(static_cast<std::int8_t>(v[j] * id + 8.5F))));
      const auto hi =
          static_cast<std::uint8_t>(std::min(15, static_cast<int>(static_cast<std::int8_t>(v[kHalf + j] * id + 8.5F))));
      y[b].qs[j] = static_cast<std::uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, std::int64_t n) {
  check_length(n, "dequantize q8_0");
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int i = 0; i < kBlockSize; ++i) y[b * kBlockSize + i] = d * static_cast<float>(x[b].qs[i]);
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, std::int64_t n) {
  check_length(n, "dequantize q4_0");
  constexpr int kHalf = kBlockSize / 2;
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < kHalf; ++j) {
      y[b * kBlockSize + j] = d * static_cast<float>((x[b].qs[j] & 0x0F) - 8);
      y[b * kBlockSize + kHalf + j] = d * static_cast<float>((x[b].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, std::int64_t n) {
  check_length(n, "dequantize q5_0");
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float d = f16_to_f32(x[b].d);
    for (int i = 0; i < kBlockSize; ++i) y[b * kBlockSize + i] = d * static_cast<float>(value_q5_0(x[b], i));
  }
}

float vec_dot_q8_0_q8_0(std::int64_t n, const BlockQ8_0* w, const BlockQ8_0* a) { return vec_dot(n, w, a, isa().load()); }
float vec_dot_q4_0_q8_0(std::int64_t n, const BlockQ4_0* w, const BlockQ8_0* a) { return vec_dot(n, w, a, isa().load()); }
float vec_dot_q5_0_q8_0(std::int64_t n, const BlockQ5_0* w, const BlockQ8_0* a) { return vec_dot(n, w, a, isa().load()); }
float vec_dot_q4_k_q8_0(std::int64_t n, const BlockQ4_K* w, const BlockQ8_0* a) { return vec_dot(n, w, a, isa().load()); }
float vec_dot_q6_k_q8_0(std::int64_t n, const BlockQ6_K* w, const BlockQ8_0* a) { return vec_dot(n, w, a, isa().load()); }

void matvec_q8_0(const BlockQ8_0* w, const float* x, float* y, int in, int out) { matmul_typed(w, x, y, 1, in, out); }
void matvec_q4_0(const BlockQ4_0* w, const float* x, float* y, int in, int out) { matmul_typed(w, x, y, 1, in, out); }

void matmul(QuantType type, const void* w, const float* x, float* y, int rows, int in, int out) {
  with_block_type(type, [&](auto tag) {
    using Block = BlockOf<decltype(tag)>;
    matmul_typed(static_cast<const Block*>(w), x, y, rows, in, out);
  });
}

void matmul_group(QuantType type, const MatmulJob* jobs, int count, const float* x, int rows, int in) {
  with_block_type(type, [&](auto tag) { matmul_typed<BlockOf<decltype(tag)>>(jobs, count, x, rows, in); });
}

namespace {
// Each type's row quantizer and dequantizer.
void quantize_row(const float* x, BlockQ8_0* y, std::int64_t n) { quantize_row_q8_0(x, y, n); }
void quantize_row(const float* x, BlockQ4_0* y, std::int64_t n) { quantize_row_q4_0(x, y, n); }
void quantize_row(const float* x, BlockQ5_0* y, std::int64_t n) { quantize_row_q5_0(x, y, n); }
void quantize_row(const float* x, BlockQ4_K* y, std::int64_t n) { quantize_row_q4_k(x, y, n); }
void quantize_row(const float* x, BlockQ6_K* y, std::int64_t n) { quantize_row_q6_k(x, y, n); }
void dequantize_row(const BlockQ8_0* x, float* y, std::int64_t n) { dequantize_row_q8_0(x, y, n); }
void dequantize_row(const BlockQ4_0* x, float* y, std::int64_t n) { dequantize_row_q4_0(x, y, n); }
void dequantize_row(const BlockQ5_0* x, float* y, std::int64_t n) { dequantize_row_q5_0(x, y, n); }
void dequantize_row(const BlockQ4_K* x, float* y, std::int64_t n) { dequantize_row_q4_k(x, y, n); }
void dequantize_row(const BlockQ6_K* x, float* y, std::int64_t n) { dequantize_row_q6_k(x, y, n); }
}  // namespace

void quantize_rows(QuantType type, const float* x, void* y, std::int64_t rows, std::int64_t in) {
  const std::size_t bytes = row_bytes(type, in);
  auto* out = static_cast<std::uint8_t*>(y);
  with_block_type(type, [&](auto tag) {
    using Block = BlockOf<decltype(tag)>;
    for (std::int64_t r = 0; r < rows; ++r) quantize_row(x + r * in, reinterpret_cast<Block*>(out + r * bytes), in);
  });
}

void dequantize_rows(QuantType type, const void* w, float* y, std::int64_t rows, std::int64_t in) {
  const std::size_t bytes = row_bytes(type, in);
  const auto* src = static_cast<const std::uint8_t*>(w);
  with_block_type(type, [&](auto tag) {
    using Block = BlockOf<decltype(tag)>;
#pragma omp parallel for schedule(static) if (rows * in > (1 << 16))
    for (std::int64_t r = 0; r < rows; ++r)
      dequantize_row(reinterpret_cast<const Block*>(src + r * bytes), y + r * in, in);
  });
}

void set_prefetch_bytes(int bytes) {
  if (bytes < 0) throw Error(ErrorKind::kInvalidInput, "prefetch distance " + std::to_string(bytes) + " is negative");
  prefetch_setting().store(bytes, std::memory_order_relaxed);
}
int prefetch_bytes() { return prefetch_setting().load(std::memory_order_relaxed); }

void set_parallel_for(ParallelFor runner) { parallel_runner() = runner ? runner : &openmp_for; }

bool set_isa(const char* name) {
  std::string s = name ? name : "";
  if (s.empty() || s == "auto") {
    isa() = detect();
    return true;
  }
  if (s == "scalar") s = "portable";  // the portable path's older name
  for (Isa level : kFastestFirst)
    if (s == name_of(level)) {
      if (!cpu_has(level)) return false;
      isa() = level;
      return true;
    }
  return false;
}

const char* isa_name() { return name_of(isa().load()); }

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (Isa level : kFastestFirst)
    if (cpu_has(level)) out.emplace_back(name_of(level));
  return out;
}

}  // namespace fedge::inference::quant
