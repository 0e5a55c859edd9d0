// GGUF files with Q5_0 and the k-quants Q4_K/Q6_K, as llama.cpp's quantizer
// writes them: a file of mixed types (Q4_K_M's layout: Q4_K projections, Q6_K
// for attn_v, ffn_down and the table, fallbacks where a row is not whole
// super-blocks) loads with each tensor in its own type, gives logits close to
// f32, and rewrites to the same bytes.
// ATen (through glog) defines CHECK too; Catch must come after it.
#include "model_helpers.h"  // before Catch2
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

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

const std::vector<TokenId> kPrompt = {256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 65};

// The tiny preset with the embedding (tied to the head) scaled to std 1, so
// its logits are not nearly uniform (a trained model's shape; see
// test_model_gguf.cpp).
Model trained_shaped_tiny() {
  Model m = Model::random(ModelConfig::tiny(), 7);
  at::NoGradGuard guard;
  m.embed_tokens().mul_(50.0);
  return m;
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

WeightType type_of(const Model& m, const std::string& name) {
  for (const auto& [n, w] : m.named_weights())
    if (n == name) return weight_type_of(w);
  FAIL("no weight " << name);
  return WeightType::kF32;
}

}  // namespace

TEST_CASE("model gguf: Q5_0 Q4_K and Q6_K files load back to the same blocks and logits near f32") {
  const fs::path dir = test::fresh_dir("gguf_kquants");
  Model f32 = trained_shaped_tiny();
  write_model_gguf(dir / "f32.gguf", f32, nullptr, {"tiny", ""});
  const auto want = prompt_logits(f32, kPrompt);
  struct Case {
    WeightType type;
    double max_error;
  };
  double q4_0_error = 0;
  {
    Model q4 = Model::load(dir / "f32.gguf", {WeightType::kQ4_0});
    q4_0_error = relative_l2(prompt_logits(q4, kPrompt), want);
  }
  for (const Case& c : {Case{WeightType::kQ5_0, 0.05}, Case{WeightType::kQ4_K, 0.08}, Case{WeightType::kQ6_K, 0.02}}) {
    INFO(weight_type_name(c.type));
    Model q = Model::load(dir / "f32.gguf", {c.type});
    // tiny's projections from the 256-wide stream are whole super-blocks; the
    // 688-wide down projection is not even whole 32-weight blocks: f16.
    CHECK(type_of(q, "model.layers.0.self_attn.q_proj.weight") == c.type);
    CHECK(type_of(q, "model.layers.0.mlp.down_proj.weight") == WeightType::kF16);
    const fs::path file = dir / (std::string(weight_type_name(c.type)) + ".gguf");
    write_model_gguf(file, q, nullptr, {"tiny", ""});
    Model back = Model::load(file);
    CHECK(back.weight_type() == c.type);
    const auto got = prompt_logits(back, kPrompt);
    const auto held = prompt_logits(q, kPrompt);
    CHECK(std::memcmp(got.data(), held.data(), got.size() * sizeof(float)) == 0);
    const double err = relative_l2(got, want);
    INFO("relative L2 " << err << " (q4_0: " << q4_0_error << ")");
    CHECK(err < c.max_error);
    if (c.type == WeightType::kQ4_K) CHECK(err < q4_0_error);
    // Written again from what it loaded: the same bytes.
    write_model_gguf(dir / "again.gguf", back, nullptr, {"tiny", ""});
    CHECK(file_bytes(dir / "again.gguf") == file_bytes(file));
  }
}

TEST_CASE("model gguf: a file of mixed block types as llama.cpp's Q4_K_M writes loads each tensor in its own type") {
  const fs::path dir = test::fresh_dir("gguf_q4_k_m");
  Model f32 = trained_shaped_tiny();
  write_model_gguf(dir / "f32.gguf", f32, nullptr, {"tiny", ""});
  Model q4_k = Model::load(dir / "f32.gguf", {WeightType::kQ4_K});
  Model q6_k = Model::load(dir / "f32.gguf", {WeightType::kQ6_K});
  GgufModelContents mixed = gguf_model_contents(q4_k, nullptr, {"tiny", ""});
  const GgufModelContents six = gguf_model_contents(q6_k, nullptr, {"tiny", ""});
  // Q4_K_M keeps attn_v (and half the ffn_down, here the first layer's) and
  // the token table in Q6_K.
  for (std::size_t i = 0; i < mixed.tensors.size(); ++i) {
    const std::string& name = mixed.tensors[i].name;
    if (name.ends_with("attn_v.weight") || name == "token_embd.weight") mixed.tensors[i] = six.tensors[i];
  }
  const fs::path file = dir / "q4_k_m.gguf";
  write_gguf(file, mixed.metadata, mixed.tensors);

  Model m = Model::load(file);
  CHECK(type_of(m, "model.layers.0.self_attn.q_proj.weight") == WeightType::kQ4_K);
  CHECK(type_of(m, "model.layers.1.self_attn.v_proj.weight") == WeightType::kQ6_K);
  CHECK(type_of(m, "model.embed_tokens.weight") == WeightType::kQ6_K);  // 261 rows of 256: whole super-blocks
  const double err = relative_l2(prompt_logits(m, kPrompt), prompt_logits(f32, kPrompt));
  const double all_q4_k = relative_l2(prompt_logits(q4_k, kPrompt), prompt_logits(f32, kPrompt));
  INFO("relative L2: q4_k_m " << err << ", q4_k " << all_q4_k);
  CHECK(err < 0.08);
  // Generation runs over the mixed types (q/k in Q4_K and v in Q6_K do not share one product group).
  SamplingOptions greedy;
  greedy.max_tokens = 4;
  greedy.stop_ids = {};
  const auto out = generate(m, {{256, 72, 101}}, greedy);
  REQUIRE(out.size() == 1);
  CHECK(out[0].prompt_tokens == 3);
  CHECK(out[0].decoded_steps >= 1);
  // Asked for another type on load, every projection converts.
  Model as_q8 = Model::load(file, {WeightType::kQ8_0});
  CHECK(type_of(as_q8, "model.layers.1.self_attn.v_proj.weight") == WeightType::kQ8_0);
}

TEST_CASE("model gguf: fedge quantize --type q4_k_m gives llama.cpp's Q4_K_M choice of Q6_K tensors") {
  const fs::path dir = test::fresh_dir("gguf_q4_k_m_write");
  QuantizeCommand cmd;
  cmd.model = "tiny";  // 4 layers: llama.cpp's use_more_bits picks layers 2 (every third after the first eighth) and 3 (the last eighth)
  cmd.out = dir / "tiny.gguf";
  cmd.type = WeightType::kQ4_K;
  cmd.q4_k_m = true;
  run_quantize(cmd);
  const GgufFile f = GgufFile::open(cmd.out);
  CHECK(f.metadata_uint("general.file_type") == 15);  // MOSTLY_Q4_K_M
  const auto type_of_tensor = [&](const std::string& name) {
    const GgufTensorInfo* t = f.find(name);
    REQUIRE(t);
    return t->type;
  };
  CHECK(type_of_tensor("token_embd.weight") == GgmlType::kQ6_K);  // tied: the table is the output
  CHECK(type_of_tensor("blk.0.attn_v.weight") == GgmlType::kQ4_K);
  CHECK(type_of_tensor("blk.1.attn_v.weight") == GgmlType::kQ4_K);
  CHECK(type_of_tensor("blk.2.attn_v.weight") == GgmlType::kQ6_K);
  CHECK(type_of_tensor("blk.3.attn_v.weight") == GgmlType::kQ6_K);
  CHECK(type_of_tensor("blk.2.attn_q.weight") == GgmlType::kQ4_K);
  CHECK(type_of_tensor("blk.3.ffn_down.weight") == GgmlType::kF16);  // 688 wide: no block fits
  // The mix is of q4_k only.
  cmd.type = WeightType::kQ8_0;
  CHECK_THROWS_WITH(run_quantize(cmd), Catch::Contains("Q4_K_M mix"));
  // An explicit table type wins over the mix's Q6_K.
  cmd.type = WeightType::kQ4_K;
  cmd.keep = WeightType::kQ8_0;
  run_quantize(cmd);
  CHECK(GgufFile::open(cmd.out).find("token_embd.weight")->type == GgmlType::kQ8_0);
}

TEST_CASE("model gguf: a Hugging Face checkpoint loaded as q4_k or q6_k takes llama.cpp's fallbacks for rows of 64") {
  const fs::path dir = test::fresh_dir("kquant_hf");
  test::Shape shape;
  shape.hidden = 64, shape.inter = 96, shape.layers = 1, shape.heads = 4, shape.kv_heads = 2, shape.vocab = 50;
  test::write_checkpoint(dir, shape, 3);
  // 64- and 96-wide rows are whole 32-blocks but no 256-weight super-block.
  CHECK(type_of(Model::load(dir, {WeightType::kQ4_K}), "model.layers.0.self_attn.q_proj.weight") == WeightType::kQ5_0);
  CHECK(type_of(Model::load(dir, {WeightType::kQ6_K}), "model.layers.0.mlp.down_proj.weight") == WeightType::kQ8_0);
}
