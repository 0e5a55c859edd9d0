// Internal: causal attention for forward_train that computes only the
// unmasked part of the scores (used by model_train.cpp for a frozen base).
#pragma once

#include <ATen/ATen.h>

namespace fedge::inference {

// softmax(scale * q k^T + bias) v for grouped-query attention with the `g`
// query heads of a KV head stacked along the query axis: q [N, g*T, hd],
// k and v [N, T, hd], bias [N, g*T, T] additive (causal and padding; constant).
// Queries are taken in blocks of rows; a block ending at row r only meets
// keys [0, r), which the causal mask would zero anyway, so about half the
// score products, softmax work and saved probabilities are skipped. Equal to
// the full computation for every query row that has at least one allowed key
// (rows with none, wholly padded ones, average fewer values; their outputs
// are ignored). Differentiable in q, k and v.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                            int64_t g, double scale);

}  // namespace fedge::inference
