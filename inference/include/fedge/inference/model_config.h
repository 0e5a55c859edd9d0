// Model hyper-parameters as Hugging Face writes them in config.json, for the
// Llama family (Llama, Mistral, Qwen2, SmolLM, TinyLlama).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::inference {

// rope_scaling from config.json. Supported types: "default" (none), "linear"
// (positions divided by factor) and "llama3" (frequency-dependent scaling);
// "freq_factors" is GGUF's form of llama3 (llama.cpp's converter stores one
// divisor per frequency as the tensor rope_freqs.weight) and has no
// config.json form.
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
  std::vector<double> freq_factors;  // "freq_factors": head_dim / 2 divisors
  bool operator==(const RopeScaling&) const = default;
};

// Contexts beyond this are refused (an edge CPU engine; keeps tables small).
inline constexpr int kMaxContext = 65536;

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";
  std::string model_type = "llama";
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless config.json says otherwise
  int vocab_size = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (always on for Qwen2)
  std::string torch_dtype = "float32";
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;

  // Parses config.json text. Unknown architectures, missing or mistyped
  // fields, inconsistent head counts and unknown rope_scaling types are
  // Error(kInvalidInput) naming `source` and the field.
  static ModelConfig from_json_text(std::string_view text, const std::string& source);
  // Reads DIR/config.json (Error(kNotFound) when absent).
  static ModelConfig from_dir(const std::filesystem::path& dir);
  // config.json text that from_json_text reads back to an equal config.
  std::string to_json_text() const;
  // Throws Error(kInvalidInput) when sizes are non-positive or inconsistent.
  void validate(const std::string& source = "model config") const;

  // The built-in tiny preset: byte-level vocabulary (261 tokens), hidden 256,
  // 4 layers, 8 heads, 4 KV heads, intermediate 688, 512 positions, tied.
  static ModelConfig tiny();
  // SmolLM-135M's shape (used by the benchmark).
  static ModelConfig smollm_135m();

  // Longest sequence the engine runs: max_position_embeddings, capped at
  // kMaxContext (RoPE tables and KV caches are sized from it).
  int context_length() const;
  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  std::int64_t num_parameters() const;
  bool operator==(const ModelConfig&) const = default;
};

// RoPE inverse frequencies (head_dim / 2 of them) after rope_scaling, computed
// in double. "linear" scaling is folded in (divided by factor).
std::vector<double> rope_inv_freq(const ModelConfig& config);

}  // namespace fedge::inference
