#include "kernels.h"

// Each instruction set's kernels are compiled only for its architecture: x86
// gets AVX-512 / AVX2 (chosen at run time), aarch64 NEON (always present
// there), every CPU the portable C++ loops. A FEDGE_PORTABLE build still
// compiles the SIMD kernels (tests compare them) but starts on the portable one.
#if defined(__x86_64__)
#define FEDGE_KERNELS_X86 1
// GCC 12 flags the intrinsics headers' own undefined-vector idiom.
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"  // the fuzz build's clang lacks the next one
#endif
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#elif defined(__aarch64__)
#define FEDGE_KERNELS_NEON 1
#include <arm_neon.h>
#endif

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fedge/common/cpu_features.h"
#include "fedge/common/safetensors.h"  // f16 -> f32
#include "fedge/inference/quant.h"

namespace fedge::inference::kernels {
namespace {

// kScalar is the portable C++ path ("portable"); the order matters: every
// level from kAvx512 up has the AVX-512 dot and axpy.
enum class Isa { kScalar, kNeon, kAvx2, kAvx512, kAvx512Bf16 };

// Whether this CPU (and build) can run `level`.
bool cpu_has(Isa level) {
  switch (level) {
    case Isa::kScalar: return true;
#ifdef FEDGE_KERNELS_NEON
    case Isa::kNeon: return true;  // Advanced SIMD is part of every AArch64 CPU
#endif
#ifdef FEDGE_KERNELS_X86
    case Isa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::kAvx512: __builtin_cpu_init(); return __builtin_cpu_supports("avx512f");
    case Isa::kAvx512Bf16:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#endif
    default: return false;
  }
}

constexpr Isa kFastestFirst[] = {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2, Isa::kNeon, Isa::kScalar};

Isa detect() {
#if defined(FEDGE_PORTABLE) && FEDGE_PORTABLE
  return Isa::kScalar;
#else
  for (Isa level : kFastestFirst)
    if (cpu_has(level)) return level;
  return Isa::kScalar;
#endif
}

const char* name_of(Isa level) {
  switch (level) {
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kNeon: return "neon";
    default: return "portable";
  }
}

// Spin-wait hint for the pool's workers.
inline void cpu_relax() {
#ifdef FEDGE_KERNELS_X86
  _mm_pause();
#elif defined(FEDGE_KERNELS_NEON)
  asm volatile("yield");
#endif
}

std::atomic<int> forced{-1};  // set_isa override, -1: none

Isa isa() {
  static const Isa chosen = detect();
  const int f = forced.load(std::memory_order_relaxed);
  return f < 0 ? chosen : Isa(f);
}

inline float bf16(std::uint16_t b) {
  std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// An IEEE half weight: its own type, so the kernels' templates tell it from bf16.
struct Half {
  std::uint16_t bits;
};
static_assert(sizeof(Half) == 2);

inline float scalar_w(float v) { return v; }
inline float scalar_w(std::uint16_t v) { return bf16(v); }
inline float scalar_w(Half v) { return f16_to_f32(v.bits); }

// ---- scalar ----
template <typename W>
void rows_scalar(const W* w, const float* x, float* y, int rows, int in, int out, int j0, int j1) {
  for (int j = j0; j < j1; ++j) {
    const W* wr = w + std::size_t(j) * in;
    for (int r = 0; r < rows; ++r) {
      const float* xr = x + std::size_t(r) * in;
      float s = 0;
      for (int i = 0; i < in; ++i) {
        s += scalar_w(wr[i]) * xr[i];
      }
      y[std::size_t(r) * out + j] = s;
    }
  }
}

// ---- NEON (aarch64) ----
#ifdef FEDGE_KERNELS_NEON
inline float32x4_t load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t load4(const std::uint16_t* p) {  // bf16: the top half of an f32
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
inline float32x4_t load4(const Half* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p))));
}

// R input rows against each weight row: 16 weights per step into four
// independent accumulators per row (the fma latency is 4 cycles).
template <int R, typename W>
void block_neon(const W* w, const float* x, float* y, int in, int out, int j0, int j1) {
  for (int j = j0; j < j1; ++j) {
    const W* wr = w + std::size_t(j) * in;
    float32x4_t acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < 4; ++k) acc[r][k] = vdupq_n_f32(0);
    int i = 0;
    for (; i + 16 <= in; i += 16) {
      const float32x4_t w0 = load4(wr + i), w1 = load4(wr + i + 4), w2 = load4(wr + i + 8), w3 = load4(wr + i + 12);
      for (int r = 0; r < R; ++r) {
        const float* xr = x + std::size_t(r) * in + i;
        acc[r][0] = vfmaq_f32(acc[r][0], w0, vld1q_f32(xr));
        acc[r][1] = vfmaq_f32(acc[r][1], w1, vld1q_f32(xr + 4));
        acc[r][2] = vfmaq_f32(acc[r][2], w2, vld1q_f32(xr + 8));
        acc[r][3] = vfmaq_f32(acc[r][3], w3, vld1q_f32(xr + 12));
      }
    }
    for (; i + 4 <= in; i += 4) {
      const float32x4_t w0 = load4(wr + i);
      for (int r = 0; r < R; ++r) acc[r][0] = vfmaq_f32(acc[r][0], w0, vld1q_f32(x + std::size_t(r) * in + i));
    }
    for (int r = 0; r < R; ++r) {
      float s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[r][0], acc[r][1]), vaddq_f32(acc[r][2], acc[r][3])));
      for (int k = i; k < in; ++k) s += scalar_w(wr[k]) * x[std::size_t(r) * in + k];
      y[std::size_t(r) * out + j] = s;
    }
  }
}

float dot_neon(const float* a, const float* b, int n) {
  float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
    acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_neon(float a, const float* x, float* y, int n) {
  const float32x4_t av = vdupq_n_f32(a);
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), av, vld1q_f32(x + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}
#endif

#ifdef FEDGE_KERNELS_X86
// ---- AVX-512 ----
__attribute__((target("avx512f"))) inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f"))) inline __m512 load16(const std::uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
__attribute__((target("avx512f"))) inline __m512 load16(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// R input rows against J weight rows at once: each x load feeds J fmas and
// each weight load R, so for R = 4, J = 2 the loads no longer bound the fmas
// (8 rows in a continuous batch are two such blocks). Every (row, weight row)
// sum keeps its own two accumulators, added in the same order as with J = 1,
// so the result does not depend on J.
template <int R, int J, typename W>
__attribute__((target("avx512f"))) inline void rows_avx512(const W* w, const float* x, float* y, int in, int out,
                                                           int j) {
  const W* wr[J];
  __m512 acc0[J][R], acc1[J][R];
  for (int q = 0; q < J; ++q) {
    wr[q] = w + std::size_t(j + q) * in;
    for (int r = 0; r < R; ++r) acc0[q][r] = acc1[q][r] = _mm512_setzero_ps();
  }
  int i = 0;
  for (; i + 32 <= in; i += 32) {
    __m512 w0[J], w1[J];
    for (int q = 0; q < J; ++q) w0[q] = load16(wr[q] + i), w1[q] = load16(wr[q] + i + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 x0 = _mm512_loadu_ps(x + std::size_t(r) * in + i);
      const __m512 x1 = _mm512_loadu_ps(x + std::size_t(r) * in + i + 16);
      for (int q = 0; q < J; ++q) {
        acc0[q][r] = _mm512_fmadd_ps(w0[q], x0, acc0[q][r]);
        acc1[q][r] = _mm512_fmadd_ps(w1[q], x1, acc1[q][r]);
      }
    }
  }
  for (; i + 16 <= in; i += 16) {
    __m512 w0[J];
    for (int q = 0; q < J; ++q) w0[q] = load16(wr[q] + i);
    for (int r = 0; r < R; ++r) {
      const __m512 x0 = _mm512_loadu_ps(x + std::size_t(r) * in + i);
      for (int q = 0; q < J; ++q) acc0[q][r] = _mm512_fmadd_ps(w0[q], x0, acc0[q][r]);
    }
  }
  for (int q = 0; q < J; ++q) {
    for (int r = 0; r < R; ++r) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0[q][r], acc1[q][r]));
      for (int k = i; k < in; ++k) s += scalar_w(wr[q][k]) * x[std::size_t(r) * in + k];
      y[std::size_t(r) * out + j + q] = s;
    }
  }
}

template <int R, typename W>
__attribute__((target("avx512f"))) void block_avx512(const W* w, const float* x, float* y, int in,
                                                    int out, int j0, int j1) {
  int j = j0;
  for (; j + 2 <= j1; j += 2) rows_avx512<R, 2>(w, x, y, in, out, j);
  if (j < j1) rows_avx512<R, 1>(w, x, y, in, out, j);
}

// ---- AVX512-BF16: bf16 weights against activations split into bf16 hi + lo
// halves (x = hi + lo to ~16 bits), two vdpbf16ps per 32 weights.
template <int R>
__attribute__((target("avx512f,avx512bf16"))) void block_dp(const std::uint16_t* w, const std::uint16_t* xh,
                                                          const std::uint16_t* xl, const float* x, float* y,
                                                          int in, int out, int j0, int j1) {
  for (int j = j0; j < j1; ++j) {
    const std::uint16_t* wr = w + std::size_t(j) * in;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= in; i += 32) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(wr + i);
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_loadu_si512(xh + std::size_t(r) * in + i));
        acc[r] = _mm512_dpbf16_ps(acc[r], wv, (__m512bh)_mm512_loadu_si512(xl + std::size_t(r) * in + i));
      }
    }
    for (int r = 0; r < R; ++r) {
      float s = _mm512_reduce_add_ps(acc[r]);
      for (int k = i; k < in; ++k) s += bf16(wr[k]) * x[std::size_t(r) * in + k];
      y[std::size_t(r) * out + j] = s;
    }
  }
}

void run_range_dp(const std::uint16_t* w, const std::uint16_t* xs, const float* x, float* y, int rows, int in,
                  int out, int j0, int j1) {
  const std::size_t plane = std::size_t(rows) * in;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int n = std::min(4, rows - r0);
    const std::size_t off = std::size_t(r0) * in;
    const std::uint16_t *xh = xs + off, *xl = xs + plane + off;
    float* yr = y + std::size_t(r0) * out;
    switch (n) {
      case 1: block_dp<1>(w, xh, xl, x + off, yr, in, out, j0, j1); break;
      case 2: block_dp<2>(w, xh, xl, x + off, yr, in, out, j0, j1); break;
      case 3: block_dp<3>(w, xh, xl, x + off, yr, in, out, j0, j1); break;
      default: block_dp<4>(w, xh, xl, x + off, yr, in, out, j0, j1); break;
    }
  }
}

// ---- AVX2 ----
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const std::uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__attribute__((target("avx2,fma,f16c"))) inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

template <int R, typename W>
__attribute__((target("avx2,fma,f16c"))) void block_avx2(const W* w, const float* x, float* y, int in,
                                                   int out, int j0, int j1) {
  for (int j = j0; j < j1; ++j) {
    const W* wr = w + std::size_t(j) * in;
    __m256 acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= in; i += 16) {
      __m256 w0 = load8(wr + i), w1 = load8(wr + i + 8);
      for (int r = 0; r < R; ++r) {
        acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + std::size_t(r) * in + i), acc0[r]);
        acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + std::size_t(r) * in + i + 8), acc1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float s = hsum8(_mm256_add_ps(acc0[r], acc1[r]));
      for (int k = i; k < in; ++k) s += scalar_w(wr[k]) * x[std::size_t(r) * in + k];
      y[std::size_t(r) * out + j] = s;
    }
  }
}

#endif  // FEDGE_KERNELS_X86

// One block of R input rows against weight rows [j0, j1) on one path.
template <typename W>
using BlockFn = void (*)(const W* w, const float* x, float* y, int in, int out, int j0, int j1);

template <int R, typename W>
void block_scalar(const W* w, const float* x, float* y, int in, int out, int j0, int j1) {
  rows_scalar(w, x, y, R, in, out, j0, j1);
}

// The block kernel of instruction set `level` for R rows: one return per path,
// so a path can never fall through into another and overwrite its results.
template <int R, typename W>
BlockFn<W> block_for(Isa level) {
#ifdef FEDGE_KERNELS_NEON
  if (level == Isa::kNeon) return &block_neon<R, W>;
#endif
#ifdef FEDGE_KERNELS_X86
  if (level == Isa::kAvx512 || level == Isa::kAvx512Bf16) return &block_avx512<R, W>;
  if (level == Isa::kAvx2) return &block_avx2<R, W>;
#endif
  (void)level;
  return &block_scalar<R, W>;
}

template <typename W>
void run_range(const W* w, const float* x, float* y, int rows, int in, int out, int j0, int j1) {
  const Isa level = isa();
  const BlockFn<W> blocks[4] = {block_for<1, W>(level), block_for<2, W>(level), block_for<3, W>(level),
                                block_for<4, W>(level)};
  for (int r0 = 0; r0 < rows; r0 += 4) {
    const int n = std::min(4, rows - r0);
    blocks[n - 1](w, x + std::size_t(r0) * in, y + std::size_t(r0) * out, in, out, j0, j1);
  }
}


// A small pool for the decode kernels. Each thread of a job owns a
// contiguous share of its chunks and takes them front to back; a thread that
// runs out takes chunks from the back of another's share. So the caller never
// waits on a worker that the OS has not scheduled (2 shared cores are often
// oversubscribed; it only waits for chunks already claimed), and yet a thread
// touches no cache line another thread writes, except to steal: on a VM whose
// two cores sit on different dies a line moves between them in ~240 ns, and
// one shared claim counter (the previous design) made every chunk 2-3x slower
// at 2 threads than alone. The same thread also gets the same rows of every
// matrix each token.
class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Runs fn(ctx, chunk) for every chunk in [0, chunks) on `threads` threads.
  void run(int threads, int chunks, void (*fn)(const void*, int), const void* ctx) {
    // One caller at a time; a second concurrent caller (another model on
    // another thread) simply runs on its own thread.
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    threads = std::min({threads, chunks, kMaxThreads});
    if (threads <= 1 || !busy.owns_lock()) {
      for (int c = 0; c < chunks; ++c) fn(ctx, c);
      return;
    }
    ensure_workers(threads - 1);
    const std::uint64_t gen = (job_.generation.load(std::memory_order_relaxed) + 1) & 0xffffffffu;
    job_.fn.store(fn, std::memory_order_relaxed);
    job_.ctx.store(ctx, std::memory_order_relaxed);
    job_.threads.store(threads, std::memory_order_relaxed);
    for (int t = 0; t < threads; ++t) {
      const std::uint64_t begin = std::uint64_t(chunks) * t / threads, end = std::uint64_t(chunks) * (t + 1) / threads;
      shares_[t].word.store(gen << 32 | begin << 16 | end, std::memory_order_relaxed);
    }
    // seq_cst, with the load of sleeping_ after it: a worker going to sleep
    // then either sees this generation or is counted in sleeping_.
    job_.generation.store(gen, std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      cv_.notify_all();
    }
    const int mine = work(0, gen, threads, fn, ctx);
    int spins = 0;
    while (mine + completed_by_workers(gen, threads) < chunks)
      if (++spins > 64) std::this_thread::yield();
  }

 private:
  static constexpr int kMaxThreads = 64;
  // A thread's share of the current job: generation (32 bits) | next chunk
  // (16 bits) | end (16 bits). Owners take `next`, thieves take `end - 1`.
  struct alignas(64) Share {
    std::atomic<std::uint64_t> word{0};
  };
  // What thread i (0: the caller) has run of job `generation` (32 bits):
  // chunks run (32 bits). Written once its own share is exhausted, and again
  // after each steal.
  struct alignas(64) Done {
    std::atomic<std::uint64_t> word{0};
  };
  // One cache line, written once per job: what the workers wait on and read.
  struct alignas(64) Job {
    std::atomic<std::uint64_t> generation{0};
    std::atomic<void (*)(const void*, int)> fn{nullptr};
    std::atomic<const void*> ctx{nullptr};
    std::atomic<int> threads{0};
  };

  // Claims one chunk of share `s` for generation `gen`: from the front for
  // its owner, from the back for a thief. -1 when the share is empty or the
  // job is over.
  static int claim(Share& s, std::uint64_t gen, bool owner) {
    std::uint64_t w = s.word.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t next = (w >> 16) & 0xffff, end = w & 0xffff;
      if ((w >> 32) != gen || next >= end) return -1;
      const std::uint64_t taken = owner ? w + (1u << 16) : w - 1;
      if (s.word.compare_exchange_weak(w, taken, std::memory_order_acq_rel)) return int(owner ? next : end - 1);
    }
  }

  // Runs this thread's share; then, for each other thread that has not
  // finished its own share within a grace period, takes what is left of it
  // from the back. The grace period (half the time this thread's own share
  // took, at least 2 us) keeps the common case free of stealing: a steal
  // moves the victim's claim word to the thief's core and back, ~0.5 us a
  // chunk on a VM whose cores are on different dies. Returns the number of
  // chunks this thread ran.
  int work(int self, std::uint64_t gen, int threads, void (*fn)(const void*, int), const void* ctx) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    int ran = 0;
    for (int c; (c = claim(shares_[self], gen, true)) >= 0; ++ran) fn(ctx, c);
    publish(self, gen, ran);
    const auto grace = std::max<clock::duration>((clock::now() - start) / 2, std::chrono::microseconds(2));
    for (int k = 1; k < threads; ++k) {
      const int other = (self + k) % threads;
      const auto deadline = clock::now() + grace;
      while (!finished_own_share(other, gen) && clock::now() < deadline) {
        if (job_.generation.load(std::memory_order_relaxed) != gen) return ran;  // the job is over
        cpu_relax();
      }
      if (finished_own_share(other, gen)) continue;
      const int before = ran;
      for (int c; (c = claim(shares_[other], gen, false)) >= 0; ++ran) fn(ctx, c);
      if (ran != before) publish(self, gen, ran);
    }
    return ran;
  }

  void publish(int self, std::uint64_t gen, int ran) {
    done_[self].word.store(gen << 32 | std::uint64_t(ran), std::memory_order_release);
  }
  bool finished_own_share(int thread, std::uint64_t gen) const {
    return (done_[thread].word.load(std::memory_order_acquire) >> 32) == gen;
  }

  int completed_by_workers(std::uint64_t gen, int threads) const {
    int sum = 0;
    for (int i = 1; i < threads; ++i) {
      const std::uint64_t w = done_[i].word.load(std::memory_order_acquire);
      if ((w >> 32) == gen) sum += int(w & 0xffffffffu);
    }
    return sum;
  }

  void ensure_workers(int n) {
    while (int(workers_.size()) < n) {
      const int index = int(workers_.size());
      workers_.emplace_back([this, index] { loop(index); });
    }
  }

  // Worker `index` is thread index + 1 of a job (the caller is thread 0).
  void loop(int index) {
    std::uint64_t seen = job_.generation.load(std::memory_order_acquire);
    for (;;) {
      std::uint64_t gen = seen;
      // Spin briefly (jobs come microseconds apart while decoding), then sleep.
      for (int i = 0; i < 20000 && gen == seen; ++i) {
        cpu_relax();
        gen = job_.generation.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.fetch_add(1, std::memory_order_seq_cst);
        cv_.wait(lock, [&] { return stop_ || job_.generation.load(std::memory_order_seq_cst) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_acq_rel);
        if (stop_) return;
        gen = job_.generation.load(std::memory_order_acquire);
      }
      seen = gen;
      // The job may already be over (and the next one being written): then
      // every claim below fails on the generation, so a stale fn is never run.
      const int threads = job_.threads.load(std::memory_order_relaxed);
      if (index + 1 >= threads) continue;
      work(index + 1, gen, threads, job_.fn.load(std::memory_order_relaxed), job_.ctx.load(std::memory_order_relaxed));
    }
  }

  std::vector<std::thread> workers_;
  Job job_;
  Share shares_[kMaxThreads];
  Done done_[kMaxThreads];
  alignas(64) std::atomic<int> sleeping_{0};
  std::mutex mutex_, busy_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// Rows of output per chunk: big enough to amortise the claim, small enough
// to balance two threads.
constexpr long kChunkRows = 32;

void run_job(const MatvecJob& j, const float* x, const std::uint16_t* xs, int rows, int in, int j0, int j1) {
  switch (j.dtype) {
    case Dtype::kBF16:
#ifdef FEDGE_KERNELS_X86
      if (xs) {
        run_range_dp(static_cast<const std::uint16_t*>(j.w), xs, x, j.y, rows, in, j.out, j0, j1);
        break;
      }
#endif
      (void)xs;
      run_range(static_cast<const std::uint16_t*>(j.w), x, j.y, rows, in, j.out, j0, j1);
      break;
    case Dtype::kF16: run_range(static_cast<const Half*>(j.w), x, j.y, rows, in, j.out, j0, j1); break;
    case Dtype::kF32: run_range(static_cast<const float*>(j.w), x, j.y, rows, in, j.out, j0, j1); break;
  }
}

#ifdef FEDGE_KERNELS_X86
__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, int n) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  float s = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
__attribute__((target("avx512f"))) void axpy_avx512(float a, const float* x, float* y, int n) {
  __m512 av = _mm512_set1_ps(a);
  int i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}
#endif

// Softmax's first half, shared by attend's paths: sc[s] = exp(sc[s] - max)
// in place; returns 1 / their sum.
float exponentiate_scores(float* sc, int n) {
  float mx = -INFINITY;
  for (int s = 0; s < n; ++s) mx = std::max(mx, sc[s]);
  float sum = 0;
  for (int s = 0; s < n; ++s) {
    sc[s] = std::exp(sc[s] - mx);
    sum += sc[s];
  }
  return 1.0f / sum;
}

#ifdef FEDGE_KERNELS_X86
// attend() on AVX-512 for hd = 16 * C: scores four positions at a time (four
// independent chains), then the weighted sum of V with the head's C output
// vectors held in registers across all positions.
template <int C>
__attribute__((target("avx512f"))) void attend_avx512(const float* q, const float* K, const float* V, int last,
                                                       float scale, float* sc, float* out) {
  constexpr int hd = 16 * C;
  __m512 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
  const int n = last + 1;
  int s = 0;
  for (; s + 4 <= n; s += 4) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float* k = K + std::size_t(s) * hd;
    for (int c = 0; c < C; ++c) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(k + 16 * c), qv[c], a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(k + hd + 16 * c), qv[c], a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(k + 2 * hd + 16 * c), qv[c], a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(k + 3 * hd + 16 * c), qv[c], a3);
    }
    sc[s] = _mm512_reduce_add_ps(a0) * scale;
    sc[s + 1] = _mm512_reduce_add_ps(a1) * scale;
    sc[s + 2] = _mm512_reduce_add_ps(a2) * scale;
    sc[s + 3] = _mm512_reduce_add_ps(a3) * scale;
  }
  for (; s < n; ++s) {
    __m512 a = _mm512_setzero_ps();
    for (int c = 0; c < C; ++c) a = _mm512_fmadd_ps(_mm512_loadu_ps(K + std::size_t(s) * hd + 16 * c), qv[c], a);
    sc[s] = _mm512_reduce_add_ps(a) * scale;
  }
  const float inv = exponentiate_scores(sc, n);
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (s = 0; s < n; ++s) {
    const __m512 p = _mm512_set1_ps(sc[s] * inv);
    const float* v = V + std::size_t(s) * hd;
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[c]);
  }
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + 16 * c, acc[c]);
}
#endif

}  // namespace

void matvec_f32(const float* w, const float* x, float* y, int rows, int in, int out) {
  MatvecJob job{w, Dtype::kF32, y, out};
  matvec_group(&job, 1, x, rows, in);
}
void matvec_bf16(const std::uint16_t* w, const float* x, float* y, int rows, int in, int out) {
  MatvecJob job{w, Dtype::kBF16, y, out};
  matvec_group(&job, 1, x, rows, in);
}
void matvec_f16(const std::uint16_t* w, const float* x, float* y, int rows, int in, int out) {
  MatvecJob job{w, Dtype::kF16, y, out};
  matvec_group(&job, 1, x, rows, in);
}

void matvec_group(const MatvecJob* jobs, int count, const float* x, int rows, int in) {
  long total = 0;
  for (int i = 0; i < count; ++i) total += jobs[i].out;
  struct Ctx {
    const MatvecJob* jobs;
    int count;
    const float* x;
    const std::uint16_t* xs;
    int rows, in;
    long total, chunk_rows;
  } ctx{jobs, count, x, nullptr, rows, in, total, std::max(kChunkRows, (total + 0xfffe) / 0xffff)};
  bool any_bf16 = false;
  for (int i = 0; i < count; ++i) any_bf16 |= jobs[i].dtype == Dtype::kBF16;
  thread_local std::vector<std::uint16_t> split;
  if (any_bf16 && isa() == Isa::kAvx512Bf16) {
    // hi = x truncated to bf16, lo = the remainder rounded to bf16.
    const std::size_t n = std::size_t(rows) * in;
    split.resize(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t u;
      std::memcpy(&u, x + i, 4);
      const std::uint16_t hi = std::uint16_t(u >> 16);
      const float rest = x[i] - bf16(hi);
      std::uint32_t v;
      std::memcpy(&v, &rest, 4);
      v += 0x7fff + ((v >> 16) & 1);  // round to nearest even
      split[i] = hi;
      split[n + i] = std::uint16_t(v >> 16);
    }
    ctx.xs = split.data();
  }
  auto chunk = [](const void* p, int c) {
    const Ctx& k = *static_cast<const Ctx*>(p);
    const long g0 = c * k.chunk_rows, g1 = std::min(k.total, g0 + k.chunk_rows);
    // Walk the concatenated output rows [g0, g1) job by job.
    long base = 0;
    for (int i = 0; i < k.count; ++i) {
      const long lo = std::max(g0, base), hi = std::min(g1, base + k.jobs[i].out);
      if (lo < hi) run_job(k.jobs[i], k.x, k.xs, k.rows, k.in, int(lo - base), int(hi - base));
      base += k.jobs[i].out;
    }
  };
  // Small products are not worth waking the other threads.
  const int threads = total * in < (1l << 15) ? 1 : omp_get_max_threads();
  const long chunks = (total + ctx.chunk_rows - 1) / ctx.chunk_rows;
  Pool::instance().run(threads, int(chunks), chunk, &ctx);
}

void parallel_for(int tasks, void (*fn)(const void*, int), const void* ctx, bool parallel) {
  // Chunk counts are 16-bit in the pool's state word.
  if (tasks > 0xffff || !parallel) {
    for (int t = 0; t < tasks; ++t) fn(ctx, t);
    return;
  }
  Pool::instance().run(omp_get_max_threads(), tasks, fn, ctx);
}

namespace {
// The quantized products (fedge_quant, which has no pool of its own) run on
// this pool too, wherever the model's kernels are linked in.
const bool quant_uses_pool = (quant::set_parallel_for(&parallel_for), true);
}  // namespace

void attend(const float* q, const float* K, const float* V, int last, int hd, float scale, float* sc, float* out) {
#ifdef FEDGE_KERNELS_X86
  if (isa() >= Isa::kAvx512) {
    switch (hd) {
      case 16: return attend_avx512<1>(q, K, V, last, scale, sc, out);
      case 32: return attend_avx512<2>(q, K, V, last, scale, sc, out);
      case 48: return attend_avx512<3>(q, K, V, last, scale, sc, out);
      case 64: return attend_avx512<4>(q, K, V, last, scale, sc, out);
      case 80: return attend_avx512<5>(q, K, V, last, scale, sc, out);
      case 96: return attend_avx512<6>(q, K, V, last, scale, sc, out);
      case 128: return attend_avx512<8>(q, K, V, last, scale, sc, out);
      default: break;
    }
  }
#endif
  for (int s = 0; s <= last; ++s) sc[s] = dot(q, K + std::size_t(s) * hd, hd) * scale;
  const float inv = exponentiate_scores(sc, last + 1);
  std::fill_n(out, hd, 0.f);
  for (int s = 0; s <= last; ++s)
    if (sc[s] != 0.f) axpy(sc[s] * inv, V + std::size_t(s) * hd, out, hd);
}

float dot(const float* a, const float* b, int n) {
#ifdef FEDGE_KERNELS_X86
  if (isa() >= Isa::kAvx512) return dot_avx512(a, b, n);
#elif defined(FEDGE_KERNELS_NEON)
  if (isa() == Isa::kNeon) return dot_neon(a, b, n);
#endif
  float s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int n) {
#ifdef FEDGE_KERNELS_X86
  if (isa() >= Isa::kAvx512) return axpy_avx512(a, x, y, n);
#elif defined(FEDGE_KERNELS_NEON)
  if (isa() == Isa::kNeon) return axpy_neon(a, x, y, n);
#endif
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

bool set_isa(const char* name) {
  std::string n = name ? name : "";
  if (n.empty() || n == "auto") {
    forced = -1;
    return true;
  }
  if (n == "scalar") n = "portable";  // the portable path's older name
  for (Isa level : kFastestFirst)
    if (n == name_of(level)) {
      if (!cpu_has(level)) return false;
      forced = int(level);
      return true;
    }
  return false;
}

const char* isa_name() { return name_of(isa()); }

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (Isa level : kFastestFirst)
    if (cpu_has(level)) out.emplace_back(name_of(level));
  return out;
}

}  // namespace fedge::inference::kernels

#include "fedge/inference/kernels_info.h"

namespace fedge::inference {
const char* kernel_isa() { return kernels::isa_name(); }
bool set_kernel_isa(const char* name) { return kernels::set_isa(name); }
std::vector<std::string> available_kernel_isas() { return kernels::available_isas(); }
}  // namespace fedge::inference
