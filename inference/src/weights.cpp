// Weight matrices in every in-memory type: naming the types, telling a
// tensor's type, building one from f32 values and widening it back.
#include <ATen/ATen.h>

#include <string>

#include "fedge/common/error.h"
#include "fedge/inference/quant.h"
#include "model_impl.h"

namespace fedge::inference {
namespace {
constexpr WeightType kAllTypes[] = {WeightType::kF32,  WeightType::kBF16, WeightType::kF16,  WeightType::kQ8_0,
                                    WeightType::kQ4_0, WeightType::kQ5_0, WeightType::kQ4_K, WeightType::kQ6_K};
}  // namespace

quant::QuantType quant_type_of(WeightType type) {
  switch (type) {
    case WeightType::kQ8_0: return quant::QuantType::kQ8_0;
    case WeightType::kQ4_0: return quant::QuantType::kQ4_0;
    case WeightType::kQ5_0: return quant::QuantType::kQ5_0;
    case WeightType::kQ4_K: return quant::QuantType::kQ4_K;
    case WeightType::kQ6_K: return quant::QuantType::kQ6_K;
    default: break;
  }
  throw Error(ErrorKind::kRuntime, std::string(weight_type_name(type)) + " is not a block type");
}

std::int64_t block_bytes(WeightType type) { return static_cast<std::int64_t>(quant::block_bytes(quant_type_of(type))); }
std::int64_t block_weights(WeightType type) { return quant::block_weights(quant_type_of(type)); }

const char* weight_type_name(WeightType type) {
  switch (type) {
    case WeightType::kF32: return "f32";
    case WeightType::kBF16: return "bf16";
    case WeightType::kF16: return "f16";
    case WeightType::kQ8_0: return "q8_0";
    case WeightType::kQ4_0: return "q4_0";
    case WeightType::kQ5_0: return "q5_0";
    case WeightType::kQ4_K: return "q4_k";
    case WeightType::kQ6_K: return "q6_k";
  }
  return "?";
}

WeightType parse_weight_type(std::string_view name) {
  std::string names;
  for (WeightType t : kAllTypes) {
    if (name == weight_type_name(t)) return t;
    names += std::string(names.empty() ? "" : ", ") + weight_type_name(t);
  }
  throw Error(ErrorKind::kInvalidInput, "weight type '" + std::string(name) + "' is not one of " + names);
}

std::vector<std::string> weight_type_names() {
  std::vector<std::string> names;
  for (WeightType t : kAllTypes) names.emplace_back(weight_type_name(t));
  return names;
}

double bytes_per_weight(WeightType type) {
  switch (type) {
    case WeightType::kF32: return 4.0;
    case WeightType::kBF16: case WeightType::kF16: return 2.0;
    default: return double(block_bytes(type)) / double(block_weights(type));
  }
}

bool is_quantized(WeightType type) {
  return type != WeightType::kF32 && type != WeightType::kBF16 && type != WeightType::kF16;
}

WeightType weight_type_of(const at::Tensor& w) {
  switch (w.scalar_type()) {
    case at::kFloat: return WeightType::kF32;
    case at::kBFloat16: return WeightType::kBF16;
    case at::kHalf: return WeightType::kF16;
    case at::kByte:  // every block type has a block size of its own
      for (WeightType t : kAllTypes)
        if (is_quantized(t) && w.dim() == 3 && w.size(2) == block_bytes(t)) return t;
      break;
    default: break;
  }
  throw Error(ErrorKind::kRuntime, "a weight tensor of dtype " + std::string(c10::toString(w.scalar_type())) +
                                        " and " + std::to_string(w.dim()) + " dimensions is no known weight type");
}

std::int64_t in_features(const at::Tensor& w) {
  const WeightType type = weight_type_of(w);
  return is_quantized(type) ? w.size(1) * block_weights(type) : w.size(-1);
}

bool can_hold(WeightType type, const std::vector<std::int64_t>& shape) {
  return !is_quantized(type) || (shape.size() == 2 && shape[1] % block_weights(type) == 0);
}

namespace {
// llama.cpp's use_more_bits: the first and last eighth of the layers and
// every third layer between.
bool more_bits_layer(int layer, int layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}
}  // namespace

WeightType WeightSpec::type(const LoadOptions& options) const {
  if (norm) return WeightType::kF32;
  if (options.q4_k_m && options.weight_type() == WeightType::kQ4_K) {
    if (output && !options.embeddings) return WeightType::kQ6_K;
    const bool wider = name.ends_with("self_attn.v_proj.weight") || name.ends_with("mlp.down_proj.weight");
    if (wider && layer >= 0 && more_bits_layer(layer, num_layers)) return WeightType::kQ6_K;
  }
  return is_table() ? options.embedding_type() : options.weight_type();
}

WeightType type_for_shape(WeightType type, const std::vector<std::int64_t>& shape) {
  // llama.cpp's fallbacks for rows that are not whole super-blocks (a
  // 576-wide row of SmolLM-135M, say), then f16 for rows of no whole block.
  if (!can_hold(type, shape) && type == WeightType::kQ4_K) type = WeightType::kQ5_0;
  if (!can_hold(type, shape) && type == WeightType::kQ6_K) type = WeightType::kQ8_0;
  return can_hold(type, shape) ? type : WeightType::kF16;
}

at::Tensor make_weight(const float* values, std::vector<std::int64_t> shape, WeightType type) {
  type = type_for_shape(type, shape);
  auto t = at::from_blob(const_cast<float*>(values), shape, at::kFloat);
  switch (type) {
    case WeightType::kF32: return t.clone();
    case WeightType::kBF16: return t.to(at::kBFloat16);
    case WeightType::kF16: return t.to(at::kHalf);
    default: break;
  }
  const std::int64_t out = shape[0], in = shape[1];
  at::Tensor packed = at::empty({out, in / block_weights(type), block_bytes(type)}, at::kByte);
  quant::quantize_rows(quant_type_of(type), values, packed.data_ptr(), out, in);
  return packed;
}

at::Tensor weight_to_f32(const at::Tensor& w) {
  const WeightType type = weight_type_of(w);
  if (type == WeightType::kF32) return w;
  if (!is_quantized(type)) return w.to(at::kFloat);
  const std::int64_t out = w.size(0), in = in_features(w);
  at::Tensor f = at::empty({out, in}, at::kFloat);
  quant::dequantize_rows(quant_type_of(type), w.contiguous().data_ptr(), f.data_ptr<float>(), out, in);
  return f;
}

void weight_row_to_f32(const at::Tensor& w, std::int64_t row, float* out) {
  const WeightType type = weight_type_of(w);
  const std::int64_t in = in_features(w);
  switch (type) {
    case WeightType::kF32: std::copy_n(w.data_ptr<float>() + row * in, in, out); return;
    case WeightType::kBF16: {
      const auto* r = w.data_ptr<at::BFloat16>() + row * in;
      for (std::int64_t j = 0; j < in; ++j) out[j] = float(r[j]);
      return;
    }
    case WeightType::kF16: {
      const auto* r = w.data_ptr<at::Half>() + row * in;
      for (std::int64_t j = 0; j < in; ++j) out[j] = float(r[j]);
      return;
    }
    default:
      quant::dequantize_rows(quant_type_of(type), static_cast<const std::uint8_t*>(w.data_ptr()) + row * w.stride(0),
                             out, 1, in);
  }
}

void linear_packed(const at::Tensor& w, const float* x, int rows, float* y) {
  const WeightType type = weight_type_of(w);
  if (!is_quantized(type))
    throw Error(ErrorKind::kRuntime, std::string("linear_packed: ") + weight_type_name(type) + " is not a block type");
  const int out = static_cast<int>(w.size(0)), in = static_cast<int>(in_features(w));
  quant::matmul(quant_type_of(type), w.data_ptr(), x, y, rows, in, out);
}

}  // namespace fedge::inference
