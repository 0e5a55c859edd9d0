// Loading and saving Hugging Face model directories, and random models.
#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"
#include "fedge/inference/model_gguf.h"
#include "model_impl.h"

namespace fedge::inference {
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, "cannot read " + p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// name -> shard file, from model.safetensors.index.json.
std::map<std::string, fs::path> read_index(const fs::path& dir) {
  const fs::path path = dir / "model.safetensors.index.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidInput, path.string() + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(ErrorKind::kInvalidInput, path.string() + ": missing object 'weight_map'");
  std::map<std::string, fs::path> out;
  for (auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string())
      throw Error(ErrorKind::kInvalidInput, path.string() + ": weight_map entry '" + name + "' is not a file name");
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
      throw Error(ErrorKind::kInvalidInput, path.string() + ": shard name '" + f + "' must be a plain file name");
    out[name] = dir / f;
  }
  return out;
}

std::unique_ptr<Model::Impl> new_impl(const ModelConfig& config, WeightType type) {
  auto impl = std::make_unique<Model::Impl>();
  impl->config = config;
  impl->wtype = type;
  impl->layers.resize(config.num_layers);
  impl->build_rope();
  return impl;
}

// SplitMix64 + Box-Muller: the same numbers on every platform for one seed.
struct Normal {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double operator()() {
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform());
  }
};

// The in-memory dtype matching a file dtype, when `type` holds it as is.
std::optional<at::ScalarType> held_as_stored(DType file, WeightType type) {
  if (file == DType::kF32 && type == WeightType::kF32) return at::kFloat;
  if (file == DType::kBF16 && type == WeightType::kBF16) return at::kBFloat16;
  if (file == DType::kF16 && type == WeightType::kF16) return at::kHalf;
  return std::nullopt;
}

// One checkpoint tensor as the model holds it: the file's bytes in place when
// they already are the held type (and aligned; the tensor keeps the map
// alive), a copy of them when options.map is off, else converted.
at::Tensor read_weight(const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info, const WeightSpec& spec,
                       const LoadOptions& options, Model::Impl& impl) {
  const WeightType type = type_for_shape(spec.type(options), spec.shape);  // as make_weight falls back
  const auto bytes = file->bytes(info);
  if (auto dtype = held_as_stored(info.dtype, type); dtype && !bytes.empty()) {
    void* data = const_cast<std::byte*>(bytes.data());  // never written: see Model::weights_read_only
    const bool aligned = reinterpret_cast<std::uintptr_t>(data) % dtype_size(info.dtype) == 0;
    if (options.map && aligned) {
      impl.mapped.emplace_back(bytes.data(), bytes.size());
      return at::from_blob(data, spec.shape, [file](void*) {}, at::TensorOptions().dtype(*dtype));
    }
    at::Tensor copy = at::empty(spec.shape, at::TensorOptions().dtype(*dtype));
    std::memcpy(copy.data_ptr(), bytes.data(), bytes.size());
    return copy;
  }
  std::vector<float> values = file->to_f32(info);
  return make_weight(values.data(), spec.shape, type);
}

}  // namespace

std::vector<WeightSpec> weight_specs(const ModelConfig& c, bool with_head) {
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
  std::vector<WeightSpec> s;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  s.back().output = !with_head;  // tied: the table is the LM head too
  for (int l = 0; l < c.num_layers; ++l) {
    const std::size_t first = s.size();
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", {H}, true});
    s.push_back({p + "self_attn.q_proj.weight", {Q, H}});
    s.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    s.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    if (c.attention_bias) {
      s.push_back({p + "self_attn.q_proj.bias", {Q}, true});
      s.push_back({p + "self_attn.k_proj.bias", {KV}, true});
      s.push_back({p + "self_attn.v_proj.bias", {KV}, true});
    }
    s.push_back({p + "self_attn.o_proj.weight", {H, Q}});
    s.push_back({p + "post_attention_layernorm.weight", {H}, true});
    s.push_back({p + "mlp.gate_proj.weight", {I, H}});
    s.push_back({p + "mlp.up_proj.weight", {I, H}});
    s.push_back({p + "mlp.down_proj.weight", {H, I}});
    for (std::size_t i = first; i < s.size(); ++i) {
      s[i].layer = l;
      s[i].num_layers = c.num_layers;
    }
  }
  s.push_back({"model.norm.weight", {H}, true});
  if (with_head) {
    s.push_back({"lm_head.weight", {c.vocab_size, H}});
    s.back().output = true;
  }
  return s;
}

// Puts a named tensor into its slot in the model.
void assign_weight(Model::Impl& m, const std::string& name, at::Tensor t) {
  if (name == "model.embed_tokens.weight") { m.embed = t; return; }
  if (name == "model.norm.weight") { m.norm = t; return; }
  if (name == "lm_head.weight") { m.head = t; return; }
  // model.layers.<l>.<rest>
  const std::size_t start = std::string("model.layers.").size();
  const std::size_t dot = name.find('.', start);
  const int l = std::stoi(name.substr(start, dot - start));
  const std::string rest = name.substr(dot + 1);
  LayerWeights& w = m.layers[l];
  if (rest == "input_layernorm.weight") w.attn_norm = t;
  else if (rest == "post_attention_layernorm.weight") w.mlp_norm = t;
  else if (rest == "self_attn.q_proj.weight") w.wq = t;
  else if (rest == "self_attn.k_proj.weight") w.wk = t;
  else if (rest == "self_attn.v_proj.weight") w.wv = t;
  else if (rest == "self_attn.o_proj.weight") w.wo = t;
  else if (rest == "self_attn.q_proj.bias") w.bq = t;
  else if (rest == "self_attn.k_proj.bias") w.bk = t;
  else if (rest == "self_attn.v_proj.bias") w.bv = t;
  else if (rest == "mlp.gate_proj.weight") w.wgate = t;
  else if (rest == "mlp.up_proj.weight") w.wup = t;
  else if (rest == "mlp.down_proj.weight") w.wdown = t;
}


Model Model::load(const fs::path& dir, const LoadOptions& options) {
  if (is_gguf_file(dir)) return Model(load_gguf_impl(dir, options));
  ModelConfig config = ModelConfig::from_dir(dir);
  auto impl = new_impl(config, options.weight_type());
  // Which file holds each tensor.
  std::map<std::string, fs::path> where;
  std::map<fs::path, std::shared_ptr<const SafetensorsFile>> files;
  auto open = [](const fs::path& file) {
    return std::make_shared<const SafetensorsFile>(SafetensorsFile::open(file));
  };
  if (fs::exists(dir / "model.safetensors")) {
    files.emplace(dir / "model.safetensors", open(dir / "model.safetensors"));
    for (const auto& t : files.begin()->second->tensors()) where[t.name] = dir / "model.safetensors";
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    where = read_index(dir);
    for (const auto& [name, file] : where) {
      if (files.count(file)) continue;
      if (!fs::exists(file))
        throw Error(ErrorKind::kNotFound, "shard " + file.string() + " named in the index is missing");
      files.emplace(file, open(file));
    }
  } else {
    throw Error(ErrorKind::kNotFound, "no model.safetensors or model.safetensors.index.json in " + dir.string());
  }
  const bool has_head = where.count("lm_head.weight") > 0;
  const bool with_head = has_head || !config.tie_word_embeddings;
  for (const WeightSpec& spec : weight_specs(config, with_head)) {
    auto it = where.find(spec.name);
    if (it == where.end())
      throw Error(ErrorKind::kInvalidInput, dir.string() + ": tensor '" + spec.name + "' of shape " +
                                                format_shape(spec.shape) + " is missing from the checkpoint");
    const std::shared_ptr<const SafetensorsFile>& file = files.at(it->second);
    const TensorInfo* info = file->find(spec.name);
    if (!info)
      throw Error(ErrorKind::kInvalidInput, it->second.string() + ": tensor '" + spec.name +
                                                "' named in the index is not in the shard");
    if (info->shape != spec.shape)
      throw Error(ErrorKind::kInvalidInput, it->second.string() + ": tensor '" + spec.name + "' has shape " +
                                                format_shape(info->shape) + ", expected " + format_shape(spec.shape));
    if (!is_floating(info->dtype))
      throw Error(ErrorKind::kInvalidInput, it->second.string() + ": tensor '" + spec.name + "' has dtype " +
                                                std::string(dtype_name(info->dtype)) + ", expected F32, F16 or BF16");
    assign_weight(*impl, spec.name, read_weight(file, *info, spec, options, *impl));
  }
  if (!with_head) impl->head = impl->embed;
  Model model(std::move(impl));
  const auto memory = model.weight_memory();
  spdlog::debug("loaded {} ({} layers, {} parameters; {} of {} weight bytes used in place from the file)",
                dir.string(), config.num_layers, config.num_parameters(), memory.mapped_bytes, memory.bytes);
  return model;
}

Model Model::random(const ModelConfig& config, std::uint64_t seed, const LoadOptions& options) {
  config.validate();
  auto impl = new_impl(config, options.weight_type());
  Normal normal{seed * 0x2545F4914F6CDD1Dull + 0x1234567ull};
  for (const WeightSpec& spec : weight_specs(config, !config.tie_word_embeddings)) {
    std::int64_t n = 1;
    for (auto d : spec.shape) n *= d;
    std::vector<float> values(n);
    const bool bias = spec.name.find(".bias") != std::string::npos;
    for (auto& v : values) v = spec.norm && !bias ? 1.0f : float(0.02 * normal());
    assign_weight(*impl, spec.name, make_weight(values.data(), spec.shape, spec.type(options)));
  }
  if (config.tie_word_embeddings) impl->head = impl->embed;
  return Model(std::move(impl));
}

Model Model::tiny(std::uint64_t seed) { return random(ModelConfig::tiny(), seed); }

std::vector<std::pair<std::string, at::Tensor>> Model::named_weights() const {
  const ModelConfig& c = impl_->config;
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", impl_->embed);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const LayerWeights& w = impl_->layers[l];
    out.emplace_back(p + "input_layernorm.weight", w.attn_norm);
    out.emplace_back(p + "self_attn.q_proj.weight", w.wq);
    out.emplace_back(p + "self_attn.k_proj.weight", w.wk);
    out.emplace_back(p + "self_attn.v_proj.weight", w.wv);
    if (w.bq.defined()) {
      out.emplace_back(p + "self_attn.q_proj.bias", w.bq);
      out.emplace_back(p + "self_attn.k_proj.bias", w.bk);
      out.emplace_back(p + "self_attn.v_proj.bias", w.bv);
    }
    out.emplace_back(p + "self_attn.o_proj.weight", w.wo);
    out.emplace_back(p + "post_attention_layernorm.weight", w.mlp_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", w.wgate);
    out.emplace_back(p + "mlp.up_proj.weight", w.wup);
    out.emplace_back(p + "mlp.down_proj.weight", w.wdown);
  }
  out.emplace_back("model.norm.weight", impl_->norm);
  if (!impl_->head.is_same(impl_->embed)) out.emplace_back("lm_head.weight", impl_->head);
  return out;
}

void Model::save(const fs::path& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::kIo, "cannot create " + dir.string() + ": " + ec.message());
  ModelConfig config = impl_->config;
  config.tie_word_embeddings = impl_->head.is_same(impl_->embed);
  if (is_quantized(impl_->wtype))
    throw Error(ErrorKind::kInvalidInput, std::string("a model held in ") + weight_type_name(impl_->wtype) +
                                              " is not saved as safetensors; write a GGUF file (fedge quantize)");
  config.torch_dtype = impl_->wtype == WeightType::kF32 ? "float32" : impl_->wtype == WeightType::kBF16 ? "bfloat16" : "float16";
  {
    std::ofstream out(dir / "config.json", std::ios::binary);
    out << config.to_json_text();
    if (!out) throw Error(ErrorKind::kIo, "cannot write " + (dir / "config.json").string());
  }
  const auto weights = named_weights();
  std::vector<at::Tensor> keep;  // contiguous CPU copies the views point into
  std::vector<TensorView> views;
  for (const auto& [name, t] : weights) {
    at::Tensor c = t.contiguous();
    keep.push_back(c);
    TensorView v;
    v.name = name;
    v.dtype = c.scalar_type() == at::kFloat ? DType::kF32 : c.scalar_type() == at::kHalf ? DType::kF16 : DType::kBF16;
    v.shape = c.sizes().vec();
    v.data = std::span<const std::byte>(static_cast<const std::byte*>(c.data_ptr()), c.nbytes());
    views.push_back(std::move(v));
  }
  write_safetensors(dir / "model.safetensors", views, {{"format", "pt"}});
}

}  // namespace fedge::inference
