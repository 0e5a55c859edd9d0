// Quantized weight formats with GGUF's block layouts (llama.cpp's ggml-quants:
// Q8_0, Q4_0 and Q5_0, 32 weights per block with an f16 scale, and the
// k-quants Q4_K and Q6_K, 256 weights per super-block) and the kernels that
// use them without unpacking a matrix to f32: a weight row is dotted with an
// activation row quantized to Q8_0, block by block, as llama.cpp does.
//
// Results do not depend on the instruction set: each block's integer dot
// product is exact (AVX-512, AVX2 and the portable path compute the same
// int32 however they split it), and the float part is one fixed sequence on
// every path: per block, scale = f32(w.d) * f32(a.d) and term = scale *
// f32(isum), rounded as written (no fused multiply-add); block b's term is
// added to accumulator b % 8 in block order; the row's sum is
// ((acc0 + acc1) + (acc2 + acc3)) + ((acc4 + acc5) + (acc6 + acc7)).
// A k-quant row is read as 32-weight units that meet one activation block
// each, with the same 8 accumulators: Q6_K's unit sum is the exact int32
// scales[2u] * isum(first 16) + scales[2u + 1] * isum(last 16) and its term
// (f32(d) * f32(a.d)) * f32(sum); Q4_K's term is f32(a.d) * ((f32(d) *
// f32(scale)) * f32(isum) - (f32(dmin) * f32(min)) * f32(asum)), asum the
// activation block's byte sum.
// Activation rows are quantized by one rule on every path (GGUF's reference:
// d = max|x| / 127, round half away from zero), so their bytes are identical
// too; their bytes lie in [-127, 127], which the AVX2 path relies on.
// Quantization is deterministic (round to nearest as GGUF's reference code).
//
// This library has no libtorch (fedge_quant), so the kernels build for any
// CPU; on x86 the best of AVX-512 (F, BW, VL, DQ, VNNI and VBMI: Ice Lake,
// Zen 4 and later), AVX2 and the portable C++ path is chosen at run time.
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
// Q5_0: scale d (f16 bits), the 32 weights' fifth bits (qh, little-endian
// bit j = weight j) and their low four bits packed as Q4_0's nibbles;
// weight = d * (five-bit value - 16).
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];
  std::uint8_t qs[kBlockSize / 2];
};
static_assert(sizeof(BlockQ8_0) == 34, "GGUF's Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "GGUF's Q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "GGUF's Q5_0 block is 22 bytes");

// The k-quants: a super-block of 256 weights in 8 (Q4_K) or 16 (Q6_K)
// sub-blocks, each with a small integer scale under one f16 scale.
inline constexpr int kSuperBlockSize = 256;  // QK_K
// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes
// (sub-block j < 4: scale = scales[j] & 63, min = scales[j + 4] & 63; j >= 4:
// scale = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4, min =
// (scales[j + 4] >> 4) | (scales[j] >> 6) << 4); weight = d * scale * q - dmin
// * min with q the 4-bit value. qs holds 64 weights per 32 bytes: weight
// 64c + l in the low nibble of qs[32c + l], weight 64c + 32 + l in its high one.
struct BlockQ4_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[12];
  std::uint8_t qs[kSuperBlockSize / 2];
};
// Q6_K: 16 sub-blocks of 16 with int8 scales; weight = d * scales[i / 16] *
// (q - 32) with q the 6-bit value, whose low 4 bits are in ql and high 2 in qh:
// in half h (128 weights), weight 128h + 32p + l (p < 4, l < 32) has low bits
// ql[64h + l + 32 (p & 1)] >> 4 (p >> 1) and high bits qh[32h + l] >> 2p.
struct BlockQ6_K {
  std::uint8_t ql[kSuperBlockSize / 2];
  std::uint8_t qh[kSuperBlockSize / 4];
  std::int8_t scales[kSuperBlockSize / 16];
  std::uint16_t d;
};
static_assert(sizeof(BlockQ4_K) == 144, "GGUF's Q4_K block is 144 bytes");
static_assert(sizeof(BlockQ6_K) == 210, "GGUF's Q6_K block is 210 bytes");

enum class QuantType { kQ8_0, kQ4_0, kQ5_0, kQ4_K, kQ6_K };
const char* quant_type_name(QuantType type);
// Weights per block (32, or 256 for the k-quants) and bytes per block.
int block_weights(QuantType type);
std::size_t block_bytes(QuantType type);
// Bytes of a row of n weights (n a multiple of block_weights(type)).
std::size_t row_bytes(QuantType type, std::int64_t n);

// x has n floats, n a multiple of the block size (Error(kInvalidInput)
// otherwise); y has n / block size blocks. Non-finite inputs are refused
// (Error(kInvalidInput)): a quantized model must not carry NaN scales.
// Q8_0, Q4_0 and Q5_0 follow GGUF's reference rounding; Q4_K and Q6_K choose
// each sub-block's scale (and Q4_K's min) by a least-squares search over
// candidate scales, as llama.cpp's reference quantizers do.
void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t n);
void quantize_row_q5_0(const float* x, BlockQ5_0* y, std::int64_t n);
void quantize_row_q4_k(const float* x, BlockQ4_K* y, std::int64_t n);
void quantize_row_q6_k(const float* x, BlockQ6_K* y, std::int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, std::int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, std::int64_t n);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, std::int64_t n);
void dequantize_row_q4_k(const BlockQ4_K* x, float* y, std::int64_t n);
void dequantize_row_q6_k(const BlockQ6_K* x, float* y, std::int64_t n);

// sum_i w_i * a_i over n weights, with the activation row already in Q8_0
// (every type meets Q8_0 activations: a k-quant's 32-weight sub-blocks, or
// Q6_K's pairs of 16, line up with the activation's blocks).
float vec_dot_q8_0_q8_0(std::int64_t n, const BlockQ8_0* w, const BlockQ8_0* a);
float vec_dot_q4_0_q8_0(std::int64_t n, const BlockQ4_0* w, const BlockQ8_0* a);
float vec_dot_q5_0_q8_0(std::int64_t n, const BlockQ5_0* w, const BlockQ8_0* a);
float vec_dot_q4_k_q8_0(std::int64_t n, const BlockQ4_K* w, const BlockQ8_0* a);
float vec_dot_q6_k_q8_0(std::int64_t n, const BlockQ6_K* w, const BlockQ8_0* a);

// y[j] = sum_i w[j, i] * x[i] for j < out, w a row-major [out, in] matrix of
// blocks (in a multiple of 32); x is quantized to Q8_0 once, rows are split
// over the threads (see set_parallel_for). The same as matmul with rows = 1.
void matvec_q8_0(const BlockQ8_0* w, const float* x, float* y, int in, int out);
void matvec_q4_0(const BlockQ4_0* w, const float* x, float* y, int in, int out);

// The model's entry points, by type: w is a row-major [out, in] matrix of
// `type` blocks (in a multiple of block_weights(type)).
// y [rows, out] = x [rows, in] W^T; each activation row is quantized to Q8_0
// once, and every weight row is read from memory once and dotted with all the
// activation rows while it sits in L1; output rows are split over the
// threads. Row r of y has exactly the bits of a matvec of x's row r.
void matmul(QuantType type, const void* w, const float* x, float* y, int rows, int in, int out);
// Several products of one type over the same x (q/k/v, gate/up): x is
// quantized once and all of them run in one parallel region (one wake-up of
// the threads instead of one per product). Each y has the bits matmul gives.
inline constexpr int kMaxGroup = 8;
struct MatmulJob {
  const void* w;  // [out, in] blocks of the group's type
  float* y;       // [rows, out]
  int out;
};
void matmul_group(QuantType type, const MatmulJob* jobs, int count, const float* x, int rows, int in);
// Rows of weights <-> f32 (a whole [rows, in] matrix; y has rows * in floats).
void quantize_rows(QuantType type, const float* x, void* y, std::int64_t rows, std::int64_t in);
void dequantize_rows(QuantType type, const void* w, float* y, std::int64_t rows, std::int64_t in);

// Runs fn(ctx, i) for every i in [0, tasks), on several threads when
// `parallel`, returning when all are done. The products split their output
// rows into such tasks. fedge_inference installs its decode thread pool
// (kernels::parallel_for: the caller works too and threads claim tasks, so a
// thread the OS has not scheduled holds nothing up); without one, or after
// set_parallel_for(nullptr), OpenMP runs them. The pool gives each thread a
// contiguous share of the tasks (see inference/src/kernels.cpp).
using ParallelFor = void (*)(int tasks, void (*fn)(const void*, int), const void* ctx, bool parallel);
void set_parallel_for(ParallelFor runner);

// How far ahead of the weight rows it is reading a product asks the CPU to
// fetch them (__builtin_prefetch), in bytes; 0 turns it off. Default 4096:
// on the 2-core EPYC VM it made a decoded token's Q4_0 products 25-30%
// faster at 1 and 2 threads and Q8_0's 0-3% (bench_quant measures both ways
// in one run, docs/PERFORMANCE.md). For benchmarks and tuning on a board.
void set_prefetch_bytes(int bytes);
int prefetch_bytes();

// Forces the kernels' instruction set ("avx512", "avx2", "scalar"; "auto" or
// empty restores detection); false when this CPU lacks it. isa_name(): the
// one in use. Every choice gives the same bits (tests compare them).
bool set_isa(const char* name);
const char* isa_name();

}  // namespace fedge::inference::quant
