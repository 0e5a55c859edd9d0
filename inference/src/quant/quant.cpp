#include "fedge/inference/quant.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"  // f16 <-> f32

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDGE_QUANT_X86 1
#endif

namespace fedge::inference::quant {
namespace {

enum class Isa { kScalar, kAvx2 };

Isa detect() {
#ifdef FEDGE_QUANT_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kScalar;
}

std::atomic<Isa>& isa() {
  static std::atomic<Isa> chosen{detect()};
  return chosen;
}

void check_length(std::int64_t n, const char* what) {
  if (n < 0 || n % kBlockSize != 0)
    throw Error(ErrorKind::kInvalidInput, std::string(what) + ": " + std::to_string(n) +
                                              " values is not a whole number of 32-value blocks");
}

void check_finite(const float* x, std::int64_t n, const char* what) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw Error(ErrorKind::kInvalidInput, std::string(what) + ": value " + std::to_string(i) + " is not finite");
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

template <class Block>
__attribute__((target("avx2"))) inline __m256i partial_dot(const Block& w, const BlockQ8_0& a) {
  if constexpr (std::is_same_v<Block, BlockQ8_0>) return dot_i8x32(load_q8(w), load_q8(a));
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

template <class Block>
void block_dots(const Block* w, const BlockQ8_0* a, int count, std::int32_t* out, Isa use) {
#ifdef FEDGE_QUANT_X86
  if (use == Isa::kAvx2) return block_dots_avx2(w, a, count, out);
#endif
  (void)use;
  for (int i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<Block, BlockQ8_0>) out[i] = block_dot_q8_scalar(w[i].qs, a[i].qs);
    else out[i] = block_dot_q4_scalar(w[i].qs, a[i].qs);
  }
}

// f16 -> f32 for every half, so a block's scale costs one load on every path.
const std::vector<float>& f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(1u << 16);
    for (std::uint32_t h = 0; h < t.size(); ++h) t[h] = f16_to_f32(static_cast<std::uint16_t>(h));
    return t;
  }();
  return table;
}

// The float part of a row: block b's scaled integer sum goes to accumulator
// b % 8, and the 8 accumulators are added in one fixed tree at the end. The
// order is the same on every path (so the bits are), and 8 independent
// chains do not wait on one add's latency per block.
constexpr int kLanes = 8;

template <class Block>
void accumulate_scalar(const float* half, const Block* w, const BlockQ8_0* a, const std::int32_t* isum, int count,
                       float* acc) {
  for (int i = 0; i < count; ++i) {
    const float scale = half[w[i].d] * half[a[i].d];
    acc[i % kLanes] += scale * static_cast<float>(isum[i]);
  }
}

#ifdef FEDGE_QUANT_X86
// The same multiplies and adds, eight lanes at once (no FMA: the scalar path rounds twice).
template <class Block>
__attribute__((target("avx2"))) void accumulate_avx2(const float* half, const Block* w, const BlockQ8_0* a,
                                                     const std::int32_t* isum, int count, float* acc) {
  __m256 lanes = _mm256_loadu_ps(acc);
  int i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    alignas(32) float sw[kLanes], sa[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      sw[k] = half[w[i + k].d];
      sa[k] = half[a[i + k].d];
    }
    const __m256 scale = _mm256_mul_ps(_mm256_load_ps(sw), _mm256_load_ps(sa));
    const __m256 sums = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(isum + i)));
    lanes = _mm256_add_ps(lanes, _mm256_mul_ps(scale, sums));
  }
  _mm256_storeu_ps(acc, lanes);
  accumulate_scalar(half, w + i, a + i, isum + i, count - i, acc);  // i is a multiple of 8: lanes line up
}
#endif

template <class Block>
float row_dot(std::int64_t blocks, const Block* w, const BlockQ8_0* a, Isa use) {
  const float* half = f16_table().data();
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
    accumulate_scalar(half, w + b, a + b, isum, count, acc);
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class Block>
void matvec(const Block* w, const float* x, float* y, int in, int out) {
  check_length(in, "matvec input");
  if (out < 0) throw Error(ErrorKind::kInvalidInput, "matvec: negative output size");
  const std::int64_t blocks = in / kBlockSize;
  std::vector<BlockQ8_0> xq(static_cast<std::size_t>(blocks));
  quantize_row_q8_0(x, xq.data(), in);
  const Isa use = isa().load();
#pragma omp parallel for schedule(static)
  for (int j = 0; j < out; ++j) y[j] = row_dot(blocks, w + static_cast<std::int64_t>(j) * blocks, xq.data(), use);
}

}  // namespace

const char* quant_type_name(QuantType type) { return type == QuantType::kQ8_0 ? "q8_0" : "q4_0"; }

std::size_t row_bytes(QuantType type, std::int64_t n) {
  check_length(n, "row_bytes");
  const auto blocks = static_cast<std::size_t>(n / kBlockSize);
  return blocks * (type == QuantType::kQ8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0));
}

// GGUF's reference: d = max|x| / 127, q = round(x / d).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t n) {
  check_length(n, "quantize q8_0");
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

// GGUF's reference: the value of largest magnitude, sign kept, maps to -8:
// d = max / -8, nibble = min(15, trunc(x / d + 8.5)).
void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t n) {
  check_length(n, "quantize q4_0");
  check_finite(x, n, "quantize q4_0");
  constexpr int kHalf = kBlockSize / 2;
  for (std::int64_t b = 0; b < n / kBlockSize; ++b) {
    const float* v = x + b * kBlockSize;
    float amax = 0, max = 0;
    for (int i = 0; i < kBlockSize; ++i)
      if (amax < std::fabs(v[i])) {
        amax = std::fabs(v[i]);
        max = v[i];
      }
    const float d = max / -8.0F;
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

float vec_dot_q8_0_q8_0(std::int64_t n, const BlockQ8_0* w, const BlockQ8_0* a) {
  check_length(n, "vec_dot q8_0");
  return row_dot(n / kBlockSize, w, a, isa().load());
}

float vec_dot_q4_0_q8_0(std::int64_t n, const BlockQ4_0* w, const BlockQ8_0* a) {
  check_length(n, "vec_dot q4_0");
  return row_dot(n / kBlockSize, w, a, isa().load());
}

void matvec_q8_0(const BlockQ8_0* w, const float* x, float* y, int in, int out) { matvec(w, x, y, in, out); }
void matvec_q4_0(const BlockQ4_0* w, const float* x, float* y, int in, int out) { matvec(w, x, y, in, out); }

void matmul(QuantType type, const void* w, const float* x, float* y, int rows, int in, int out) {
  if (rows < 0) throw Error(ErrorKind::kInvalidInput, "matmul: negative row count");
  check_length(in, "matmul input");
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<std::int64_t>(r) * in;
    float* yr = y + static_cast<std::int64_t>(r) * out;
    if (type == QuantType::kQ8_0) matvec(static_cast<const BlockQ8_0*>(w), xr, yr, in, out);
    else matvec(static_cast<const BlockQ4_0*>(w), xr, yr, in, out);
  }
}

void quantize_rows(QuantType type, const float* x, void* y, std::int64_t rows, std::int64_t in) {
  const std::size_t bytes = row_bytes(type, in);
  auto* out = static_cast<std::uint8_t*>(y);
  for (std::int64_t r = 0; r < rows; ++r) {
    if (type == QuantType::kQ8_0) quantize_row_q8_0(x + r * in, reinterpret_cast<BlockQ8_0*>(out + r * bytes), in);
    else quantize_row_q4_0(x + r * in, reinterpret_cast<BlockQ4_0*>(out + r * bytes), in);
  }
}

void dequantize_rows(QuantType type, const void* w, float* y, std::int64_t rows, std::int64_t in) {
  const std::size_t bytes = row_bytes(type, in);
  const auto* src = static_cast<const std::uint8_t*>(w);
#pragma omp parallel for schedule(static) if (rows * in > (1 << 16))
  for (std::int64_t r = 0; r < rows; ++r) {
    if (type == QuantType::kQ8_0) dequantize_row_q8_0(reinterpret_cast<const BlockQ8_0*>(src + r * bytes), y + r * in, in);
    else dequantize_row_q4_0(reinterpret_cast<const BlockQ4_0*>(src + r * bytes), y + r * in, in);
  }
}

bool set_isa(const char* name) {
  const std::string s = name ? name : "";
  if (s.empty() || s == "auto") {
    isa() = detect();
    return true;
  }
  if (s == "scalar") {
    isa() = Isa::kScalar;
    return true;
  }
  if (s == "avx2") {
    if (detect() != Isa::kAvx2) return false;
    isa() = Isa::kAvx2;
    return true;
  }
  return false;
}

const char* isa_name() { return isa().load() == Isa::kAvx2 ? "avx2" : "scalar"; }

}  // namespace fedge::inference::quant
