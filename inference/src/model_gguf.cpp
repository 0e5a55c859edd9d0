// GGUF model files: llama.cpp's names and metadata keys for `llama` and
// `qwen2` <-> the model's internals (HF names), the Q/K row permutation of
// `llama`, tensors mapped without a copy where the types allow, and the
// tokenizer's metadata.
#include "fedge/inference/model_gguf.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/quant.h"
#include "model_impl.h"

namespace fedge::inference {
namespace fs = std::filesystem;

namespace {

using Metadata = std::vector<std::pair<std::string, GgufValue>>;

// llama.cpp's token types (gguf-py TokenType).
enum TokenType : std::int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// llama.cpp's LlamaFileType for a model whose projections are `type`.
std::uint32_t llama_file_type(WeightType type) {
  switch (type) {
    case WeightType::kF32: return 0;
    case WeightType::kF16: return 1;
    case WeightType::kQ4_0: return 2;
    case WeightType::kQ8_0: return 7;
    case WeightType::kQ5_0: return 8;
    case WeightType::kQ4_K: return 14;  // MOSTLY_Q4_K_S: every projection Q4_K (or its fallback)
    case WeightType::kQ6_K: return 18;
    case WeightType::kBF16: return 32;
  }
  return 0;
}

GgmlType ggml_type_of(WeightType type) {
  switch (type) {
    case WeightType::kF32: return GgmlType::kF32;
    case WeightType::kF16: return GgmlType::kF16;
    case WeightType::kBF16: return GgmlType::kBF16;
    case WeightType::kQ8_0: return GgmlType::kQ8_0;
    case WeightType::kQ4_0: return GgmlType::kQ4_0;
    case WeightType::kQ5_0: return GgmlType::kQ5_0;
    case WeightType::kQ4_K: return GgmlType::kQ4_K;
    case WeightType::kQ6_K: return GgmlType::kQ6_K;
  }
  return GgmlType::kF32;
}

WeightType weight_type_for(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return WeightType::kF32;
    case GgmlType::kF16: return WeightType::kF16;
    case GgmlType::kBF16: return WeightType::kBF16;
    case GgmlType::kQ8_0: return WeightType::kQ8_0;
    case GgmlType::kQ4_0: return WeightType::kQ4_0;
    case GgmlType::kQ5_0: return WeightType::kQ5_0;
    case GgmlType::kQ4_K: return WeightType::kQ4_K;
    case GgmlType::kQ6_K: return WeightType::kQ6_K;
  }
  return WeightType::kF32;
}

at::ScalarType scalar_type_of(WeightType type) {
  switch (type) {
    case WeightType::kF16: return at::kHalf;
    case WeightType::kBF16: return at::kBFloat16;
    case WeightType::kF32: return at::kFloat;
    default: return at::kByte;
  }
}

// HF name -> llama.cpp's tensor name.
std::string gguf_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  const std::size_t start = std::string("model.layers.").size();
  const std::size_t dot = hf.find('.', start);
  const std::string rest = hf.substr(dot + 1);
  for (const auto& [from, to] : kLayer)
    if (rest == from) return "blk." + hf.substr(start, dot - start) + "." + to;
  throw Error(ErrorKind::kRuntime, "no GGUF name for tensor '" + hf + "'");
}

// llama.cpp's converter reorders each head's Q and K rows for `llama` (its
// RoPE rotates adjacent pairs where HF rotates the two halves): within a head
// of D rows, GGUF row 2i + j is HF row j * D/2 + i. Returns, for each row of
// the result, the source row: HF -> GGUF (`to_gguf`) or back.
at::Tensor head_permutation(std::int64_t rows, std::int64_t heads, bool to_gguf) {
  const std::int64_t d = rows / heads, half = d / 2;
  std::vector<std::int64_t> src(rows);
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t j = 0; j < 2; ++j) {
        const std::int64_t gguf_row = h * d + 2 * i + j, hf_row = h * d + j * half + i;
        if (to_gguf) src[gguf_row] = hf_row;
        else src[hf_row] = gguf_row;
      }
  return at::tensor(src, at::kLong);
}

// Heads whose rows the converter permutes for this tensor (0: none).
std::int64_t permuted_heads(const ModelConfig& c, const std::string& hf_name) {
  if (c.model_type == "qwen2") return 0;
  const bool q = hf_name.ends_with("q_proj.weight") || hf_name.ends_with("q_proj.bias");
  const bool k = hf_name.ends_with("k_proj.weight") || hf_name.ends_with("k_proj.bias");
  return q ? c.num_heads : k ? c.num_kv_heads : 0;
}

std::string gguf_arch(const ModelConfig& c) { return c.model_type == "qwen2" ? "qwen2" : "llama"; }

std::string dims_text(const std::vector<std::uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// ---------------------------------------------------------------- metadata reading

[[noreturn]] void bad(const GgufFile& f, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, f.source_name() + ": " + what);
}

std::optional<double> number(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find_metadata(key);
  if (!v) return std::nullopt;
  return std::visit(
      [&](const auto& x) -> double {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) return static_cast<double>(x);
        else bad(f, "metadata '" + key + "' must be a number");
      },
      *v);
}

// A positive count that fits an int (the model's sizes).
std::optional<int> count(const GgufFile& f, const std::string& key) {
  if (!f.find_metadata(key)) return std::nullopt;
  const std::uint64_t v = f.metadata_uint(key);
  if (v == 0 || v > (1u << 30)) bad(f, "metadata '" + key + "' = " + std::to_string(v) + " is not in 1..2^30");
  return static_cast<int>(v);
}

int required_count(const GgufFile& f, const std::string& key) {
  if (auto v = count(f, key)) return *v;
  bad(f, "metadata '" + key + "' is missing (a " + f.metadata_string("general.architecture") + " model needs it)");
}

std::optional<bool> flag(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find_metadata(key);
  if (!v) return std::nullopt;
  if (const bool* b = std::get_if<bool>(v)) return *b;
  bad(f, "metadata '" + key + "' must be a bool");
}

std::optional<TokenId> token_id(const GgufFile& f, const std::string& key, int vocab) {
  if (!f.find_metadata(key)) return std::nullopt;
  const std::uint64_t v = f.metadata_uint(key);
  if (v >= static_cast<std::uint64_t>(vocab))
    bad(f, "metadata '" + key + "' = " + std::to_string(v) + " is not a token id (vocabulary of " + std::to_string(vocab) + ")");
  return static_cast<TokenId>(v);
}

const GgufArray* array(const GgufFile& f, const std::string& key, GgufType element) {
  const GgufValue* v = f.find_metadata(key);
  if (!v) return nullptr;
  const auto* a = std::get_if<std::shared_ptr<const GgufArray>>(v);
  if (!a || (*a)->element_type != element) bad(f, "metadata '" + key + "' must be an array of the expected type");
  return a->get();
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const std::string arch = f.metadata_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    bad(f, "general.architecture '" + arch + "' is not supported (fedge reads llama and qwen2)");
  const std::string p = arch + ".";
  ModelConfig c;
  c.model_type = arch;
  c.architecture = arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  c.hidden_size = required_count(f, p + "embedding_length");
  c.num_layers = required_count(f, p + "block_count");
  c.intermediate_size = required_count(f, p + "feed_forward_length");
  c.num_heads = required_count(f, p + "attention.head_count");
  c.num_kv_heads = count(f, p + "attention.head_count_kv").value_or(c.num_heads);
  c.head_dim = count(f, p + "attention.key_length").value_or(c.hidden_size / c.num_heads);
  if (auto v = count(f, p + "attention.value_length"); v && *v != c.head_dim)
    bad(f, "metadata '" + p + "attention.value_length' (" + std::to_string(*v) + ") differs from the key length " +
               std::to_string(c.head_dim) + "; fedge needs them equal");
  if (auto v = count(f, p + "rope.dimension_count"); v && *v != c.head_dim)
    bad(f, "metadata '" + p + "rope.dimension_count' (" + std::to_string(*v) + ") is not the head size " +
               std::to_string(c.head_dim) + "; partial RoPE is not supported");
  c.max_position_embeddings = count(f, p + "context_length").value_or(2048);
  c.rms_norm_eps = number(f, p + "attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope_theta = number(f, p + "rope.freq_base").value_or(10000.0);
  if (f.find_metadata(p + "rope.scaling.type")) {
    const std::string type = f.metadata_string(p + "rope.scaling.type");
    if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = number(f, p + "rope.scaling.factor").value_or(1.0);
    } else if (type != "none") {
      bad(f, "metadata '" + p + "rope.scaling.type' = '" + type + "' is not supported (none, linear)");
    }
  }
  if (const GgufTensorInfo* freqs = f.find("rope_freqs.weight")) {
    // llama.cpp's converter writes llama3 rope scaling as one divisor per
    // frequency; validate() checks their count and values.
    if (freqs->type != GgmlType::kF32 || freqs->dims.size() != 1)
      bad(f, "tensor 'rope_freqs.weight' must be a 1-D F32 tensor, not " + std::string(ggml_type_name(freqs->type)) +
                 " " + dims_text(freqs->dims));
    if (freqs->dims[0] != static_cast<std::uint64_t>(c.head_dim / 2))
      bad(f, "tensor 'rope_freqs.weight' has " + std::to_string(freqs->dims[0]) + " factors; head size " +
                 std::to_string(c.head_dim) + " needs " + std::to_string(c.head_dim / 2));
    const auto bytes = f.bytes(*freqs);
    std::vector<float> factors(bytes.size() / sizeof(float));
    std::memcpy(factors.data(), bytes.data(), factors.size() * sizeof(float));
    c.rope_scaling = {};
    c.rope_scaling.type = "freq_factors";
    c.rope_scaling.freq_factors.assign(factors.begin(), factors.end());
  }
  const GgufArray* tokens = array(f, "tokenizer.ggml.tokens", GgufType::kString);
  if (auto v = count(f, p + "vocab_size")) c.vocab_size = *v;
  else if (tokens) c.vocab_size = static_cast<int>(tokens->values.size());
  else if (const auto* e = f.find("token_embd.weight"); e && e->dims.size() == 2 && e->dims[1] <= (1u << 30))
    c.vocab_size = static_cast<int>(e->dims[1]);
  else bad(f, "no vocabulary size: neither '" + p + "vocab_size' nor tokenizer.ggml.tokens nor token_embd.weight");
  c.tie_word_embeddings = f.find("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2" || f.find("blk.0.attn_q.bias") != nullptr;
  if (auto id = token_id(f, "tokenizer.ggml.bos_token_id", c.vocab_size)) c.bos_token_id = *id;
  if (auto id = token_id(f, "tokenizer.ggml.eos_token_id", c.vocab_size)) c.eos_token_ids = {*id};
  c.validate(f.source_name());
  return c;
}

// ---------------------------------------------------------------- tensors

// The tensor's bytes as a tensor of the model's layout for `type` (the file's
// type), sharing the mapping where the address suits the element type.
at::Tensor wrap(const std::shared_ptr<const GgufFile>& file, const GgufTensorInfo& info,
                const std::vector<std::int64_t>& shape) {
  const WeightType type = weight_type_for(info.type);
  std::vector<std::int64_t> sizes = shape;
  if (is_quantized(type)) sizes = {shape[0], shape[1] / block_weights(type), block_bytes(type)};
  const auto options = at::TensorOptions().dtype(scalar_type_of(type));
  const auto bytes = file->bytes(info);
  void* data = const_cast<std::byte*>(bytes.data());
  if (reinterpret_cast<std::uintptr_t>(data) % at::elementSize(scalar_type_of(type)) != 0) {
    at::Tensor copy = at::empty(sizes, options);
    std::memcpy(copy.data_ptr(), data, bytes.size());
    return copy;
  }
  // The mapping is read-only and lives as long as any tensor that points into it.
  return at::from_blob(data, sizes, [file](void*) {}, options);
}

struct Loader {
  std::shared_ptr<const GgufFile> file;
  const ModelConfig& config;
  const LoadOptions& options;

  // The type `spec` is held in: the file's own unless the options ask.
  WeightType target(const WeightSpec& spec, GgmlType stored) const {
    if (spec.norm) return WeightType::kF32;
    if (spec.is_table() ? options.embeddings || options.weights : options.weights.has_value())
      return spec.type(options);
    return weight_type_for(stored);
  }

  at::Tensor load(const WeightSpec& spec) const {
    const std::string name = gguf_name(spec.name);
    const GgufTensorInfo* info = file->find(name);
    if (!info)
      bad(*file, "tensor '" + name + "' (" + spec.name + ") is missing; a " + gguf_arch(config) + " model with " +
                     std::to_string(config.num_layers) + " layers needs it");
    std::vector<std::uint64_t> want(spec.shape.rbegin(), spec.shape.rend());
    if (info->dims != want)
      bad(*file, "tensor '" + name + "' has dims " + dims_text(info->dims) + ", expected " + dims_text(want) +
                     " (fastest first)");
    if (spec.shape.size() == 1 && is_quantized(weight_type_for(info->type)))
      bad(*file, "tensor '" + name + "' is " + std::string(ggml_type_name(info->type)) +
                     "; a norm or bias must be F32, F16 or BF16");
    const WeightType type = type_for_shape(target(spec, info->type), spec.shape);
    at::Tensor t = wrap(file, *info, spec.shape);
    const std::int64_t heads = permuted_heads(config, spec.name);
    if (weight_type_for(info->type) == type) {
      // A row permutation moves whole rows: exact on quantized rows too.
      return heads ? t.index_select(0, head_permutation(spec.shape[0], heads, false)) : t;
    }
    at::Tensor f32 = weight_to_f32(t);
    if (heads) f32 = f32.index_select(0, head_permutation(spec.shape[0], heads, false));
    f32 = f32.contiguous();
    return make_weight(f32.data_ptr<float>(), spec.shape, type);
  }
};

}  // namespace

bool is_gguf_file(const fs::path& path) {
  // By name too, so that a missing or broken FILE.gguf gets the GGUF reader's
  // error rather than "no config.json".
  if (path.extension() == ".gguf") return true;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

ModelConfig load_gguf_config(const fs::path& path) { return config_from_gguf(GgufFile::open(path)); }

std::unique_ptr<Model::Impl> load_gguf_impl(const fs::path& path, const LoadOptions& options) {
  auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
  const ModelConfig config = config_from_gguf(*file);
  auto impl = std::make_unique<Model::Impl>();
  impl->config = config;
  impl->layers.resize(config.num_layers);
  impl->build_rope();
  const Loader loader{file, config, options};
  for (const WeightSpec& spec : weight_specs(config, !config.tie_word_embeddings))
    assign_weight(*impl, spec.name, loader.load(spec));
  if (config.tie_word_embeddings) impl->head = impl->embed;
  impl->wtype = weight_type_of(impl->layers.at(0).wq);
  // Tensors used in place point into the read-only map: merge_adapter's
  // copy-on-write and weights_read_only() tell them by these ranges.
  for (const GgufTensorInfo& info : file->tensors()) {
    const auto bytes = file->bytes(info);
    if (!bytes.empty()) impl->mapped.emplace_back(bytes.data(), bytes.size());
  }
  spdlog::debug("loaded {} ({}, {} layers, projections {})", path.string(), gguf_arch(config), config.num_layers,
                weight_type_name(impl->wtype));
  return impl;
}

// ---------------------------------------------------------------- tokenizer

namespace {

// llama.cpp's pre-tokenizer names -> the tokenizer.json pre_tokenizer that
// splits text the same way.
nlohmann::json pre_tokenizer_for(const GgufFile& f, const std::string& pre) {
  using json = nlohmann::json;
  const json byte_level_regex = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const json byte_level_plain = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  auto split = [&](const std::string& regex) {
    return json{{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                  byte_level_plain}}};
  };
  if (pre == "default" || pre == "gpt2" || pre.empty()) return byte_level_regex;
  if (pre == "llama-bpe" || pre == "llama3")
    return split(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  if (pre == "qwen2")
    return split(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  if (pre == "smollm")
    return json{{"type", "Sequence"},
                {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_regex}}};
  bad(f, "tokenizer.ggml.pre '" + pre + "' is not supported (default, gpt2, llama-bpe, qwen2, smollm)");
}

// tokenizer.json text for a "gpt2" (byte-level BPE) vocabulary in tokenizer.ggml.*.
std::string gpt2_tokenizer_json(const GgufFile& f, const GgufArray& tokens) {
  using json = nlohmann::ordered_json;
  const GgufArray* types = array(f, "tokenizer.ggml.token_type", GgufType::kI32);
  const GgufArray* merges = array(f, "tokenizer.ggml.merges", GgufType::kString);
  if (types && types->values.size() != tokens.values.size())
    bad(f, "tokenizer.ggml.token_type has " + std::to_string(types->values.size()) + " entries for " +
               std::to_string(tokens.values.size()) + " tokens");
  if (!merges) bad(f, "tokenizer.ggml.merges is missing (a gpt2 tokenizer needs its merges)");
  json vocab = json::object(), added = json::array(), merge_list = json::array();
  for (std::size_t id = 0; id < tokens.values.size(); ++id) {
    const auto& text = std::get<std::string>(tokens.values[id]);
    const std::int32_t type = types ? std::get<std::int32_t>(types->values[id]) : kNormal;
    if (!vocab.contains(text)) vocab[text] = id;
    if (type == kControl || type == kUserDefined)
      added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", type == kControl}});
  }
  for (const auto& m : merges->values) merge_list.push_back(std::get<std::string>(m));
  const std::string pre = f.find_metadata("tokenizer.ggml.pre") ? f.metadata_string("tokenizer.ggml.pre") : "default";
  const json decoder = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  json model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                {"ignore_merges", pre == "llama-bpe" || pre == "llama3"}, {"vocab", vocab}, {"merges", merge_list}};
  json root = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added},
               {"normalizer", nullptr}, {"pre_tokenizer", json(pre_tokenizer_for(f, pre))},
               {"post_processor", nullptr}, {"decoder", decoder}, {"model", model}};
  return root.dump();
}

// The key's token ids applied to `t` the way tokenizer_config.json and
// generation_config.json would be.
void apply_special_ids(Tokenizer& t, const GgufFile& f, const GgufArray* tokens) {
  using json = nlohmann::json;
  const int vocab = t.vocab_size();
  const auto bos = token_id(f, "tokenizer.ggml.bos_token_id", vocab);
  const auto eos = token_id(f, "tokenizer.ggml.eos_token_id", vocab);
  const auto pad = token_id(f, "tokenizer.ggml.padding_token_id", vocab);
  std::vector<TokenId> eos_ids;
  if (const GgufArray* all = array(f, "fedge.eos_token_ids", GgufType::kU32))
    for (const auto& v : all->values) {
      const auto id = std::get<std::uint32_t>(v);
      if (id >= static_cast<std::uint32_t>(vocab)) bad(f, "fedge.eos_token_ids holds " + std::to_string(id) + ", not a token id");
      eos_ids.push_back(static_cast<TokenId>(id));
    }
  if (eos && eos_ids.empty()) eos_ids = {*eos};
  const std::string source = f.source_name() + " tokenizer.ggml ids";
  // The first EOS replaces whatever the tokenizer.json implied, then the full list.
  if (eos && tokens && *eos < static_cast<TokenId>(tokens->values.size()))
    t.apply_tokenizer_config(json{{"eos_token", std::get<std::string>(tokens->values[*eos])}}.dump(), source);
  json gen = json::object();
  if (bos) gen["bos_token_id"] = *bos;
  if (pad) gen["pad_token_id"] = *pad;
  if (!eos_ids.empty()) gen["eos_token_id"] = eos_ids;
  t.apply_generation_config(gen.dump(), source);
  json cfg = json::object();
  if (auto b = flag(f, "tokenizer.ggml.add_bos_token")) cfg["add_bos_token"] = *b;
  if (auto e = flag(f, "tokenizer.ggml.add_eos_token")) cfg["add_eos_token"] = *e;
  t.apply_tokenizer_config(cfg.dump(), source);
}

}  // namespace

Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const GgufArray* tokens = array(f, "tokenizer.ggml.tokens", GgufType::kString);
  std::optional<Tokenizer> t;
  if (f.find_metadata("tokenizer.huggingface.json")) {
    t.emplace(Tokenizer::from_json(f.metadata_string("tokenizer.huggingface.json"),
                                   f.source_name() + " tokenizer.huggingface.json"));
  } else {
    if (!f.find_metadata("tokenizer.ggml.model")) bad(f, "no tokenizer: tokenizer.ggml.model is missing");
    const std::string model = f.metadata_string("tokenizer.ggml.model");
    if (model != "gpt2")
      bad(f, "tokenizer.ggml.model '" + model + "' is not supported without tokenizer.huggingface.json (fedge builds "
                 "byte-level BPE 'gpt2' tokenizers from the GGUF vocabulary)");
    if (!tokens) bad(f, "tokenizer.ggml.tokens is missing");
    t.emplace(Tokenizer::from_json(gpt2_tokenizer_json(f, *tokens), f.source_name() + " tokenizer.ggml"));
    // llama.cpp's default for gpt2 vocabularies: no BOS unless the file asks.
    if (!f.find_metadata("tokenizer.ggml.add_bos_token"))
      t->apply_tokenizer_config(R"({"add_bos_token": false})", f.source_name());
  }
  apply_special_ids(*t, f, tokens);
  t->set_chat_template(gguf_chat_template(f));  // the model's chat format, rendered by ChatTemplate
  return std::move(*t);
}

Tokenizer load_gguf_tokenizer(const fs::path& path) { return tokenizer_from_gguf(GgufFile::open(path)); }

std::string gguf_chat_template(const GgufFile& f) {
  return f.find_metadata("tokenizer.chat_template") ? f.metadata_string("tokenizer.chat_template") : std::string();
}

namespace {

std::shared_ptr<const GgufArray> make_array(GgufType type, std::vector<GgufValue> values) {
  auto a = std::make_shared<GgufArray>();
  a->element_type = type;
  a->values = std::move(values);
  return a;
}

std::string merge_text(const nlohmann::json& m) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  throw Error(ErrorKind::kInvalidInput, "tokenizer merges entry is neither \"a b\" nor [\"a\", \"b\"]");
}

// llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer fedge
// recognises, "default" otherwise (fedge itself reads the embedded JSON).
std::string pre_name(const nlohmann::json& pre) {
  if (!pre.is_object()) return "default";
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") return "gpt2";
  const std::string text = pre.dump();
  if (text.find(R"(\\p{N}{1,3})") != std::string::npos) return "llama-bpe";
  if (text.find(R"(\\p{L}+|\\p{N}|)") != std::string::npos) return "qwen2";
  if (text.find("\"Digits\"") != std::string::npos) return "smollm";
  return "default";
}

}  // namespace

Metadata tokenizer_gguf_metadata(const Tokenizer& tok, int vocab_size, const std::string& chat_template) {
  using json = nlohmann::json;
  const std::string text = tok.to_json();
  const json root = json::parse(text);
  const json& model = root.at("model");
  if (model.value("type", "BPE") != "BPE")
    throw Error(ErrorKind::kInvalidInput, "only BPE tokenizers can be written to GGUF");
  const int n = std::max(vocab_size, tok.vocab_size());
  std::vector<std::string> tokens(n);
  std::vector<std::int32_t> types(n, kUnused);
  std::vector<bool> known(n, false);
  for (const auto& [piece, id] : model.at("vocab").items()) {
    const int i = id.get<int>();
    if (i < 0 || i >= n) continue;
    tokens[i] = piece;
    known[i] = true;
    const bool byte = piece.size() == 6 && piece.starts_with("<0x") && piece.ends_with(">");
    types[i] = byte && model.value("byte_fallback", false) ? kByte : kNormal;
  }
  if (root.contains("added_tokens") && root["added_tokens"].is_array())
    for (const auto& a : root["added_tokens"]) {
      const int i = a.at("id").get<int>();
      if (i < 0 || i >= n) continue;
      tokens[i] = a.at("content").get<std::string>();
      known[i] = true;
      types[i] = a.value("special", false) ? kControl : kUserDefined;
    }
  if (model.contains("unk_token") && model["unk_token"].is_string())
    if (auto id = tok.token_to_id(model["unk_token"].get<std::string>())) types[*id] = kUnknown;
  for (int i = 0; i < n; ++i)
    if (!known[i]) tokens[i] = "[PAD" + std::to_string(i) + "]";
  std::vector<GgufValue> token_values, type_values, merge_values;
  for (int i = 0; i < n; ++i) {
    token_values.emplace_back(tokens[i]);
    type_values.emplace_back(types[i]);
  }
  for (const auto& m : model.at("merges")) merge_values.emplace_back(merge_text(m));
  const bool byte_level = text.find("\"ByteLevel\"") != std::string::npos;
  Metadata md;
  md.emplace_back("tokenizer.ggml.model", std::string(byte_level ? "gpt2" : "llama"));
  md.emplace_back("tokenizer.ggml.pre", pre_name(root.value("pre_tokenizer", json())));
  md.emplace_back("tokenizer.ggml.tokens", make_array(GgufType::kString, std::move(token_values)));
  if (!byte_level) {
    // llama.cpp's SentencePiece path ranks merges by the merged token's score.
    std::vector<float> scores(n, 0.0f);
    int rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string s = merge_text(m);
      s.erase(s.find(' '), 1);
      if (auto id = tok.token_to_id(s); id && *id < n && scores[*id] == 0.0f) scores[*id] = -static_cast<float>(++rank);
    }
    std::vector<GgufValue> score_values(scores.begin(), scores.end());
    md.emplace_back("tokenizer.ggml.scores", make_array(GgufType::kF32, std::move(score_values)));
  }
  md.emplace_back("tokenizer.ggml.token_type", make_array(GgufType::kI32, std::move(type_values)));
  md.emplace_back("tokenizer.ggml.merges", make_array(GgufType::kString, std::move(merge_values)));
  if (auto b = tok.bos_id()) md.emplace_back("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(*b));
  const auto eos = tok.eos_ids();
  if (!eos.empty()) md.emplace_back("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(eos.front()));
  if (eos.size() > 1) {
    std::vector<GgufValue> all;
    for (TokenId id : eos) all.emplace_back(static_cast<std::uint32_t>(id));
    md.emplace_back("fedge.eos_token_ids", make_array(GgufType::kU32, std::move(all)));
  }
  if (model.contains("unk_token") && model["unk_token"].is_string())
    if (auto id = tok.token_to_id(model["unk_token"].get<std::string>()))
      md.emplace_back("tokenizer.ggml.unknown_token_id", static_cast<std::uint32_t>(*id));
  if (auto p = tok.pad_id()) md.emplace_back("tokenizer.ggml.padding_token_id", static_cast<std::uint32_t>(*p));
  // What encode(text, add_bos = true) adds around an empty text.
  const std::vector<TokenId> around = tok.encode("", true);
  const bool add_bos = tok.bos_id() && !around.empty() && around.front() == *tok.bos_id();
  const bool add_eos = !eos.empty() && around.size() > (add_bos ? 1u : 0u) && around.back() == eos.front();
  md.emplace_back("tokenizer.ggml.add_bos_token", add_bos);
  md.emplace_back("tokenizer.ggml.add_eos_token", add_eos);
  if (!chat_template.empty()) md.emplace_back("tokenizer.chat_template", chat_template);
  md.emplace_back("tokenizer.huggingface.json", text);
  return md;
}

namespace {

// llama3 rope scaling as llama.cpp's converter stores it: one divisor per
// frequency (rope_freqs.weight), the ratio of the unscaled inverse frequency to
// the scaled one. Empty for default and linear scaling (metadata keys).
std::vector<float> gguf_rope_factors(const ModelConfig& c) {
  const auto& s = c.rope_scaling;
  if (s.type == "default" || s.type == "linear") return {};
  if (s.type == "freq_factors") return {s.freq_factors.begin(), s.freq_factors.end()};
  if (s.type != "llama3")
    throw Error(ErrorKind::kInvalidInput, "rope_scaling '" + s.type + "' cannot be written to GGUF by fedge");
  ModelConfig unscaled = c;
  unscaled.rope_scaling = {};
  const std::vector<double> plain = rope_inv_freq(unscaled), scaled = rope_inv_freq(c);
  std::vector<float> factors(plain.size());
  for (std::size_t i = 0; i < plain.size(); ++i) factors[i] = static_cast<float>(plain[i] / scaled[i]);
  return factors;
}

}  // namespace

GgufModelContents gguf_model_contents(const Model& model, const Tokenizer* tokenizer, const GgufModelInfo& info) {
  const ModelConfig& c = model.config();
  const std::vector<float> rope_factors = gguf_rope_factors(c);
  const std::string arch = gguf_arch(c), p = arch + ".";
  GgufModelContents out;
  Metadata& md = out.metadata;
  md.emplace_back("general.architecture", arch);
  md.emplace_back("general.name", info.name);
  md.emplace_back("general.alignment", std::uint32_t{32});
  md.emplace_back(p + "vocab_size", static_cast<std::uint32_t>(c.vocab_size));
  md.emplace_back(p + "context_length", static_cast<std::uint32_t>(c.max_position_embeddings));
  md.emplace_back(p + "embedding_length", static_cast<std::uint32_t>(c.hidden_size));
  md.emplace_back(p + "block_count", static_cast<std::uint32_t>(c.num_layers));
  md.emplace_back(p + "feed_forward_length", static_cast<std::uint32_t>(c.intermediate_size));
  md.emplace_back(p + "rope.dimension_count", static_cast<std::uint32_t>(c.head_dim));
  md.emplace_back(p + "attention.head_count", static_cast<std::uint32_t>(c.num_heads));
  md.emplace_back(p + "attention.head_count_kv", static_cast<std::uint32_t>(c.num_kv_heads));
  if (c.head_dim != c.hidden_size / c.num_heads) {
    md.emplace_back(p + "attention.key_length", static_cast<std::uint32_t>(c.head_dim));
    md.emplace_back(p + "attention.value_length", static_cast<std::uint32_t>(c.head_dim));
  }
  md.emplace_back(p + "rope.freq_base", static_cast<float>(c.rope_theta));
  md.emplace_back(p + "attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  if (c.rope_scaling.type == "linear") {
    md.emplace_back(p + "rope.scaling.type", std::string("linear"));
    md.emplace_back(p + "rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
  }
  md.emplace_back("general.file_type", info.q4_k_m ? std::uint32_t{15} : llama_file_type(model.weight_type()));
  md.emplace_back("general.quantization_version", std::uint32_t{2});
  if (tokenizer)
    for (auto& kv : tokenizer_gguf_metadata(*tokenizer, c.vocab_size, info.chat_template)) md.push_back(std::move(kv));
  if (!rope_factors.empty()) {
    at::Tensor t = at::from_blob(const_cast<float*>(rope_factors.data()), {std::int64_t(rope_factors.size())},
                                 at::kFloat).clone();
    out.keep.push_back(t);
    GgufTensorView v;
    v.name = "rope_freqs.weight";
    v.type = GgmlType::kF32;
    v.dims = {std::uint64_t(t.size(0))};
    v.data = std::span<const std::byte>(static_cast<const std::byte*>(t.data_ptr()), t.nbytes());
    out.tensors.push_back(std::move(v));
  }
  for (const auto& [hf, tensor] : model.named_weights()) {
    const WeightType type = weight_type_of(tensor);
    at::Tensor t = tensor;
    if (const std::int64_t heads = permuted_heads(c, hf)) t = t.index_select(0, head_permutation(t.size(0), heads, true));
    t = t.contiguous();
    out.keep.push_back(t);
    GgufTensorView v;
    v.name = gguf_name(hf);
    v.type = ggml_type_of(type);
    v.dims = t.dim() == 1 ? std::vector<std::uint64_t>{std::uint64_t(t.size(0))}
                          : std::vector<std::uint64_t>{std::uint64_t(in_features(t)), std::uint64_t(t.size(0))};
    v.data = std::span<const std::byte>(static_cast<const std::byte*>(t.data_ptr()), t.nbytes());
    out.tensors.push_back(std::move(v));
  }
  return out;
}

void write_model_gguf(const fs::path& path, const Model& model, const Tokenizer* tokenizer, const GgufModelInfo& info) {
  const GgufModelContents contents = gguf_model_contents(model, tokenizer, info);
  write_gguf(path, contents.metadata, contents.tensors);
}

}  // namespace fedge::inference

// ---------------------------------------------------------------- fedge quantize

namespace fedge::inference {
namespace {

// tokenizer_config.json's chat_template (a string), or "".
std::string hf_chat_template(const fs::path& dir) {
  std::ifstream in(dir / "tokenizer_config.json", std::ios::binary);
  if (!in) return {};
  const auto cfg = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!cfg.is_object() || !cfg.contains("chat_template") || !cfg["chat_template"].is_string()) return {};
  return cfg["chat_template"].get<std::string>();
}

}  // namespace

double logits_relative_l2(Model& a, Model& b, const Tokenizer& tokenizer, const std::string& prompt) {
  const std::vector<TokenId> ids = tokenizer.encode(prompt);
  if (ids.empty()) throw Error(ErrorKind::kInvalidInput, "--compare: the prompt encodes to no tokens");
  const int n = int(ids.size());
  auto logits = [&](Model& m) {
    KVCache cache = m.make_cache(1, n);
    return m.forward(ids, {}, 1, n, cache, /*all_logits=*/true);
  };
  const std::vector<float> got = logits(a), want = logits(b);
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return norm > 0 ? std::sqrt(err / norm) : std::sqrt(err);
}

namespace {

// Loads the file just written and the source as stored, and measures how far
// the prompt's logits moved.
void compare_with_source(const QuantizeCommand& cmd, QuantizeResult& result) {
  auto written = load_model_spec(cmd.out.string());
  auto source = load_model_spec(cmd.model);
  result.compare_relative_l2 = logits_relative_l2(written.model, source.model, source.tokenizer, cmd.compare_prompt);
  result.compare_tokens = int(source.tokenizer.encode(cmd.compare_prompt).size());
}

}  // namespace

QuantizeResult run_quantize(const QuantizeCommand& cmd) {
  if (cmd.out.empty()) throw Error(ErrorKind::kInvalidInput, "--out: name the GGUF file to write");
  const auto start = std::chrono::steady_clock::now();
  if (cmd.q4_k_m && cmd.type != WeightType::kQ4_K)
    throw Error(ErrorKind::kInvalidInput, "quantize: the Q4_K_M mix is a mix of q4_k and q6_k, not of " +
                                              std::string(weight_type_name(cmd.type)));
  LoadOptions options;
  options.weights = cmd.type;
  options.embeddings = cmd.keep;
  options.q4_k_m = cmd.q4_k_m;
  spdlog::info("quantize: loading {} (projections {}, embedding and head {})", cmd.model, weight_type_name(cmd.type),
               weight_type_name(options.embedding_type()));
  auto loaded = load_model_spec(cmd.model, options);
  std::error_code ec;
  const bool dir = fs::is_directory(cmd.model, ec);
  GgufModelInfo info;
  info.q4_k_m = cmd.q4_k_m;
  info.name = !cmd.name.empty() ? cmd.name : dir ? fs::path(cmd.model).lexically_normal().filename().string() : cmd.model;
  if (info.name.empty()) info.name = fs::absolute(cmd.model).lexically_normal().parent_path().filename().string();
  if (dir) info.chat_template = hf_chat_template(cmd.model);
  else if (is_gguf_file(cmd.model)) info.chat_template = gguf_chat_template(GgufFile::open(cmd.model));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("quantize: loaded {} layers, {} parameters in {:.1f} s; writing {}", loaded.model.config().num_layers,
               loaded.model.config().num_parameters(), load_s, cmd.out.string());
  const GgufModelContents contents = gguf_model_contents(loaded.model, &loaded.tokenizer, info);
  std::map<std::string, int> by_type;
  std::uint64_t bytes = 0;
  for (const auto& t : contents.tensors) {
    ++by_type[std::string(ggml_type_name(t.type))];
    bytes += t.data.size();
  }
  for (const auto& [type, n] : by_type) spdlog::info("quantize: {} tensors {}", n, type);
  write_gguf(cmd.out, contents.metadata, contents.tensors);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("quantize: wrote {} ({:.1f} MB of tensor data, {} tensors) in {:.1f} s", cmd.out.string(), bytes / 1e6,
               contents.tensors.size(), total_s);
  QuantizeResult result;
  if (!cmd.compare_prompt.empty()) compare_with_source(cmd, result);
  return result;
}

}  // namespace fedge::inference
