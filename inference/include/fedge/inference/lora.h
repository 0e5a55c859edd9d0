// LoRA adapters (Hu et al. 2021) on the attention and MLP projections, read
// and written in Hugging Face PEFT's layout (adapter_config.json +
// adapter_model.safetensors), and flattened to a fedge::ParamVector for
// federated aggregation.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "fedge/common/param_vector.h"
#include "fedge/inference/model_config.h"

namespace fedge::inference {

// The projections an adapter may target, in the fixed order used everywhere
// (flat vectors, files, loops).
enum class LoraTarget { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLoraTargets = 7;
// PEFT's module name ("q_proj", ..., "down_proj").
const char* lora_target_name(LoraTarget t);
// Parent module path inside a layer ("self_attn" or "mlp").
const char* lora_target_parent(LoraTarget t);
// Input and output feature counts of the projection.
std::pair<int, int> lora_target_shape(const ModelConfig& config, LoraTarget t);

struct LoraConfig {
  int r = 8;
  double alpha = 16.0;
  double dropout = 0.0;  // applied only in training
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  std::string base_model_name_or_path;
  double scale() const { return alpha / r; }
  // Throws Error(kInvalidInput) for r <= 0 or an unknown module name.
  void validate(const std::string& source = "LoRA config") const;
  bool targets(LoraTarget t) const;
};

class LoraAdapter {
 public:
  // A fresh adapter as PEFT initialises it: A uniform in +-1/sqrt(in)
  // (kaiming-uniform with a = sqrt(5)), B zero, so it starts as the identity.
  static LoraAdapter create(const ModelConfig& model, const LoraConfig& config, std::uint64_t seed);
  // Reads adapter_config.json + adapter_model.safetensors (F32/F16/BF16).
  // Missing or mis-shaped tensors are Error(kInvalidInput) naming the tensor
  // and the shape expected by `model`.
  static LoraAdapter load(const std::filesystem::path& dir, const ModelConfig& model);
  void save(const std::filesystem::path& dir) const;

  const LoraConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return model_; }
  double scale() const { return config_.scale(); }

  // A: [r, in], B: [out, r], float32, contiguous; undefined when the module is
  // not targeted. Tensors share storage with the adapter, so a trainer can set
  // requires_grad on them and update them in place.
  const at::Tensor& a(int layer, LoraTarget t) const { return layers_[layer][int(t)][0]; }
  const at::Tensor& b(int layer, LoraTarget t) const { return layers_[layer][int(t)][1]; }
  at::Tensor& a(int layer, LoraTarget t) { return layers_[layer][int(t)][0]; }
  at::Tensor& b(int layer, LoraTarget t) { return layers_[layer][int(t)][1]; }

  // Every parameter tensor in the stable order (layer, target, A then B).
  std::vector<at::Tensor> parameters() const;
  // PEFT tensor names in that order, e.g.
  // base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
  std::vector<std::string> parameter_names() const;
  ParamLayout layout() const;
  ParamVector to_params() const;
  // Copies values in; the layout must equal layout() (Error(kInvalidInput)).
  void from_params(const ParamVector& params);
  // Deep copy (fresh tensors).
  LoraAdapter clone() const;

 private:
  ModelConfig model_;
  LoraConfig config_;
  std::vector<std::array<std::array<at::Tensor, 2>, kNumLoraTargets>> layers_;
};

}  // namespace fedge::inference
