#include "fedge/inference/lora.h"

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"

namespace fedge::inference {
namespace fs = std::filesystem;

const char* lora_target_name(LoraTarget t) {
  static const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names[int(t)];
}
const char* lora_target_parent(LoraTarget t) { return int(t) <= int(LoraTarget::kO) ? "self_attn" : "mlp"; }

std::pair<int, int> lora_target_shape(const ModelConfig& c, LoraTarget t) {
  switch (t) {
    case LoraTarget::kQ: return {c.hidden_size, c.q_dim()};
    case LoraTarget::kK:
    case LoraTarget::kV: return {c.hidden_size, c.kv_dim()};
    case LoraTarget::kO: return {c.q_dim(), c.hidden_size};
    case LoraTarget::kGate:
    case LoraTarget::kUp: return {c.hidden_size, c.intermediate_size};
    default: return {c.intermediate_size, c.hidden_size};
  }
}

bool LoraConfig::targets(LoraTarget t) const {
  for (const auto& m : target_modules)
    if (m == lora_target_name(t)) return true;
  return false;
}

void LoraConfig::validate(const std::string& source) const {
  if (r <= 0 || r > 65536) throw Error(ErrorKind::kInvalidInput, source + ": LoRA rank r must be in 1..65536");
  if (!std::isfinite(alpha)) throw Error(ErrorKind::kInvalidInput, source + ": lora_alpha must be finite");
  if (!(dropout >= 0 && dropout < 1)) throw Error(ErrorKind::kInvalidInput, source + ": lora_dropout must be in [0, 1)");
  if (target_modules.empty()) throw Error(ErrorKind::kInvalidInput, source + ": target_modules is empty");
  for (const auto& m : target_modules) {
    bool known = false;
    for (int t = 0; t < kNumLoraTargets; ++t) known |= m == lora_target_name(LoraTarget(t));
    if (!known)
      throw Error(ErrorKind::kInvalidInput, source + ": unsupported target module '" + m +
                                                "' (supported: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)");
  }
}

namespace {
std::string peft_name(int layer, LoraTarget t, char which) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + lora_target_parent(t) + "." +
         lora_target_name(t) + ".lora_" + which + ".weight";
}
}  // namespace

LoraAdapter LoraAdapter::create(const ModelConfig& model, const LoraConfig& config, std::uint64_t seed) {
  config.validate();
  LoraAdapter ad;
  ad.model_ = model;
  ad.config_ = config;
  ad.layers_.resize(model.num_layers);
  std::uint64_t state = seed ^ 0x5DEECE66Dull;
  auto next = [&state] {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (int l = 0; l < model.num_layers; ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!config.targets(LoraTarget(t))) continue;
      auto [in, out] = lora_target_shape(model, LoraTarget(t));
      at::Tensor a = at::empty({config.r, in}, at::kFloat);
      const float bound = 1.0f / std::sqrt(float(in));
      float* p = a.data_ptr<float>();
      for (std::int64_t i = 0; i < a.numel(); ++i)
        p[i] = float(((next() >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * bound);
      ad.layers_[l][t] = {a, at::zeros({out, config.r}, at::kFloat)};
    }
  return ad;
}

std::vector<at::Tensor> LoraAdapter::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& layer : layers_)
    for (const auto& pair : layer)
      if (pair[0].defined()) {
        out.push_back(pair[0]);
        out.push_back(pair[1]);
      }
  return out;
}

std::vector<std::string> LoraAdapter::parameter_names() const {
  std::vector<std::string> out;
  for (int l = 0; l < int(layers_.size()); ++l)
    for (int t = 0; t < kNumLoraTargets; ++t)
      if (layers_[l][t][0].defined()) {
        out.push_back(peft_name(l, LoraTarget(t), 'A'));
        out.push_back(peft_name(l, LoraTarget(t), 'B'));
      }
  return out;
}

ParamLayout LoraAdapter::layout() const {
  ParamLayout layout;
  const auto names = parameter_names();
  const auto params = parameters();
  for (std::size_t i = 0; i < names.size(); ++i) layout.add(names[i], params[i].sizes().vec());
  return layout;
}

ParamVector LoraAdapter::to_params() const {
  ParamVector pv(layout());
  const auto params = parameters();
  std::size_t offset = 0;
  auto values = pv.values();
  for (const auto& p : params) {
    at::Tensor c = p.detach().contiguous();
    std::copy_n(c.data_ptr<float>(), c.numel(), values.data() + offset);
    offset += c.numel();
  }
  return pv;
}

void LoraAdapter::from_params(const ParamVector& params) {
  if (!(params.layout() == layout()))
    throw Error(ErrorKind::kInvalidInput, "parameter vector layout does not match this adapter (rank " +
                                              std::to_string(config_.r) + ", targets and layers must agree)");
  at::NoGradGuard guard;
  std::size_t offset = 0;
  auto values = params.values();
  for (auto& p : parameters()) {
    auto src = at::from_blob(const_cast<float*>(values.data() + offset), p.sizes(), at::kFloat);
    p.copy_(src);
    offset += p.numel();
  }
}

LoraAdapter LoraAdapter::clone() const {
  LoraAdapter ad = *this;
  for (auto& layer : ad.layers_)
    for (auto& pair : layer)
      for (auto& t : pair)
        if (t.defined()) t = t.detach().clone();
  return ad;
}

void LoraAdapter::save(const fs::path& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::kIo, "cannot create " + dir.string() + ": " + ec.message());
  nlohmann::json j = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", config_.r},
      {"lora_alpha", config_.alpha},
      {"lora_dropout", config_.dropout},
      {"target_modules", config_.target_modules},
      {"base_model_name_or_path", config_.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"use_rslora", false},
      {"revision", nullptr},
  };
  {
    std::ofstream out(dir / "adapter_config.json", std::ios::binary);
    out << j.dump(2) << "\n";
    if (!out) throw Error(ErrorKind::kIo, "cannot write " + (dir / "adapter_config.json").string());
  }
  const auto names = parameter_names();
  const auto params = parameters();
  std::vector<at::Tensor> keep;
  std::vector<TensorView> views;
  for (std::size_t i = 0; i < names.size(); ++i) {
    at::Tensor c = params[i].detach().contiguous();
    keep.push_back(c);
    views.push_back({names[i], DType::kF32, c.sizes().vec(),
                     std::span<const std::byte>(static_cast<const std::byte*>(c.data_ptr()), c.nbytes())});
  }
  write_safetensors(dir / "adapter_model.safetensors", views, {{"format", "pt"}});
}

LoraAdapter LoraAdapter::load(const fs::path& dir, const ModelConfig& model) {
  const fs::path cfg_path = dir / "adapter_config.json";
  const fs::path st_path = dir / "adapter_model.safetensors";
  if (!fs::exists(cfg_path)) throw Error(ErrorKind::kNotFound, cfg_path.string() + " not found (a PEFT adapter directory needs it)");
  if (!fs::exists(st_path)) throw Error(ErrorKind::kNotFound, st_path.string() + " not found");
  std::ifstream in(cfg_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string src = cfg_path.string();
  LoraConfig config;
  try {
    auto j = nlohmann::json::parse(ss.str());
    if (!j.is_object()) throw Error(ErrorKind::kInvalidInput, src + ": must be a JSON object");
    if (j.value("peft_type", std::string("LORA")) != "LORA")
      throw Error(ErrorKind::kInvalidInput, src + ": peft_type must be LORA");
    config.r = j.at("r").get<int>();
    config.alpha = j.value("lora_alpha", double(config.r));
    if (j.contains("lora_dropout") && j["lora_dropout"].is_number()) config.dropout = j["lora_dropout"].get<double>();
    const auto& tm = j.at("target_modules");
    if (tm.is_string()) config.target_modules = {tm.get<std::string>()};
    else config.target_modules = tm.get<std::vector<std::string>>();
    if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
      config.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
    if (j.value("use_rslora", false))
      throw Error(ErrorKind::kInvalidInput, src + ": use_rslora is not supported");
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidInput, src + ": " + e.what());
  }
  config.validate(src);
  LoraAdapter ad;
  ad.model_ = model;
  ad.config_ = config;
  ad.layers_.resize(model.num_layers);
  SafetensorsFile file = SafetensorsFile::open(st_path);
  std::set<std::string> used;
  for (int l = 0; l < model.num_layers; ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (!config.targets(LoraTarget(t))) continue;
      auto [fin, fout] = lora_target_shape(model, LoraTarget(t));
      for (int w = 0; w < 2; ++w) {
        const std::string name = peft_name(l, LoraTarget(t), w == 0 ? 'A' : 'B');
        const std::vector<std::int64_t> shape = w == 0 ? std::vector<std::int64_t>{config.r, fin}
                                                       : std::vector<std::int64_t>{fout, config.r};
        const TensorInfo* info = file.find(name);
        if (!info)
          throw Error(ErrorKind::kInvalidInput, st_path.string() + ": tensor '" + name + "' of shape " +
                                                    format_shape(shape) + " is missing");
        if (info->shape != shape || !is_floating(info->dtype))
          throw Error(ErrorKind::kInvalidInput, st_path.string() + ": tensor '" + name + "' has shape " +
                                                    format_shape(info->shape) + " " + std::string(dtype_name(info->dtype)) +
                                                    ", expected " + format_shape(shape) + " float");
        std::vector<float> values = file.to_f32(*info);
        ad.layers_[l][t][w] = at::from_blob(values.data(), shape, at::kFloat).clone();
        used.insert(name);
      }
    }
  for (const auto& info : file.tensors())
    if (!used.count(info.name))
      throw Error(ErrorKind::kInvalidInput, st_path.string() + ": unexpected tensor '" + info.name +
                                                "' (not a LoRA weight of this model and target_modules)");
  return ad;
}

}  // namespace fedge::inference
