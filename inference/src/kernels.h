// CPU kernels for the inference path: matrix-vector products over f32, bf16
// or f16 weights (memory-bound at batch 1, so they stream each weight row once
// for up to four input rows), with AVX-512 / AVX2 (x86) or NEON (aarch64)
// chosen at run time and a portable C++ path everywhere (the only one in a
// FEDGE_PORTABLE build unless a test forces another). Part of fedge_kernels,
// which has no libtorch.
//
// The float paths add in different orders (SIMD lanes, FMA), so they agree to
// rounding, not bit for bit: for a dot of n terms, two paths differ by at most
// n * 2^-23 * sum_i |w_i x_i| (twice the textbook bound for one path), and the
// AVX512-BF16 path, which splits x into two bf16 halves, by 2^-15 * sum_i
// |w_i x_i| more. tests/kernels checks every path against these bounds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fedge::inference::kernels {

// y[r, j] = sum_i w[j, i] * x[r, i] for r < rows, j < out; w is [out, in]
// row-major. Output rows are split across the OpenMP threads.
void matvec_f32(const float* w, const float* x, float* y, int rows, int in, int out);
void matvec_bf16(const std::uint16_t* w, const float* x, float* y, int rows, int in, int out);
// IEEE half weights (a GGUF F16 tensor, an embedding or LM head kept in f16):
// converted in registers (F16C / AVX-512), the f32 kernel's order of adds.
void matvec_f16(const std::uint16_t* w, const float* x, float* y, int rows, int in, int out);

// The element type of a job's weights.
enum class Dtype : std::uint8_t { kF32, kBF16, kF16 };

// Several products over the same input x (q/k/v, gate/up) in one parallel
// region: fewer thread wake-ups and barriers per decoded token.
struct MatvecJob {
  const void* w;  // [out, in] of dtype
  Dtype dtype;
  float* y;  // [rows, out]
  int out;

  MatvecJob(const void* weights, Dtype type, float* result, int outputs)
      : w(weights), dtype(type), y(result), out(outputs) {}
  // The older form, {w, bf16, y, out}: true means bf16, false f32.
  MatvecJob(const void* weights, bool bf16, float* result, int outputs)
      : MatvecJob(weights, bf16 ? Dtype::kBF16 : Dtype::kF32, result, outputs) {}
};
void matvec_group(const MatvecJob* jobs, int count, const float* x, int rows, int in);

// Runs fn(ctx, i) for i in [0, tasks) on the kernels' thread pool (serially
// when !parallel), so attention and products share one set of threads.
void parallel_for(int tasks, void (*fn)(const void*, int), const void* ctx, bool parallel = true);

float dot(const float* a, const float* b, int n);
void axpy(float a, const float* x, float* y, int n);  // y += a * x

// One head's attention over positions 0..last of its cache: out[hd] =
// softmax(scale * K q) V, K and V [last + 1, hd] row-major; `scores` holds
// last + 1 floats of scratch. On AVX-512 with hd a multiple of 16 up to 128
// the whole head runs in registers (no call per position); elsewhere it is
// dot, exp and axpy per position.
void attend(const float* q, const float* K, const float* V, int last, int hd, float scale, float* scores, float* out);

// Forces an instruction set ("avx512bf16", "avx512", "avx2", "neon",
// "portable" or its older name "scalar"; "auto" or empty restores detection).
// Returns false when this CPU lacks it. Process-wide: tests that force one
// restore "auto".
bool set_isa(const char* name);

// Name of the instruction set in use (one of set_isa's names, "portable" for
// the portable path).
const char* isa_name();

// Every instruction set set_isa accepts on this CPU, fastest first; the
// last is always "portable".
std::vector<std::string> available_isas();

}  // namespace fedge::inference::kernels
