// CPU kernels for the inference path: matrix-vector products over f32, bf16
// or f16 weights (memory-bound at batch 1, so they stream each weight row once
// for up to four input rows), with AVX-512 / AVX2 chosen at run time.
#pragma once

#include <cstdint>

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

// Forces an instruction set ("avx512", "avx2", "scalar"; "auto" or empty
// restores detection). Returns false when this CPU lacks it.
bool set_isa(const char* name);

// Name of the instruction set chosen ("avx512", "avx2", "scalar").
const char* isa_name();

}  // namespace fedge::inference::kernels
