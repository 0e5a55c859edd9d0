// f16 / bf16 <-> f32. Widening is exact; narrowing rounds to nearest, ties to
// even, overflows to infinity, keeps NaNs NaN (quiet) and produces subnormals.
// The bulk widening loops are branch-free so that the compiler vectorises them:
// they sit on the checkpoint-loading path.
#include <bit>
#include <cstring>

#include "fedge/common/cpu_features.h"
#include "fedge/common/safetensors.h"
#include "float_convert.h"

// x86's F16C path is compiled in unless FEDGE_PORTABLE asks for the plain C++
// loops everywhere (they give the same floats: widening is exact).
#if (defined(__x86_64__) || defined(__i386__)) && !(defined(FEDGE_PORTABLE) && FEDGE_PORTABLE)
#include <immintrin.h>
#define FEDGE_HAVE_X86 1
#endif

namespace fedge {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; fedge assumes a little-endian host");

namespace {

inline float f16_bits_to_f32(std::uint32_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t o = (h & 0x7fffu) << 13;  // exponent and mantissa in f32 position
  const std::uint32_t exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;                                  // rebias
  o = exp == 0x0f800000u ? o + ((128u - 16u) << 23) : o;    // Inf/NaN keep all-ones exponent
  // Subnormal halves: build 2^-14 * (1 + m/1024) and subtract 2^-14, exactly.
  const float sub = std::bit_cast<float>(o + (1u << 23)) - std::bit_cast<float>(113u << 23);
  const std::uint32_t r = exp == 0 ? std::bit_cast<std::uint32_t>(sub) : o;
  return std::bit_cast<float>(r | sign);
}

inline std::uint16_t load_u16(const std::byte* p) {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

float f16_to_f32(std::uint16_t bits) { return f16_bits_to_f32(bits); }

std::uint16_t f32_to_f16(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) {  // NaN: keep the top payload bits, force quiet
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  }
  if (a >= 0x477ff000u) {  // >= 65520 (halfway above 65504, tie goes to even = inf)
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (a < 0x38800000u) {  // below 2^-14: subnormal or zero
    // Adding 0.5 puts the value's 2^-24 units in the low mantissa bits; the FPU
    // rounds to nearest even for us.
    const float f = std::bit_cast<float>(a) + 0.5f;
    return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(f) - 0x3f000000u));
  }
  const std::uint32_t odd = (a >> 13) & 1u;
  a += ((15u - 127u) << 23) + 0xfffu + odd;  // rebias and round (wraps as intended)
  return static_cast<std::uint16_t>(sign | (a >> 13));
}

float bf16_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t f32_to_bf16(float value) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<std::uint16_t>((x >> 16) | 0x0040u);  // quiet NaN, sign kept
  }
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

namespace detail {
namespace {

void f16_to_f32_portable(const std::byte* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(load_u16(src + 2 * i));
}

#ifdef FEDGE_HAVE_X86
// F16C converts 8 halves per instruction, exactly (subnormals included).
__attribute__((target("avx,f16c"))) void f16_to_f32_f16c(const std::byte* src, float* dst,
                                                          std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = f16_bits_to_f32(load_u16(src + 2 * i));
}
#endif

}  // namespace

void f16_to_f32_bulk(const std::byte* src, float* dst, std::size_t n) {
#ifdef FEDGE_HAVE_X86
  if (cpu_has_f16c()) return f16_to_f32_f16c(src, dst, n);
#endif
  f16_to_f32_portable(src, dst, n);
}

#ifdef FEDGE_HAVE_X86
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void bf16_to_f32_bulk(const std::byte* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    dst[i] = std::bit_cast<float>(static_cast<std::uint32_t>(load_u16(src + 2 * i)) << 16);
  }
}

void f64_to_f32_bulk(const std::byte* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    double d;
    std::memcpy(&d, src + 8 * i, sizeof d);
    dst[i] = static_cast<float>(d);
  }
}

void f32_to_f16_bulk(const float* src, std::uint16_t* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

void f32_to_bf16_bulk(const float* src, std::uint16_t* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

}  // namespace detail
}  // namespace fedge
