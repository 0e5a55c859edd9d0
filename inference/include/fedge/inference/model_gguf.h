// GGUF model files, as llama.cpp's convert_hf_to_gguf.py writes them, for the
// architectures `llama` and `qwen2`: reading a model (Model::load dispatches
// here for a GGUF file) and its tokenizer, and writing both. Names, keys, the
// Q/K row permutation and the limits are described in docs/MODEL_FORMATS.md.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fedge/common/gguf.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"

namespace fedge::inference {

// A path named *.gguf, or a regular file that starts with GGUF's magic "GGUF".
bool is_gguf_file(const std::filesystem::path& path);

// The model config a GGUF file's metadata describes (what Model::load checks
// the tensors against); Error(kInvalidInput) naming a missing or bad key.
ModelConfig load_gguf_config(const std::filesystem::path& path);

// The tokenizer a GGUF file carries: the embedded tokenizer.huggingface.json
// when present (fedge writes it), otherwise built from tokenizer.ggml.* for
// the byte-level BPE model "gpt2" with the pre-tokenizers listed in the docs.
// BOS/EOS/PAD ids and add_bos_token/add_eos_token come from tokenizer.ggml.*.
// Anything else is Error(kInvalidInput) naming the key.
Tokenizer tokenizer_from_gguf(const GgufFile& file);
Tokenizer load_gguf_tokenizer(const std::filesystem::path& path);
// tokenizer.chat_template, or "" when the file has none.
std::string gguf_chat_template(const GgufFile& file);

// The tokenizer.* metadata for `tokenizer` (tokens padded with "[PADn]" up to
// `vocab_size` as llama.cpp does), plus `chat_template` when not empty.
std::vector<std::pair<std::string, GgufValue>> tokenizer_gguf_metadata(const Tokenizer& tokenizer, int vocab_size,
                                                                       const std::string& chat_template = {});

struct GgufModelInfo {
  std::string name;           // general.name
  std::string chat_template;  // tokenizer.chat_template (optional)
  bool q4_k_m = false;        // general.file_type 15 (MOSTLY_Q4_K_M) for a model loaded with LoadOptions::q4_k_m
};
// Metadata and tensors of `model` (and `tokenizer` when given) in llama.cpp's
// names, each tensor in the type the model holds it in; `keep` owns the bytes
// the views point into. Deterministic: the same model gives the same bytes.
// Error(kInvalidInput) for what GGUF or llama.cpp cannot express (llama3 rope
// scaling, a bf16 model's quantization type naming).
struct GgufModelContents {
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<GgufTensorView> tensors;
  std::vector<at::Tensor> keep;
};
GgufModelContents gguf_model_contents(const Model& model, const Tokenizer* tokenizer, const GgufModelInfo& info);
// Writes them as a GGUF v3 file, atomically.
void write_model_gguf(const std::filesystem::path& path, const Model& model, const Tokenizer* tokenizer,
                      const GgufModelInfo& info);

}  // namespace fedge::inference

namespace fedge::inference {

// `fedge quantize`: a model (HF directory, GGUF file or "tiny") held as
// `type` (embedding and LM head as `keep`, default `type`) and written with
// its tokenizer (and tokenizer_config.json's chat_template) as GGUF v3.
struct QuantizeCommand {
  std::string model;
  std::filesystem::path out;
  WeightType type = WeightType::kQ8_0;
  bool q4_k_m = false;  // with type q4_k: llama.cpp's Q4_K_M mix (LoadOptions::q4_k_m)
  std::optional<WeightType> keep;
  std::string name;  // general.name; default: the model directory's name
  // When set, the written file is loaded back and the logits of this prompt
  // compared with the source model's as stored (relative L2 over every
  // position), so a user sees what the quantization cost.
  std::string compare_prompt;
};
struct QuantizeResult {
  std::optional<double> compare_relative_l2;  // with compare_prompt
  int compare_tokens = 0;
};
QuantizeResult run_quantize(const QuantizeCommand& command);

// ||a - b|| / ||b|| of the logits of every position of `prompt` under two
// models that share a vocabulary (the prompt is encoded with `tokenizer`).
double logits_relative_l2(Model& a, Model& b, const Tokenizer& tokenizer, const std::string& prompt);

}  // namespace fedge::inference
