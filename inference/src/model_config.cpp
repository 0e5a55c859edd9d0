#include "fedge/inference/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numbers>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"

namespace fedge::inference {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& source, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, source + ": " + what);
}

int get_int(const json& j, const char* key, const std::string& source,
            std::optional<int> fallback = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    bad(source, std::string("missing integer field '") + key + "'");
  }
  if (!it->is_number_integer()) bad(source, std::string("field '") + key + "' must be an integer");
  auto v = it->get<std::int64_t>();
  if (v < 0 || v > (1ll << 30)) bad(source, std::string("field '") + key + "' is out of range");
  return static_cast<int>(v);
}

double get_num(const json& j, const char* key, const std::string& source, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) bad(source, std::string("field '") + key + "' must be a number");
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, const std::string& source, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) bad(source, std::string("field '") + key + "' must be true or false");
  return it->get<bool>();
}

// Maps architectures[0] / model_type to the family; empty when unknown.
std::string family_of(const std::string& name) {
  static const std::pair<const char*, const char*> known[] = {
      {"LlamaForCausalLM", "llama"},   {"MistralForCausalLM", "mistral"},
      {"Qwen2ForCausalLM", "qwen2"},   {"llama", "llama"},
      {"mistral", "mistral"},          {"qwen2", "qwen2"},
      {"smollm", "llama"},             {"tinyllama", "llama"}};
  for (auto& [k, v] : known)
    if (name == k) return v;
  return {};
}

RopeScaling parse_rope_scaling(const json& j, const std::string& source) {
  RopeScaling s;
  if (j.is_null()) return s;
  if (!j.is_object()) bad(source, "field 'rope_scaling' must be an object or null");
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) { type = it->get<std::string>(); break; }
  }
  if (type.empty()) bad(source, "rope_scaling has no 'rope_type' or 'type'");
  s.type = type;
  s.factor = get_num(j, "factor", source, 1.0);
  if (type == "default") return s;
  // Hugging Face asks for >= 1 too; a smaller one (a subnormal passed "> 0")
  // divides RoPE frequencies towards infinity.
  if (!(s.factor >= 1)) bad(source, "rope_scaling.factor must be at least 1");
  if (type == "linear") return s;
  if (type == "llama3") {
    s.low_freq_factor = get_num(j, "low_freq_factor", source, 1.0);
    s.high_freq_factor = get_num(j, "high_freq_factor", source, 4.0);
    s.original_max_position_embeddings =
        get_int(j, "original_max_position_embeddings", source, 8192);
    if (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0))
      bad(source, "rope_scaling llama3 needs high_freq_factor > low_freq_factor > 0");
    return s;
  }
  bad(source, "unsupported rope_scaling type '" + type +
                  "' (supported: default, linear, llama3)");
}

}  // namespace

ModelConfig ModelConfig::from_json_text(std::string_view text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    bad(source, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad(source, "config.json must be a JSON object");
  ModelConfig c;
  std::string arch, type;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() &&
                                          (*it)[0].is_string())
    arch = (*it)[0].get<std::string>();
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) type = it->get<std::string>();
  std::string family = family_of(arch);
  if (family.empty()) family = family_of(type);
  if (family.empty())
    bad(source, "unknown architecture '" + (arch.empty() ? type : arch) +
                    "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  c.architecture = family == "qwen2"     ? "Qwen2ForCausalLM"
                   : family == "mistral" ? "MistralForCausalLM"
                                         : "LlamaForCausalLM";
  c.model_type = family;
  c.hidden_size = get_int(j, "hidden_size", source);
  c.intermediate_size = get_int(j, "intermediate_size", source);
  c.num_layers = get_int(j, "num_hidden_layers", source);
  c.num_heads = get_int(j, "num_attention_heads", source);
  c.num_kv_heads = get_int(j, "num_key_value_heads", source, c.num_heads);
  c.head_dim = get_int(j, "head_dim", source, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.vocab_size = get_int(j, "vocab_size", source);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", source, 1e-6);
  c.rope_theta = get_num(j, "rope_theta", source, 10000.0);
  if (auto it = j.find("rope_scaling"); it != j.end()) c.rope_scaling = parse_rope_scaling(*it, source);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source, 2048);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", source, false);
  c.attention_bias = family == "qwen2" || get_bool(j, "attention_bias", source, false);
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) c.torch_dtype = it->get<std::string>();
  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer())
    c.bos_token_id = it->get<int>();
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) c.eos_token_ids.push_back(it->get<int>());
    else if (it->is_array())
      for (auto& e : *it)
        if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int>());
  }
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_dir(const std::filesystem::path& dir) {
  auto path = dir / "config.json";
  if (!std::filesystem::exists(dir))
    throw Error(ErrorKind::kNotFound, "model directory " + dir.string() + " does not exist");
  if (!std::filesystem::exists(path))
    throw Error(ErrorKind::kNotFound, path.string() + " not found (a Hugging Face model directory needs config.json)");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json_text(ss.str(), path.string());
}

std::string ModelConfig::to_json_text() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type == "freq_factors") {
    throw Error(ErrorKind::kInvalidInput,
                "this model's RoPE frequency factors came from a GGUF file (rope_freqs.weight) and have no "
                "config.json form; write it as GGUF (fedge quantize) instead of a Hugging Face folder");
  }
  if (rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    json s = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      s["low_freq_factor"] = rope_scaling.low_freq_factor;
      s["high_freq_factor"] = rope_scaling.high_freq_factor;
      s["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = s;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["torch_dtype"] = torch_dtype;
  j["hidden_act"] = "silu";
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty()) j["eos_token_id"] = eos_token_ids;
  return j.dump(2) + "\n";
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int v, const char* name) {
    if (v <= 0) bad(source, std::string("field '") + name + "' must be positive");
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  positive(vocab_size, "vocab_size");
  positive(max_position_embeddings, "max_position_embeddings");
  // Hostile sizes: refuse before anything is allocated from them.
  auto at_most = [&](int v, int limit, const char* name) {
    if (v > limit) bad(source, std::string("field '") + name + "' = " + std::to_string(v) + " exceeds " + std::to_string(limit));
  };
  at_most(hidden_size, 1 << 16, "hidden_size");
  at_most(intermediate_size, 1 << 18, "intermediate_size");
  at_most(num_layers, 1024, "num_hidden_layers");
  at_most(num_heads, 1024, "num_attention_heads");
  at_most(head_dim, 1024, "head_dim");
  at_most(vocab_size, 1 << 22, "vocab_size");
  if (head_dim % 2 != 0) bad(source, "head_dim must be even for rotary embeddings");
  if (num_heads % num_kv_heads != 0)
    bad(source, "num_attention_heads (" + std::to_string(num_heads) +
                    ") must be a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  if (!(rms_norm_eps > 0)) bad(source, "rms_norm_eps must be positive");
  if (!(rope_theta > 0)) bad(source, "rope_theta must be positive");
  if (rope_scaling.type == "freq_factors") {
    if (rope_scaling.freq_factors.size() != static_cast<std::size_t>(head_dim / 2))
      bad(source, "rope_freqs has " + std::to_string(rope_scaling.freq_factors.size()) + " factors; head_dim " +
                      std::to_string(head_dim) + " needs " + std::to_string(head_dim / 2));
    for (double f : rope_scaling.freq_factors)
      if (!(f > 0) || !std::isfinite(f)) bad(source, "rope_freqs holds a factor that is not a positive finite number");
  }
}

ModelConfig ModelConfig::tiny() {
  ModelConfig c;
  c.hidden_size = 256;
  c.intermediate_size = 688;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 32;
  c.vocab_size = 261;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = true;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  return c;
}

ModelConfig ModelConfig::smollm_135m() {
  ModelConfig c;
  c.hidden_size = 576;
  c.intermediate_size = 1536;
  c.num_layers = 30;
  c.num_heads = 9;
  c.num_kv_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 2048;
  c.tie_word_embeddings = true;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

int ModelConfig::context_length() const { return std::min(max_position_embeddings, kMaxContext); }

std::int64_t ModelConfig::num_parameters() const {
  std::int64_t h = hidden_size, per_layer = 0;
  per_layer += h * q_dim() + 2 * h * kv_dim() + q_dim() * h;
  if (attention_bias) per_layer += q_dim() + 2 * kv_dim();
  per_layer += 3 * h * intermediate_size + 2 * h;
  std::int64_t total = per_layer * num_layers + std::int64_t(vocab_size) * h + h;
  if (!tie_word_embeddings) total += std::int64_t(vocab_size) * h;
  return total;
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  const auto& s = c.rope_scaling;
  if (s.type == "linear") {
    for (auto& f : inv) f /= s.factor;
  } else if (s.type == "freq_factors") {
    for (int i = 0; i < half; ++i) inv[i] /= s.freq_factors.at(i);
  } else if (s.type == "llama3") {
    const double old_len = s.original_max_position_embeddings;
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) { f /= s.factor; continue; }
      const double smooth = (old_len / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv;
}

}  // namespace fedge::inference
