// AES-256 with AES-NI, and VAES + AVX-512 for 4 blocks per instruction: the
// x86 path of aes.h (aes.cpp chooses it). Counter block i is the 128-bit
// little-endian integer i, as on the OpenSSL path (aes_openssl.cpp).
#include "aes_paths.h"

#ifdef FEDGE_AES_X86

// GCC 12 warns inside its own _mm512_broadcast_i32x4 (an undefined "don't care" operand).
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"  // the fuzz build's clang lacks the next one
#endif
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <cpuid.h>
#include <immintrin.h>

namespace fedge::privacy::aes_detail {

bool cpu_has_aes_ni() {
  static const bool ok = __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1");
  return ok;
}

// VAES: CPUID leaf 7, ECX bit 9, read directly because clang 14's
// __builtin_cpu_supports does not know "vaes" (the fuzz build uses clang).
// avx512f from the builtin also checks that the OS saves the AVX-512 state.
bool cpu_has_vaes() {
  static const bool ok = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return cpu_has_aes_ni() && __builtin_cpu_supports("avx512f") &&
           __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 9)) != 0;
  }();
  return ok;
}

namespace {

#define FEDGE_AES_TARGET __attribute__((target("aes,sse4.1")))
#define FEDGE_VAES_TARGET __attribute__((target("aes,sse4.1,avx512f,vaes")))

// One step of the AES-256 key schedule: `a` is the older word group, `t` the
// aeskeygenassist result already broadcast to the needed lane.
FEDGE_AES_TARGET inline __m128i expand_step(__m128i a, __m128i t) {
  a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
  a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
  a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
  return _mm_xor_si128(a, t);
}

// FIPS-197 AES-256 key expansion into 15 round keys.
FEDGE_AES_TARGET void expand_key(const std::uint8_t key[32], __m128i rk[15]) {
  __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key));
  __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key + 16));
  rk[0] = a;
  rk[1] = b;
#define FEDGE_AES_ROUND(i, rcon)                                                     \
  a = expand_step(a, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, rcon), 0xff)); \
  rk[i] = a;                                                                        \
  if (i + 1 < 15) {                                                                 \
    b = expand_step(b, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(a, 0), 0xaa));  \
    rk[i + 1] = b;                                                                  \
  }
  FEDGE_AES_ROUND(2, 0x01)
  FEDGE_AES_ROUND(4, 0x02)
  FEDGE_AES_ROUND(6, 0x04)
  FEDGE_AES_ROUND(8, 0x08)
  FEDGE_AES_ROUND(10, 0x10)
  FEDGE_AES_ROUND(12, 0x20)
  a = expand_step(a, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, 0x40), 0xff));
  rk[14] = a;
#undef FEDGE_AES_ROUND
}

FEDGE_AES_TARGET inline __m128i encrypt(__m128i x, const __m128i rk[15]) {
  x = _mm_xor_si128(x, rk[0]);
  for (int r = 1; r < 14; ++r) x = _mm_aesenc_si128(x, rk[r]);
  return _mm_aesenclast_si128(x, rk[14]);
}

// 8 independent blocks in flight hide the aesenc latency.
FEDGE_AES_TARGET void ctr_narrow(const __m128i rk[15], std::uint64_t ctr, std::uint8_t* out, std::size_t blocks) {
  std::size_t i = 0;
  for (; i + 8 <= blocks; i += 8) {
    __m128i x[8];
    for (int j = 0; j < 8; ++j) x[j] = _mm_xor_si128(_mm_set_epi64x(0, static_cast<long long>(ctr + i + j)), rk[0]);
    for (int r = 1; r < 14; ++r)
      for (int j = 0; j < 8; ++j) x[j] = _mm_aesenc_si128(x[j], rk[r]);
    for (int j = 0; j < 8; ++j)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * (i + j)), _mm_aesenclast_si128(x[j], rk[14]));
  }
  for (; i < blocks; ++i)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * i),
                     encrypt(_mm_set_epi64x(0, static_cast<long long>(ctr + i)), rk));
}

// kZmm registers x 4 blocks in flight per iteration hide the aesenc latency.
constexpr int kZmm = 8;

FEDGE_VAES_TARGET std::size_t ctr_wide(const __m128i rk[15], std::uint64_t ctr, std::uint8_t* out,
                                       std::size_t blocks) {
  __m512i k[15];
  for (int r = 0; r < 15; ++r) k[r] = _mm512_broadcast_i32x4(rk[r]);
  const auto c0 = static_cast<long long>(ctr);
  __m512i base = _mm512_set_epi64(0, c0 + 3, 0, c0 + 2, 0, c0 + 1, 0, c0);
  const __m512i four = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
  std::size_t i = 0;
  for (; i + 4 * kZmm <= blocks; i += 4 * kZmm) {
    __m512i x[kZmm];
    for (int j = 0; j < kZmm; ++j) {
      x[j] = _mm512_xor_si512(base, k[0]);
      base = _mm512_add_epi64(base, four);
    }
    for (int r = 1; r < 14; ++r)
      for (int j = 0; j < kZmm; ++j) x[j] = _mm512_aesenc_epi128(x[j], k[r]);
    for (int j = 0; j < kZmm; ++j)
      _mm512_storeu_si512(reinterpret_cast<void*>(out + 16 * (i + 4 * j)), _mm512_aesenclast_epi128(x[j], k[14]));
  }
  return i;
}

}  // namespace

namespace {
FEDGE_AES_TARGET void encrypt_one(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]) {
  __m128i rk[15];
  expand_key(key, rk);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), encrypt(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)), rk));
}
template <bool Sub>
FEDGE_AES_TARGET void add_narrow(const __m128i rk[15], std::uint64_t ctr, std::uint32_t* acc, std::size_t blocks) {
  for (std::size_t i = 0; i < blocks; ++i) {
    const __m128i ks = encrypt(_mm_set_epi64x(0, static_cast<long long>(ctr + i)), rk);
    __m128i* p = reinterpret_cast<__m128i*>(acc + 4 * i);
    const __m128i a = _mm_loadu_si128(p);
    _mm_storeu_si128(p, Sub ? _mm_sub_epi32(a, ks) : _mm_add_epi32(a, ks));
  }
}

template <bool Sub>
FEDGE_VAES_TARGET std::size_t add_wide(const __m128i rk[15], std::uint64_t ctr, std::uint32_t* acc,
                                       std::size_t blocks) {
  __m512i k[15];
  for (int r = 0; r < 15; ++r) k[r] = _mm512_broadcast_i32x4(rk[r]);
  const auto c0 = static_cast<long long>(ctr);
  __m512i base = _mm512_set_epi64(0, c0 + 3, 0, c0 + 2, 0, c0 + 1, 0, c0);
  const __m512i four = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
  std::size_t i = 0;
  for (; i + 4 * kZmm <= blocks; i += 4 * kZmm) {
    __m512i x[kZmm];
    for (int j = 0; j < kZmm; ++j) {
      x[j] = _mm512_xor_si512(base, k[0]);
      base = _mm512_add_epi64(base, four);
    }
    for (int r = 1; r < 14; ++r)
      for (int j = 0; j < kZmm; ++j) x[j] = _mm512_aesenc_epi128(x[j], k[r]);
    for (int j = 0; j < kZmm; ++j) {
      void* p = acc + 4 * (i + 4 * j);
      const __m512i ks = _mm512_aesenclast_epi128(x[j], k[14]);
      const __m512i a = _mm512_loadu_si512(p);
      _mm512_storeu_si512(p, Sub ? _mm512_sub_epi32(a, ks) : _mm512_add_epi32(a, ks));
    }
  }
  return i;
}

}  // namespace

void x86_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc, std::size_t blocks,
                 bool subtract, bool wide) {
  alignas(16) __m128i rk[15];
  expand_key(key, rk);
  std::size_t done = 0;
  if (wide) done = subtract ? add_wide<true>(rk, first_block, acc, blocks) : add_wide<false>(rk, first_block, acc, blocks);
  if (subtract)
    add_narrow<true>(rk, first_block + done, acc + 4 * done, blocks - done);
  else
    add_narrow<false>(rk, first_block + done, acc + 4 * done, blocks - done);
}

void x86_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]) {
  encrypt_one(key, in, out);
}

void x86_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out, std::size_t blocks,
                       bool wide) {
  alignas(16) __m128i rk[15];
  expand_key(key, rk);
  std::size_t done = 0;
  if (wide) done = ctr_wide(rk, first_block, out, blocks);
  ctr_narrow(rk, first_block + done, out + 16 * done, blocks - done);
}

}  // namespace fedge::privacy::aes_detail

#endif  // FEDGE_AES_X86
