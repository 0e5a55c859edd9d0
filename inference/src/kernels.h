// CPU kernels for the inference path: matrix-vector products over f32 or
// bf16 weights (memory-bound at batch 1, so they stream each weight row once
// for up to four input rows), with AVX-512 / AVX2 chosen at run time.
#pragma once

#include <cstdint>

namespace fedge::inference::kernels {

// y[r, j] = sum_i w[j, i] * x[r, i] for r < rows, j < out; w is [out, in]
// row-major. Output rows are split across the OpenMP threads.
void matvec_f32(const float* w, const float* x, float* y, int rows, int in, int out);
void matvec_bf16(const std::uint16_t* w, const float* x, float* y, int rows, int in, int out);

// Several products over the same input x (q/k/v, gate/up) in one parallel
// region: fewer thread wake-ups and barriers per decoded token.
struct MatvecJob {
  const void* w;  // [out, in], f32 or bf16
  bool bf16;
  float* y;       // [rows, out]
  int out;
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
