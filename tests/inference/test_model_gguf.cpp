// GGUF model files: an HF checkpoint written as GGUF loads back to the same
// blocks and logits, llama's Q/K rows are stored in llama.cpp's order (and
// qwen2's are not), a file rewrites to the same bytes, the tokenizer travels
// in the file, and broken model files are refused naming what is wrong.
// ATen (through glog) defines CHECK too; Catch must come after it.
#include "model_helpers.h"  // before Catch2
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/gguf.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/model_gguf.h"
#include "test_support.h"

using namespace fedge;
using namespace fedge::inference;
namespace fs = std::filesystem;
using test::prompt_logits;
using test::relative_l2;

namespace {

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

// Every weight of `a` equals `b`'s: same type, shape and bytes.
void require_same_weights(const Model& a, const Model& b) {
  const auto wa = a.named_weights(), wb = b.named_weights();
  REQUIRE(wa.size() == wb.size());
  for (std::size_t i = 0; i < wa.size(); ++i) {
    INFO(wa[i].first);
    REQUIRE(wa[i].first == wb[i].first);
    REQUIRE(weight_type_of(wa[i].second) == weight_type_of(wb[i].second));
    REQUIRE(wa[i].second.sizes() == wb[i].second.sizes());
    const at::Tensor x = wa[i].second.contiguous(), y = wb[i].second.contiguous();
    REQUIRE(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
  }
}

test::Shape llama_shape() {
  test::Shape s;
  s.hidden = 64, s.inter = 96, s.layers = 2, s.heads = 4, s.kv_heads = 2, s.vocab = 50, s.tied = false;
  return s;
}

test::Shape qwen2_shape() {
  test::Shape s = llama_shape();
  s.bias = true, s.tied = true;
  return s;
}

const std::vector<TokenId> kPrompt = {1, 7, 3, 9, 22, 41, 5, 18};

// Whether `address` lies in a mapping of a file whose name ends with `file`.
bool mapped_from(const void* address, const std::string& file) {
  std::ifstream maps("/proc/self/maps");
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi) return line.ends_with(file);
  }
  return false;
}

using Metadata = std::vector<std::pair<std::string, GgufValue>>;

// The contents of `model` written as GGUF after `edit` changes them.
fs::path write_edited(const Model& model, const std::string& name,
                      const std::function<void(GgufModelContents&)>& edit) {
  GgufModelContents c = gguf_model_contents(model, nullptr, {"test", ""});
  edit(c);
  const fs::path path = test::fresh_dir("gguf_edit") / (name + ".gguf");
  write_gguf(path, c.metadata, c.tensors);
  return path;
}

}  // namespace

TEST_CASE("model gguf: an HF checkpoint written as Q8_0 GGUF loads back to the same blocks and logits") {
  for (const test::Shape& shape : {llama_shape(), qwen2_shape()}) {
    INFO((shape.bias ? "qwen2" : "llama"));
    const fs::path dir = test::fresh_dir("gguf_hf");
    test::write_checkpoint(dir, shape, 5);
    Model q8 = Model::load(dir, {WeightType::kQ8_0});
    const fs::path file = dir / "model.gguf";
    write_model_gguf(file, q8, nullptr, {"test", ""});
    REQUIRE(is_gguf_file(file));
    CHECK_FALSE(is_gguf_file(dir / "config.json"));
    CHECK_THROWS_WITH(Model::load(dir / "absent.gguf"), Catch::Contains("absent.gguf"));

    Model back = Model::load(file);  // as stored: Q8_0
    CHECK(back.weight_type() == WeightType::kQ8_0);
    CHECK(back.config().model_type == q8.config().model_type);
    CHECK(back.config().tie_word_embeddings == shape.tied);
    CHECK(back.config().attention_bias == shape.bias);
    require_same_weights(back, q8);
    const auto want = prompt_logits(q8, kPrompt), got = prompt_logits(back, kPrompt);
    CHECK(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);

    // An f32 file quantized on load gives the blocks quantizing the HF weights gives.
    Model f32 = Model::load(dir);
    write_model_gguf(dir / "f32.gguf", f32, nullptr, {"test", ""});
    require_same_weights(Model::load(dir / "f32.gguf", {WeightType::kQ8_0}), q8);
    require_same_weights(Model::load(dir / "f32.gguf"), f32);
  }
}

TEST_CASE("model gguf: llama's Q and K rows are stored in llama.cpp's rope order, qwen2's as they are") {
  for (const test::Shape& shape : {llama_shape(), qwen2_shape()}) {
    const bool llama = !shape.bias;
    INFO((llama ? "llama" : "qwen2"));
    const fs::path dir = test::fresh_dir("gguf_perm");
    test::write_checkpoint(dir, shape, 9);
    Model f32 = Model::load(dir);
    write_model_gguf(dir / "m.gguf", f32, nullptr, {"test", ""});
    const GgufFile file = GgufFile::open(dir / "m.gguf");
    for (const auto& [gguf, heads, hf] :
         {std::tuple{"blk.1.attn_q.weight", shape.heads, f32.layer(1).wq},
          std::tuple{"blk.1.attn_k.weight", shape.kv_heads, f32.layer(1).wk}}) {
      const auto bytes = file.bytes(file.at(gguf));
      const auto* stored = reinterpret_cast<const float*>(bytes.data());
      const int in = shape.hidden, d = shape.head_dim();
      // convert_hf_to_gguf.py's permute: within a head, GGUF row 2i + j is HF row j * d/2 + i.
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < d / 2; ++i)
          for (int j = 0; j < 2; ++j) {
            const int gguf_row = h * d + 2 * i + j, hf_row = llama ? h * d + j * (d / 2) + i : gguf_row;
            REQUIRE(std::memcmp(stored + gguf_row * in, hf.data_ptr<float>() + hf_row * in, in * 4) == 0);
          }
    }
    // V is never permuted, and loading undoes the permutation exactly.
    require_same_weights(Model::load(dir / "m.gguf"), f32);
  }
}

TEST_CASE("model gguf: a file fedge wrote reads back and rewrites to the same bytes, tokenizer included") {
  const fs::path dir = test::fresh_dir("gguf_bytes");
  Model q4 = Model::random(ModelConfig::tiny(), 3, {WeightType::kQ4_0, WeightType::kQ8_0});
  const Tokenizer tok = Tokenizer::byte_level_tiny();
  write_model_gguf(dir / "a.gguf", q4, &tok, {"tiny", "{{ messages }}"});
  write_model_gguf(dir / "again.gguf", q4, &tok, {"tiny", "{{ messages }}"});
  const auto first = read_bytes(dir / "a.gguf");
  CHECK((first == read_bytes(dir / "again.gguf")));  // deterministic

  auto loaded = load_model_spec((dir / "a.gguf").string());
  write_model_gguf(dir / "b.gguf", loaded.model, &loaded.tokenizer, {"tiny", "{{ messages }}"});
  CHECK((first == read_bytes(dir / "b.gguf")));
  require_same_weights(loaded.model, q4);

  const GgufFile file = GgufFile::open(dir / "a.gguf");
  CHECK(file.version() == 3);
  CHECK(file.metadata_string("general.architecture") == "llama");
  CHECK(file.metadata_uint("general.file_type") == 2);  // LlamaFileType MOSTLY_Q4_0
  CHECK(file.metadata_uint("general.quantization_version") == 2);
  CHECK(file.metadata_uint("general.alignment") == 32);
  CHECK(file.metadata_string("tokenizer.ggml.model") == "gpt2");
  CHECK(gguf_chat_template(file) == "{{ messages }}");
  CHECK(loaded.tokenizer.chat_template() == "{{ messages }}");  // read back into the tokenizer, rendered for chat
  CHECK(file.at("token_embd.weight").type == GgmlType::kQ8_0);
  CHECK(file.at("blk.0.ffn_down.weight").type == GgmlType::kF16);  // 688 is not whole blocks
  CHECK(file.find("output.weight") == nullptr);                    // tied

  const std::string text = "Hello <|user|> wörld";
  CHECK(loaded.tokenizer.encode(text) == tok.encode(text));
  CHECK(loaded.tokenizer.bos_id() == tok.bos_id());
  CHECK(loaded.tokenizer.eos_ids() == tok.eos_ids());
  CHECK(loaded.tokenizer.decode(tok.encode(text)) == tok.decode(tok.encode(text)));
}

TEST_CASE("model gguf: a gpt2 vocabulary without the embedded tokenizer.json builds the same tokenizer") {
  const Tokenizer tok = Tokenizer::byte_level_tiny();
  Model m = Model::random(ModelConfig::tiny(), 1);
  GgufModelContents c = gguf_model_contents(m, &tok, {"tiny", ""});
  std::erase_if(c.metadata, [](const auto& kv) { return kv.first == "tokenizer.huggingface.json"; });
  const Tokenizer back = tokenizer_from_gguf(GgufFile::from_bytes(gguf_bytes(c.metadata, c.tensors), "llama.cpp-like"));
  for (const std::string text : {"Hello, world!", " two  spaces\nand a line", "<|bos|>x<|eos|>", "ünïcödé 123"}) {
    INFO(text);
    CHECK(back.encode(text) == tok.encode(text));
    CHECK(back.decode(tok.encode(text), false) == tok.decode(tok.encode(text), false));
  }
  CHECK(back.bos_id() == tok.bos_id());
  CHECK(back.vocab_size() == tok.vocab_size());

  // A vocabulary fedge cannot build is refused naming the key.
  for (auto& [key, value] : c.metadata)
    if (key == "tokenizer.ggml.model") value = std::string("llama");
  CHECK_THROWS_WITH(tokenizer_from_gguf(GgufFile::from_bytes(gguf_bytes(c.metadata, c.tensors), "spm")),
                    Catch::Contains("tokenizer.ggml.model 'llama'"));
}

// The random preset's logits are nearly uniform, the hard case for 32-weight
// blocks; a trained model's residual stream is large next to each layer's
// update. Scaling the embedding (tied to the head) to std 1 gives that shape.
TEST_CASE("model gguf: Q8_0 logits from the GGUF file are within 1% relative L2 of f32 on a trained-shaped model") {
  const fs::path dir = test::fresh_dir("gguf_q8");
  Model f32 = Model::random(ModelConfig::tiny(), 7);
  {
    at::NoGradGuard guard;
    f32.embed_tokens().mul_(50.0);
  }
  write_model_gguf(dir / "f32.gguf", f32, nullptr, {"tiny", ""});
  Model from_f32 = Model::load(dir / "f32.gguf", {WeightType::kQ8_0});
  write_model_gguf(dir / "q8.gguf", from_f32, nullptr, {"tiny", ""});
  Model q8 = Model::load(dir / "q8.gguf");
  const std::vector<TokenId> prompt = {256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 65};
  const double err = relative_l2(prompt_logits(q8, prompt), prompt_logits(f32, prompt));
  INFO("q8_0 relative L2 " << err);
  CHECK(err < 0.01);
  CHECK(err > 0);
}

TEST_CASE("model gguf: tensors of the in-memory type point into the mapped file, and a merge replaces them") {
  const fs::path dir = test::fresh_dir("gguf_map");
  Model f32 = Model::random(ModelConfig::tiny(), 2);
  write_model_gguf(dir / "m.gguf", f32, nullptr, {"tiny", ""});
  Model m = Model::load(dir / "m.gguf");
  // V and the MLP point into the file's mapping; llama's Q and K are permuted copies.
  CHECK(mapped_from(m.layer(0).wv.data_ptr(), "m.gguf"));
  CHECK(mapped_from(m.layer(3).wdown.data_ptr(), "m.gguf"));
  CHECK(mapped_from(m.embed_tokens().data_ptr(), "m.gguf"));
  CHECK_FALSE(mapped_from(m.layer(0).wq.data_ptr(), "m.gguf"));
  CHECK_FALSE(mapped_from(Model::load(dir / "m.gguf", {WeightType::kQ8_0}).layer(0).wv.data_ptr(), "m.gguf"));
  // The mapped file is read-only: a merge must replace the tensors, not write them.
  LoraConfig lc;
  lc.r = 2;
  lc.target_modules = {"v_proj"};
  LoraAdapter a = LoraAdapter::create(m.config(), lc, 1);
  for (at::Tensor p : a.parameters()) p.detach().fill_(0.01);
  m.add_adapter("a", std::move(a));
  const at::Tensor before = m.layer(0).wv.clone();
  m.merge_adapter("a");
  CHECK_FALSE(at::equal(m.layer(0).wv, before));
  m.unmerge_adapter();
  CHECK(at::allclose(m.layer(0).wv, before, 0, 1e-6));
}

TEST_CASE("model gguf: broken model files are refused naming the tensor or key") {
  Model m = Model::random(ModelConfig::tiny(), 4);
  auto set = [](Metadata& md, const std::string& key, GgufValue v) {
    for (auto& [k, value] : md)
      if (k == key) { value = std::move(v); return; }
    md.emplace_back(key, std::move(v));
  };
  auto refused = [](const fs::path& p, const std::string& needle) {
    CHECK_THROWS_WITH(Model::load(p), Catch::Contains(needle));
  };
  refused(write_edited(m, "missing", [](GgufModelContents& c) {
            std::erase_if(c.tensors, [](const auto& t) { return t.name == "blk.2.ffn_up.weight"; });
          }),
          "tensor 'blk.2.ffn_up.weight' (model.layers.2.mlp.up_proj.weight) is missing");
  refused(write_edited(m, "shape", [&](GgufModelContents& c) {
            set(c.metadata, "llama.feed_forward_length", std::uint32_t{344});
          }),
          "tensor 'blk.0.ffn_gate.weight' has dims [256, 688], expected [256, 344]");
  refused(write_edited(m, "arch", [&](GgufModelContents& c) {
            set(c.metadata, "general.architecture", std::string("gemma"));
          }),
          "general.architecture 'gemma' is not supported");
  refused(write_edited(m, "rope", [&](GgufModelContents& c) {
            set(c.metadata, "llama.rope.scaling.type", std::string("yarn"));
          }),
          "rope.scaling.type' = 'yarn' is not supported");
  refused(write_edited(m, "heads", [&](GgufModelContents& c) {
            std::erase_if(c.metadata, [](const auto& kv) { return kv.first == "llama.attention.head_count"; });
          }),
          "metadata 'llama.attention.head_count' is missing");
  refused(write_edited(m, "huge", [&](GgufModelContents& c) {
            set(c.metadata, "llama.block_count", std::uint64_t{1} << 40);
          }),
          "'llama.block_count' = 1099511627776 is not in 1..2^30");
  refused(write_edited(m, "quant_norm", [&](GgufModelContents& c) {
            for (auto& t : c.tensors)
              if (t.name == "output_norm.weight") t.type = GgmlType::kQ8_0, t.dims = {256}, t.data = t.data.first(8 * 34);
          }),
          "a norm or bias must be F32, F16 or BF16");
  ModelConfig yarn = ModelConfig::tiny();
  yarn.rope_scaling.type = "yarn";
  CHECK_THROWS_WITH(gguf_model_contents(Model::random(yarn, 1), nullptr, {"x", ""}),
                    Catch::Contains("rope_scaling 'yarn' cannot be written"));
}

TEST_CASE("model gguf: llama3 rope scaling travels as llama.cpp's rope_freqs.weight") {
  test::Shape shape = llama_shape();
  shape.rope = "llama3";  // factor 8, low 1, high 4, original context 16 (test_support.h)
  const fs::path dir = test::fresh_dir("gguf_llama3");
  const test::Weights weights = test::write_checkpoint(dir, shape, 13);
  Model hf = Model::load(dir);
  const fs::path file = dir / "llama3.gguf";
  write_model_gguf(file, hf, nullptr, {"test", ""});

  // The factors llama.cpp's converter computes from config.json's rope_scaling.
  const GgufFile gguf = GgufFile::open(file);
  const GgufTensorInfo* info = gguf.find("rope_freqs.weight");
  REQUIRE(info);
  CHECK(info->type == GgmlType::kF32);
  const int half = shape.head_dim() / 2;
  REQUIRE(info->dims == std::vector<std::uint64_t>{std::uint64_t(half)});
  std::vector<float> stored(half);
  std::memcpy(stored.data(), gguf.bytes(*info).data(), half * sizeof(float));
  for (int i = 0; i < half; ++i) {
    const double freq = std::pow(shape.theta, -2.0 * i / shape.head_dim()), wavelen = 2 * M_PI / freq;
    const double low_wavelen = 16.0 / 1.0, high_wavelen = 16.0 / 4.0;
    double want = 1.0;
    if (wavelen > low_wavelen) want = 8.0;
    else if (wavelen >= high_wavelen) {
      const double smooth = (16.0 / wavelen - 1.0) / (4.0 - 1.0);
      want = 1.0 / ((1.0 - smooth) / 8.0 + smooth);
    }
    CHECK(stored[i] == static_cast<float>(want));
  }

  // Read back, the model positions tokens as the Hugging Face folder does,
  // past the original context where the scaling matters.
  Model back = Model::load(file);
  CHECK(back.config().rope_scaling.type == "freq_factors");
  std::vector<TokenId> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back((i * 7 + 3) % shape.vocab);
  const std::vector<float> got = prompt_logits(back, prompt), want = prompt_logits(hf, prompt);
  CHECK(relative_l2(got, want) < 1e-5);
  const std::vector<double> reference = test::reference_logits(weights, shape, {prompt.begin(), prompt.end()});
  CHECK(test::rel_error(got, reference) < 1e-4);

  // Written again it is the same file; a Hugging Face folder cannot say it.
  const fs::path again = dir / "again.gguf";
  write_model_gguf(again, back, nullptr, {"test", ""});
  CHECK((read_bytes(again) == read_bytes(file)));
  CHECK_THROWS_WITH(save_model_dir(back, dir / "hf-again", nullptr), Catch::Contains("rope_freqs.weight") &&
                                                                  Catch::Contains("GGUF"));

  // Hostile factor tensors are refused naming the tensor.
  auto edited_factors = [&](const std::string& name, std::vector<float> factors, GgmlType type) {
    return write_edited(hf, name, [&](GgufModelContents& c) {
      for (auto& t : c.tensors)
        if (t.name == "rope_freqs.weight") {
          t.type = type;
          t.dims = {std::uint64_t(type == GgmlType::kF16 ? factors.size() * 2 : factors.size())};
          t.data = std::span<const std::byte>(reinterpret_cast<const std::byte*>(factors.data()),
                                              factors.size() * sizeof(float));
        }
    });
  };
  std::vector<float> ok(stored);
  CHECK_THROWS_WITH(Model::load(edited_factors("short", {ok.begin(), ok.end() - 1}, GgmlType::kF32)),
                    Catch::Contains("rope_freqs.weight") && Catch::Contains("needs " + std::to_string(half)));
  std::vector<float> negative = ok;
  negative[1] = -2.0F;
  CHECK_THROWS_WITH(Model::load(edited_factors("negative", negative, GgmlType::kF32)),
                    Catch::Contains("positive finite"));
  std::vector<float> nan = ok;
  nan[0] = std::nanf("");
  CHECK_THROWS_WITH(Model::load(edited_factors("nan", nan, GgmlType::kF32)), Catch::Contains("positive finite"));
  CHECK_THROWS_WITH(Model::load(edited_factors("f16", ok, GgmlType::kF16)),
                    Catch::Contains("rope_freqs.weight") && Catch::Contains("F32"));
}
