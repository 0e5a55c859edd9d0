// A Llama-family decoder in plain data layout: one tensor per HF weight, a
// preallocated KV cache, and two forward paths:
//  - forward()/forward_layers(): inference, no autograd, raw loops plus BLAS
//    for prompts and fused GEMV kernels for single-token decoding;
//  - forward_train(): ATen ops with autograd, for LoRA training.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "fedge/inference/lora.h"
#include "fedge/inference/model_config.h"
#include "fedge/inference/tokenizer.h"

namespace fedge::inference {

// How a weight matrix is held in memory. Q8_0, Q4_0, Q5_0 and the k-quants
// Q4_K and Q6_K are GGUF's blocks (inference/quant.h); the model multiplies
// with them without unpacking.
enum class WeightType { kF32, kBF16, kF16, kQ8_0, kQ4_0, kQ5_0, kQ4_K, kQ6_K };
// "f32", "bf16", "f16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"
const char* weight_type_name(WeightType type);
// The inverse; Error(kInvalidInput) naming the accepted names otherwise.
WeightType parse_weight_type(std::string_view name);
// Every name parse_weight_type accepts (for option checks).
std::vector<std::string> weight_type_names();
bool is_quantized(WeightType type);
// Bytes per weight held as `type`, block scales included (Q4_0: 18 / 32).
double bytes_per_weight(WeightType type);

struct LoadOptions {
  // The linear projections. Unset: as stored for a GGUF file (each tensor
  // keeps the file's type), f32 for a Hugging Face directory.
  std::optional<WeightType> weights;
  // The token embedding and the LM head; unset: the projections' type (a
  // GGUF file's own type for these two when `weights` is unset too).
  // (llama.cpp's `--leave-output-tensor` / `--token-embedding-type` in one.)
  std::optional<WeightType> embeddings;
  // llama.cpp's Q4_K_M mix, with `weights` = q4_k: the LM head (or the tied
  // table) and, in the layers llama.cpp gives more bits (the first and last
  // eighth and every third between), attn_v and ffn_down in Q6_K. An
  // explicit `embeddings` type still wins for the table and head.
  bool q4_k_m = false;
  WeightType weight_type() const { return weights.value_or(WeightType::kF32); }
  WeightType embedding_type() const { return embeddings.value_or(weight_type()); }
  // Model::load: an f32, bf16 or f16 tensor stored in the file in the type it
  // is held in is used in place from the file's read-only memory map (the
  // page cache is the only copy, shared with every process that maps the
  // file); false, or a tensor not aligned to its element size: copied.
  // A mapped file must be replaced by rename (as fedge writes files), never
  // rewritten in place while a model maps it (a truncated map faults).
  bool map = true;
};

// A weight matrix [out, in] is an f32, bf16 or f16 tensor of that shape, or,
// quantized, a uint8 tensor [out, in / block_weights, block_bytes] (quant.h:
// 32 weights in 34 bytes for Q8_0, 18 for Q4_0, 22 for Q5_0; 256 in 144 for
// Q4_K, 210 for Q6_K) holding GGUF's blocks row by row; the block bytes tell
// the type. A matrix whose `in` is not whole blocks falls back as llama.cpp's
// quantizer does (type_for_shape in src/model_impl.h): Q4_K to Q5_0, Q6_K to Q8_0, and a row not
// whole 32-weight blocks to f16.
WeightType weight_type_of(const at::Tensor& w);
std::int64_t in_features(const at::Tensor& w);
// The matrix as f32 [out, in] (the tensor itself when it is f32).
at::Tensor weight_to_f32(const at::Tensor& w);

struct LayerWeights {
  at::Tensor attn_norm, mlp_norm;              // [hidden] f32
  at::Tensor wq, wk, wv, wo, wgate, wup, wdown;  // weight matrices (see above)
  at::Tensor bq, bk, bv;                       // [out] f32, undefined without bias
  at::Tensor& proj(LoraTarget t);
  const at::Tensor& proj(LoraTarget t) const;
};

// Keys and values for a range of layers, preallocated for `capacity` slots
// per row. Each row is its own sequence: it keeps its own length, and a
// token's slot is its position in that row, so prompts of different lengths
// share a batch (padding takes no slot) and, for continuous batching, rows at
// different positions decode in one pass and a row can be reset for a new
// sequence while the others go on.
class KVCache {
 public:
  KVCache() = default;
  KVCache(const ModelConfig& config, int layer_begin, int layer_end, int batch, int capacity);
  int batch() const { return batch_; }
  int capacity() const { return capacity_; }
  int length() const;  // slots used by the longest row
  int layer_begin() const { return layer_begin_; }
  int layer_end() const { return layer_end_; }
  int next_position(int row) const { return next_pos_[row]; }
  void reset();
  // Frees one row for a new sequence (continuous batching); the others keep theirs.
  void reset_row(int row);
  // Makes room for at least `batch` rows of `capacity` slots, keeping what
  // every row holds (a continuous batch grows as requests join it).
  // Error(kInvalidInput) beyond the model's context.
  void grow(int batch, int capacity);

  // Internal layout: [layer][row][kv_head][slot][head_dim].
  float* keys(int layer, int row, int kv_head);
  float* values(int layer, int row, int kv_head);

  // Reserves `steps` new slots with mask [batch * steps] (1 = real token) and
  // returns per-slot positions (-1 for padding); Error(kInvalidInput) when a
  // row runs out of capacity.
  std::vector<int> append(std::span<const std::uint8_t> mask, int steps);
  // The same for tokens of any rows: rows[i] is token i's row (-1: padding).
  std::vector<int> append_rows(std::span<const int> rows);

 private:
  int layer_begin_ = 0, layer_end_ = 0, batch_ = 0, capacity_ = 0, max_capacity_ = 0;
  int kv_heads_ = 0, head_dim_ = 0;
  std::vector<float> k_, v_;
  std::vector<int> next_pos_;
};

// One sequence's new tokens in a ragged pass (Model::forward_rows): its cache
// row and its tokens (a prompt to prefill, or the token decoded last).
struct RowTokens {
  int row = 0;
  std::span<const TokenId> tokens;
};

class Model {
 public:
  // Loads a Hugging Face directory (config.json + model.safetensors or a
  // sharded model.safetensors.index.json) or a GGUF file (architectures llama
  // and qwen2, see model_gguf.h). Errors name the file or tensor.
  static Model load(const std::filesystem::path& dir, const LoadOptions& options = {});
  // Random initialisation (normal, std 0.02; norms 1) from a seed.
  static Model random(const ModelConfig& config, std::uint64_t seed, const LoadOptions& options = {});
  // The tiny preset (ModelConfig::tiny()) from `seed`.
  static Model tiny(std::uint64_t seed = 0);

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Writes config.json + model.safetensors (see save_model_dir for the
  // tokenizer's files too).
  void save(const std::filesystem::path& dir) const;

  const ModelConfig& config() const;
  WeightType weight_type() const;  // the projections' type (LoadOptions::weights)
  LayerWeights& layer(int i);
  const LayerWeights& layer(int i) const;
  const at::Tensor& embed_tokens() const;  // [vocab, hidden]
  const at::Tensor& final_norm() const;    // [hidden]
  const at::Tensor& lm_head() const;       // [vocab, hidden]; same tensor as embed when tied
  // Weights by HF name, in file order.
  std::vector<std::pair<std::string, at::Tensor>> named_weights() const;
  std::size_t weight_bytes() const;  // bytes of weights read per decoded token
  // Memory the base weights take: every tensor once (tied embeddings once),
  // and the part of it that is the file's memory map (LoadOptions::map).
  struct WeightMemory {
    std::size_t bytes = 0, mapped_bytes = 0;
  };
  WeightMemory weight_memory() const;

  // --- one base, several users ---
  // A second Model over the same base weights: no copy (the tensors are
  // reference counted and shared), no adapters, nothing active or merged.
  // Each Model has its own adapters and KV caches, and the engine only reads
  // the base, so a serving thread and a training thread may use two Models
  // that share a base at the same time. Error(kInvalidInput) while an adapter
  // is merged (the shared weights would carry it).
  Model share() const;
  // True when some base weight is not this Model's alone: a view of the
  // file's read-only map (LoadOptions::map) or shared with another Model
  // (share()). Such weights must not be written in place: merge_adapter
  // copies the ones it writes, and full-parameter training calls own_weights()
  // first.
  bool weights_read_only() const;
  // Gives this Model a private copy of every mapped or shared base weight
  // (the base's memory once more), so they can be written in place.
  void own_weights();

  // --- inference (no autograd) ---
  // tokens and mask are [batch, steps] row-major; mask 1 = real token, 0 =
  // padding (empty mask: all real). Returns logits [batch, steps, vocab] when
  // `all_logits`, else [batch, vocab] of each row's last slot.
  std::vector<float> forward(std::span<const TokenId> tokens, std::span<const std::uint8_t> mask,
                             int batch, int steps, KVCache& cache, bool all_logits = false);
  // Continuous batching: the new tokens of several sequences in one pass,
  // without padding. Each entry names its own cache row, which may be at any
  // position; rows not listed are untouched; a row appears at most once.
  // Returns logits [rows.size(), vocab] of each entry's last token.
  std::vector<float> forward_rows(std::span<const RowTokens> rows, KVCache& cache);
  // Embedding lookup: hidden [rows, hidden_size].
  std::vector<float> embed(std::span<const TokenId> tokens) const;
  // Runs layers [begin, end) in place on hidden [batch * steps, hidden_size];
  // `cache` must cover exactly those layers (split inference).
  void forward_layers(std::span<float> hidden, std::span<const std::uint8_t> mask, int batch,
                      int steps, int begin, int end, KVCache& cache);
  // Final norm and LM head on hidden [rows, hidden_size] -> [rows, vocab].
  std::vector<float> logits(std::span<const float> hidden, int rows);
  KVCache make_cache(int batch, int capacity, int layer_begin = 0, int layer_end = -1) const;

  // --- training ---
  // tokens [B, T] int64, attention_mask [B, T] (undefined: all ones); returns
  // logits [B, T, vocab] f32 with autograd through the active adapter only.
  at::Tensor forward_train(const at::Tensor& tokens, const at::Tensor& attention_mask = {},
                           bool training = false);
  // The same pass up to and including the final norm: hidden [B, T, hidden]
  // (the LM head is lm_head(); a fused head + loss can skip the full logits).
  // `checkpoint_layers`: for the first that many layers keep only the layer's
  // input and recompute the layer in backward (less activation memory, that
  // share of one more forward's compute); 0 = none, num_layers or more = all.
  at::Tensor forward_train_hidden(const at::Tensor& tokens, const at::Tensor& attention_mask = {},
                                  bool training = false, int checkpoint_layers = 0);

  // --- LoRA ---
  // Adapters stay unmerged until merge_adapter; add/remove/switch never touch
  // the base weights.
  void add_adapter(const std::string& name, LoraAdapter adapter);
  void remove_adapter(const std::string& name);
  void set_active_adapter(const std::string& name);  // "" = none
  const std::string& active_adapter() const;
  LoraAdapter* adapter(const std::string& name);
  std::vector<std::string> adapter_names() const;
  // Folds the adapter into the base weights (f32 weights only); only one
  // adapter may be merged at a time, and none is active meanwhile. A weight
  // that is mapped or shared (weights_read_only) is copied first (copy on
  // write): the file and the other Models keep the unmerged weight.
  void merge_adapter(const std::string& name);
  // Subtracts the merged adapter again; a weight copied by merge_adapter goes
  // back to the shared original (and its memory is released).
  void unmerge_adapter();
  const std::string& merged_adapter() const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  // The layers on hidden [tokens, hidden_size]; token i is in cache row
  // rows[i] (-1: padding) at position positions[i].
  void run_layers(std::span<float> hidden, std::span<const int> rows, std::span<const int> positions, int begin,
                  int end, KVCache& cache);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::inference
