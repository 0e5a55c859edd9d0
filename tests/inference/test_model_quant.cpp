// The model over quantized (Q8_0, Q4_0) and f16 weights: which tensors take
// which type, logits close to f32, prompts equal to step-by-step decoding,
// the training pass over the packed base, and what a packed model refuses.
// ATen (through glog) defines CHECK too; Catch must come after it.
#include "model_helpers.h"  // before Catch2
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/inference/model.h"

using namespace fedge;
using namespace fedge::inference;
using test::prompt_logits;
using test::relative_l2;

namespace {

// A model whose weights are large enough that quantization error shows (the
// random preset's std 0.02 makes near-uniform logits).
Model random_model(WeightType type, std::optional<WeightType> embeddings = {}, int intermediate = 688) {
  ModelConfig c = ModelConfig::tiny();
  c.intermediate_size = intermediate;
  LoadOptions options;
  options.weights = type;
  options.embeddings = embeddings;
  return Model::random(c, 11, options);
}

const std::vector<TokenId> kPrompt = {256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 65};

}  // namespace

TEST_CASE("quantized model: every projection takes the asked type, ragged rows fall back to f16") {
  Model q8 = random_model(WeightType::kQ8_0);
  CHECK(q8.weight_type() == WeightType::kQ8_0);
  const LayerWeights& w = q8.layer(0);
  CHECK(weight_type_of(w.wq) == WeightType::kQ8_0);
  CHECK(w.wq.sizes() == at::IntArrayRef({256, 256 / 32, 34}));
  CHECK(in_features(w.wq) == 256);
  CHECK(weight_type_of(w.wgate) == WeightType::kQ8_0);
  // down_proj reads the 688-wide MLP: 688 is not a whole number of 32-blocks.
  CHECK(weight_type_of(w.wdown) == WeightType::kF16);
  CHECK(weight_type_of(w.attn_norm) == WeightType::kF32);
  CHECK(weight_type_of(q8.embed_tokens()) == WeightType::kQ8_0);

  Model q4_f16_table = random_model(WeightType::kQ4_0, WeightType::kF16);
  CHECK(weight_type_of(q4_f16_table.layer(1).wup) == WeightType::kQ4_0);
  CHECK(q4_f16_table.layer(1).wup.size(2) == 18);
  CHECK(weight_type_of(q4_f16_table.embed_tokens()) == WeightType::kF16);

  // Q8_0 holds 34 bytes per 32 weights, Q4_0 18: the bytes read per token shrink.
  Model f32 = random_model(WeightType::kF32);
  CHECK(q8.weight_bytes() < f32.weight_bytes() * 0.35);
  CHECK(q4_f16_table.weight_bytes() < q8.weight_bytes());

  CHECK(parse_weight_type("q4_0") == WeightType::kQ4_0);
  CHECK(parse_weight_type("q4_k") == WeightType::kQ4_K);
  CHECK_THROWS_WITH(parse_weight_type("q4_1"), Catch::Contains("q8_0, q4_0, q5_0, q4_k, q6_k"));
}

// Random Gaussian weights are the hard case for 32-weight blocks (the block's
// largest value sets the step); the pretrained base's bounds (1% and 10% in
// perplexity) are checked on a trained model in tests/training.
TEST_CASE("quantized model: logits within 3% (Q8_0) and 30% (Q4_0) relative L2 of the same random weights in f32") {
  // One set of weights: the f32 model, and the same values quantized on load.
  Model f32 = random_model(WeightType::kF32);
  const std::vector<float> want = prompt_logits(f32, kPrompt);
  Model q8 = random_model(WeightType::kQ8_0);
  Model q4 = random_model(WeightType::kQ4_0);
  Model f16 = random_model(WeightType::kF16);
  const double e8 = relative_l2(prompt_logits(q8, kPrompt), want);
  const double e4 = relative_l2(prompt_logits(q4, kPrompt), want);
  const double e16 = relative_l2(prompt_logits(f16, kPrompt), want);
  INFO("q8_0 " << e8 << ", q4_0 " << e4 << ", f16 " << e16);
  CHECK(e8 < 0.03);
  CHECK(e4 < 0.30);
  CHECK(e16 < 0.001);
  CHECK(e8 > e16);  // quantization is not a no-op
  CHECK(e4 > e8);
}

TEST_CASE("quantized model: a prompt in one call gives the bits of decoding it token by token") {
  // The quantized products are exact per row whatever the row count, so the
  // prompt path (many rows) and decoding (one row) agree bit for bit (an MLP
  // of 704 = 22 blocks: no f16 fallback, whose BLAS product is not row-exact).
  for (WeightType type : {WeightType::kQ8_0, WeightType::kQ4_0}) {
    INFO(weight_type_name(type));
    Model m = random_model(type, WeightType::kQ8_0, 704);
    REQUIRE(weight_type_of(m.layer(0).wdown) == type);
    const std::vector<float> all = prompt_logits(m, kPrompt);
    KVCache cache = m.make_cache(1, 64);
    const int V = m.config().vocab_size;
    for (std::size_t t = 0; t < kPrompt.size(); ++t) {
      const std::vector<float> step = m.forward(std::vector<TokenId>{kPrompt[t]}, {}, 1, 1, cache);
      REQUIRE(std::memcmp(step.data(), all.data() + t * V, V * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("quantized model: the training pass over the packed base matches inference, and LoRA gets gradients") {
  Model q4 = random_model(WeightType::kQ4_0);
  const std::vector<float> want = prompt_logits(q4, kPrompt);
  at::Tensor tokens = at::tensor(std::vector<int64_t>(kPrompt.begin(), kPrompt.end()), at::kLong).view({1, -1});
  LoraConfig lc;
  lc.r = 4;
  lc.target_modules = {"q_proj", "v_proj", "down_proj"};
  LoraAdapter adapter = LoraAdapter::create(q4.config(), lc, 3);
  q4.add_adapter("a", std::move(adapter));
  q4.set_active_adapter("a");
  for (at::Tensor p : q4.adapter("a")->parameters()) p.requires_grad_(true);  // as the trainer does
  at::Tensor logits = q4.forward_train(tokens);
  // B starts at zero, so the adapter adds nothing yet; the training pass widens
  // the weights to f32 while inference quantizes activations too.
  std::vector<float> got(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
  CHECK(relative_l2(got, want) < 0.02);
  logits.logsumexp(-1).sum().backward();
  for (int l = 0; l < q4.config().num_layers; ++l) {
    for (LoraTarget t : {LoraTarget::kV, LoraTarget::kDown}) {  // kDown: over the f16 fallback
      const at::Tensor& b = q4.adapter("a")->b(l, t);
      REQUIRE(b.grad().defined());
      CHECK(b.grad().abs().sum().item<double>() > 0);
    }
  }
  CHECK_FALSE(q4.layer(0).wq.requires_grad());
}

TEST_CASE("quantized model: merging an adapter and saving as safetensors are refused with the reason") {
  Model q8 = random_model(WeightType::kQ8_0);
  LoraConfig lc;
  lc.r = 2;
  q8.add_adapter("a", LoraAdapter::create(q8.config(), lc, 1));
  CHECK_THROWS_WITH(q8.merge_adapter("a"), Catch::Contains("q8_0"));
  CHECK_THROWS_WITH(q8.save(std::filesystem::temp_directory_path() / "fedge_q8_save_refused"),
                    Catch::Contains("GGUF"));
}
