// Internal: the autograd Function behind FrozenBaseBf16 (see
// fedge/inference/frozen_bf16.h), used by model_train.cpp.
#pragma once

#include <ATen/ATen.h>

namespace fedge::inference {

// y = x W^T for a frozen W (f32, bf16, f16 or quantized) with bf16 operands; backward gives
// dx = dy W the same way and no gradient for W. x and y are f32.
at::Tensor frozen_linear_bf16(const at::Tensor& x, const at::Tensor& w);

}  // namespace fedge::inference
