// bf16 matrix products for the frozen base in Model::forward_train*.
//
// LoRA training spends most of its time in the frozen projections: forward
// Y = X W^T and backward dX = dY W (no gradient for W). On CPUs with
// AVX512-BF16 libtorch's oneDNN runs bf16 GEMMs at about twice the f32 rate,
// so while a FrozenBaseBf16 scope is active on a thread those products take
// bf16 operands (X, dY and W rounded to bf16, f32 accumulation, the result
// rounded to bf16 and widened back to f32). Everything trainable (LoRA A/B,
// the optimizer, norms, attention) stays f32. Results differ from the f32
// path by bf16 rounding; tests/training/test_frozen_bf16.cpp bounds the
// difference in loss and LoRA gradients.
#pragma once

namespace fedge::inference {

// True when the CPU (and the kernel ISA in force, see set_kernel_isa) has
// AVX512-BF16; without it oneDNN's bf16 products are emulated and slower
// than f32, so callers should stay on f32.
bool bf16_matmul_fast();

// RAII: turns the frozen base's bf16 products on (or off) for this thread
// until destroyed; nests, restoring the previous setting.
class FrozenBaseBf16 {
 public:
  explicit FrozenBaseBf16(bool on = true);
  ~FrozenBaseBf16();
  FrozenBaseBf16(const FrozenBaseBf16&) = delete;
  FrozenBaseBf16& operator=(const FrozenBaseBf16&) = delete;
  static bool active();  // on this thread

 private:
  bool previous_;
};

}  // namespace fedge::inference
