// Model internals shared by the loader, the inference engine and the
// training forward pass.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fedge/inference/model.h"
#include "fedge/inference/quant.h"

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
  // Byte ranges of read-only file maps that weights are views of (the
  // tensors' deleters keep the maps alive).
  std::vector<std::pair<const std::byte*, std::size_t>> mapped;
  // Weights merge_adapter copied before writing (copy on write), with the
  // shared originals that unmerge_adapter puts back.
  std::vector<std::pair<at::Tensor*, at::Tensor>> pre_merge;

  void build_rope();
  bool is_mapped(const at::Tensor& t) const;
  // Whether `t`, of which this Model holds `handles` handles, may be written
  // in place: neither mapped nor shared with another Model.
  bool owns(const at::Tensor& t, long handles = 1) const;
  // Every base weight slot, tied head included (it is the embed tensor).
  std::vector<at::Tensor*> weight_slots();
  std::vector<std::pair<at::Tensor*, long>> distinct_weights();
  // Checks a tensor's shape; Error(kInvalidInput) naming it otherwise.
  const LoraAdapter* active_adapter() const;
};

// Every weight a config calls for, with its shape, in HF order.
struct WeightSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool norm = false;    // norms stay f32 and initialise to one
  bool output = false;  // the LM head (lm_head, or the table when tied)
  int layer = -1, num_layers = 0;  // the decoder layer it belongs to, of how many
  // The type this tensor is held in under `options` (before the fallback for
  // rows that are not whole blocks, type_for_shape).
  WeightType type(const LoadOptions& options) const;
  bool is_table() const { return name == "model.embed_tokens.weight" || name == "lm_head.weight"; }
};

std::vector<WeightSpec> weight_specs(const ModelConfig& config, bool with_head);
// Puts a tensor into its slot in the model by HF name.
void assign_weight(Model::Impl& m, const std::string& name, at::Tensor t);
// A GGUF file as the model's internals (model_gguf.cpp; Model::load dispatches).
std::unique_ptr<Model::Impl> load_gguf_impl(const std::filesystem::path& path, const LoadOptions& options);

// `values` shaped `shape` held as `type` (a copy; a quantized type whose
// blocks do not divide the rows falls back as llama.cpp's quantizer does:
// q4_k to q5_0, q6_k to q8_0, and to f16 where no block fits; 1-D tensors
// stay float).
at::Tensor make_weight(const float* values, std::vector<std::int64_t> shape, WeightType type);
// Whether `type` can hold a tensor of `shape` (quantized: 2-D, whole blocks).
bool can_hold(WeightType type, const std::vector<std::int64_t>& shape);
// The type make_weight gives a tensor of `shape` asked for as `type`.
WeightType type_for_shape(WeightType type, const std::vector<std::int64_t>& shape);
// Row `row` of a weight matrix as f32 (in_features(w) values).
void weight_row_to_f32(const at::Tensor& w, std::int64_t row, float* out);
// y [rows, out] = x [rows, in] W^T for the quantized types.
void linear_packed(const at::Tensor& w, const float* x, int rows, float* y);
// The kernels' name for a quantized WeightType.
quant::QuantType quant_type_of(WeightType type);
// Bytes of one block of a quantized WeightType (the last dimension of its
// packed tensor: [out, in / block_weights, block_bytes]) and its weights.
std::int64_t block_bytes(WeightType type);
std::int64_t block_weights(WeightType type);

}  // namespace fedge::inference
