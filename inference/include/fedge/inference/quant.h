// Quantized weight formats with GGUF's block layouts (llama.cpp's ggml-quants:
// Q8_0 and Q4_0, 32 weights per block with an f16 scale) and the kernels that
// use them without unpacking a matrix to f32: a weight row is dotted with an
// activation row quantized to Q8_0, block by block, as llama.cpp does.
//
// Results do not depend on the instruction set: each block's integer dot
// product is exact (AVX2 and the portable path compute the same int32), and
// the blocks' scaled sums are added in one fixed order on every path (block b
// into accumulator b % 8, then the 8 accumulators in a fixed tree), with the
// same roundings (no fused multiply-add).
// Quantization is deterministic (round to nearest as GGUF's reference code).
//
// This library has no libtorch (fedge_quant), so the kernels build for any
// CPU; AVX2 is chosen at run time on x86, the portable C++ path elsewhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace fedge::inference::quant {

inline constexpr int kBlockSize = 32;  // weights per block (QK8_0 = QK4_0 = 32)

// Q8_0: scale d (f16 bits) and 32 signed bytes; weight i = d * qs[i].
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[kBlockSize];
};
// Q4_0: scale d (f16 bits) and 16 bytes of nibbles; byte j holds weight j in
// its low nibble and weight j + 16 in its high nibble; weight = d * (nibble - 8).
struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[kBlockSize / 2];
};
static_assert(sizeof(BlockQ8_0) == 34, "GGUF's Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "GGUF's Q4_0 block is 18 bytes");

enum class QuantType { kQ8_0, kQ4_0 };
const char* quant_type_name(QuantType type);
// Bytes of a row of n weights (n a multiple of 32).
std::size_t row_bytes(QuantType type, std::int64_t n);

// x has n floats, n a multiple of 32 (Error(kInvalidInput) otherwise); y has
// n / 32 blocks. Non-finite inputs are refused (Error(kInvalidInput)): a
// quantized model must not carry NaN scales.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, std::int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, std::int64_t n);

// sum_i w_i * a_i over n weights, with the activation row already in Q8_0.
float vec_dot_q8_0_q8_0(std::int64_t n, const BlockQ8_0* w, const BlockQ8_0* a);
float vec_dot_q4_0_q8_0(std::int64_t n, const BlockQ4_0* w, const BlockQ8_0* a);

// y[j] = sum_i w[j, i] * x[i] for j < out, w a row-major [out, in] matrix of
// blocks (in a multiple of 32); x is quantized to Q8_0 once, rows are split
// over the OpenMP threads.
void matvec_q8_0(const BlockQ8_0* w, const float* x, float* y, int in, int out);
void matvec_q4_0(const BlockQ4_0* w, const float* x, float* y, int in, int out);

// The model's entry points, by type: w is a row-major [out, in] matrix of
// `type` blocks (in a multiple of 32).
// y [rows, out] = x [rows, in] W^T; each activation row is quantized to Q8_0
// once and every weight row is read once for all input rows.
void matmul(QuantType type, const void* w, const float* x, float* y, int rows, int in, int out);
// Rows of weights <-> f32 (a whole [rows, in] matrix; y has rows * in floats).
void quantize_rows(QuantType type, const float* x, void* y, std::int64_t rows, std::int64_t in);
void dequantize_rows(QuantType type, const void* w, float* y, std::int64_t rows, std::int64_t in);

// Runs fn(ctx, i) for every i in [0, tasks), on several threads when
// `parallel`, returning when all are done. The products split their output
// rows into such tasks. fedge_inference installs its decode thread pool
// (kernels::parallel_for: the caller works too and threads claim tasks, so a
// thread the OS has not scheduled holds nothing up); without one, or after
// set_parallel_for(nullptr), OpenMP runs them.
using ParallelFor = void (*)(int tasks, void (*fn)(const void*, int), const void* ctx, bool parallel);
void set_parallel_for(ParallelFor runner);

// Forces the kernels' instruction set ("avx2", "scalar"; "auto" or empty
// restores detection); false when this CPU lacks it. isa_name(): the one in use.
bool set_isa(const char* name);
const char* isa_name();

}  // namespace fedge::inference::quant
