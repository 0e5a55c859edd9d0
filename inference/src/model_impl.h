// Model internals shared by the loader, the inference engine and the
// training forward pass.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "fedge/inference/model.h"

namespace fedge::inference {

struct Model::Impl {
  ModelConfig config;
  WeightType wtype = WeightType::kF32;
  at::Tensor embed, norm, head;  // head is embed when tied
  std::vector<LayerWeights> layers;
  std::vector<float> rope_cos, rope_sin;  // [max_positions][head_dim / 2]
  at::Tensor rope_cos_t, rope_sin_t;      // same tables as tensors (training)
  std::map<std::string, LoraAdapter> adapters;
  std::string active, merged;

  void build_rope();
  // Checks a tensor's shape; Error(kInvalidInput) naming it otherwise.
  const LoraAdapter* active_adapter() const;
};

// f32 or bf16 copy of `values` shaped `shape`.
at::Tensor make_weight(const float* values, std::vector<std::int64_t> shape, WeightType type);

}  // namespace fedge::inference
