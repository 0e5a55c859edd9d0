// Text generation: sampling (greedy, temperature, top-k, top-p, repetition
// penalty), stop tokens and strings, streaming, batches of prompts, and the
// `fedge generate` command's logic.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"

namespace fedge::inference {

// A model and its tokenizer from a command-line/config spec: a Hugging Face
// directory, a GGUF file (model and tokenizer from the one file), or "tiny"
// (the built-in tiny preset with random weights, seed 0, and its byte-level
// tokenizer), held as `options` asks.
struct LoadedModel {
  Model model;
  Tokenizer tokenizer;
};
LoadedModel load_model_spec(const std::string& spec, const LoadOptions& options = {});

struct SamplingOptions {
  int max_tokens = 128;
  float temperature = 0.0f;  // 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  float repetition_penalty = 1.0f;  // HF/CTRL style; 1: off
  std::vector<TokenId> stop_ids;    // added to the model's EOS ids
  std::vector<std::string> stop_strings;
  std::uint64_t seed = 0;
  void validate() const;  // Error(kInvalidInput) naming the option
};

// Picks the next token from one row of logits. `history` (prompt and output so
// far) feeds the repetition penalty. Deterministic for a given rng state.
TokenId sample_token(std::vector<float> logits, const std::vector<TokenId>& history,
                     const SamplingOptions& options, std::mt19937_64& rng);

struct GenerationResult {
  std::vector<TokenId> tokens;  // generated ids (stop token excluded)
  std::string text;             // decoded continuation (when a tokenizer is given)
  std::string stop_reason;      // "eos", "stop_string", "max_tokens", "context", "callback"
  int prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int decoded_steps = 0;        // forward passes after prefill
};

// Called with each row's newly complete text (may be empty for partial UTF-8
// or held-back stop-string prefixes) and token; return false to stop that row.
using TokenCallback = std::function<bool(int row, TokenId token, std::string_view text)>;

// Generates for each prompt (a batch, padded on the left). Each row samples
// with its own generator seeded from options.seed, so a batch gives the same
// tokens as running each prompt alone. A prompt that does not leave room for
// one new token in the context is Error(kInvalidInput).
std::vector<GenerationResult> generate(Model& model, const std::vector<std::vector<TokenId>>& prompts,
                                       const SamplingOptions& options, const Tokenizer* tokenizer = nullptr,
                                       const TokenCallback& callback = {});

// `fedge generate`'s logic.
struct GenerateCommand {
  std::string model = "tiny";  // directory or "tiny"
  std::string adapter;         // PEFT directory, optional
  std::string prompt;
  SamplingOptions sampling;
  // bf16 halves the bytes read per token; unset: f32 for a directory, the
  // file's own types for a GGUF file.
  std::optional<WeightType> weights;
  int threads = 0;
};
// Writes a complete HF directory: config.json, model.safetensors and, when
// given, the tokenizer's files.
void save_model_dir(const Model& model, const std::filesystem::path& dir, const Tokenizer* tokenizer);

// Streams the continuation to `out`, speed figures to spdlog/stderr. Returns 0.
int run_generate(const GenerateCommand& command, std::FILE* out);

}  // namespace fedge::inference
