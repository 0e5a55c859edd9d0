#include "kernels_frozen_bf16.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cstring>

#include "fedge/inference/frozen_bf16.h"
#include "fedge/inference/kernels_info.h"
#include "fedge/inference/model.h"

namespace fedge::inference {
namespace {

thread_local bool bf16_on = false;

at::Tensor as_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? t : t.to(at::kBFloat16); }

// A frozen weight matrix in bf16; a packed one (f16, Q8_0, Q4_0: QLoRA's
// base) is widened for this product only, never kept.
at::Tensor weight_as_bf16(const at::Tensor& w) {
  return is_quantized(weight_type_of(w)) ? weight_to_f32(w).to(at::kBFloat16) : as_bf16(w);
}

// Keeps only W (as the f32 FrozenLinear does). W is rounded to bf16 again in
// backward rather than kept: a bf16 copy of every projection alive until
// backward would add half the base's size to peak memory, and the rounding
// pass costs well under 1% of the step.
struct FrozenLinearBf16 : torch::autograd::Function<FrozenLinearBf16> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->saved_data["w"] = w;
    return at::linear(as_bf16(x), weight_as_bf16(w)).to(at::kFloat);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor w = weight_as_bf16(ctx->saved_data["w"].toTensor());
    return {at::matmul(as_bf16(grads[0]), w).to(at::kFloat), at::Tensor()};
  }
};

}  // namespace

bool bf16_matmul_fast() { return std::strcmp(kernel_isa(), "avx512bf16") == 0; }

FrozenBaseBf16::FrozenBaseBf16(bool on) : previous_(bf16_on) { bf16_on = on; }
FrozenBaseBf16::~FrozenBaseBf16() { bf16_on = previous_; }
bool FrozenBaseBf16::active() { return bf16_on; }

at::Tensor frozen_linear_bf16(const at::Tensor& x, const at::Tensor& w) { return FrozenLinearBf16::apply(x, w); }

}  // namespace fedge::inference
