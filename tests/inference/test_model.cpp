// Model correctness against the double-precision reference, KV cache,
// batching, split execution, and loader errors.
#include <algorithm>
#include <string>

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/kernels_info.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "test_support.h"

using namespace fedge;
using namespace fedge::inference;
using fedge::test::Shape;

namespace {

const std::vector<int> kTokens = {1, 7, 42, 3, 9, 0, 33, 12, 5, 49, 18};

std::vector<float> full_logits(Model& m, const std::vector<int>& toks) {
  KVCache cache = m.make_cache(1, int(toks.size()));
  return m.forward(toks, {}, 1, int(toks.size()), cache, true);
}

ErrorKind kind_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  FAIL("no fedge::Error thrown");
  return ErrorKind::kRuntime;
}

}  // namespace

TEST_CASE("config.json parsing: families, defaults, rope scaling and errors") {
  auto j = test::config_json(Shape{});
  auto c = ModelConfig::from_json_text(j.dump(), "cfg");
  CHECK(c.head_dim == 8);
  CHECK(c.num_kv_heads == 2);
  CHECK(c.eos_token_ids == std::vector<int>{2});
  CHECK(ModelConfig::from_json_text(c.to_json_text(), "again") == c);
  j["architectures"] = {"Qwen2ForCausalLM"};
  CHECK(ModelConfig::from_json_text(j.dump(), "cfg").attention_bias);
  j["architectures"] = {"MistralForCausalLM"};
  CHECK(ModelConfig::from_json_text(j.dump(), "cfg").model_type == "mistral");
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  std::string msg;
  CHECK(kind_of([&] { ModelConfig::from_json_text(j.dump(), "cfg"); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("GPT2LMHeadModel") != std::string::npos);
  j = test::config_json(Shape{});
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  CHECK(kind_of([&] { ModelConfig::from_json_text(j.dump(), "cfg"); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("yarn") != std::string::npos);
  j = test::config_json(Shape{});
  j["num_key_value_heads"] = 3;
  CHECK(kind_of([&] { ModelConfig::from_json_text(j.dump(), "cfg"); }) == ErrorKind::kInvalidInput);
  j = test::config_json(Shape{});
  j["hidden_size"] = "big";
  CHECK(kind_of([&] { ModelConfig::from_json_text(j.dump(), "cfg"); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("hidden_size") != std::string::npos);
  CHECK(kind_of([&] { ModelConfig::from_json_text("{\"hidden", "cfg"); }) == ErrorKind::kInvalidInput);
  CHECK(kind_of([&] { ModelConfig::from_json_text("[1,2]", "cfg"); }) == ErrorKind::kInvalidInput);
  CHECK(ModelConfig::tiny().num_parameters() > 2'000'000);
  CHECK(ModelConfig::tiny().num_parameters() < 5'000'000);
}

TEST_CASE("logits match the double-precision reference across shapes and dtypes") {
  setup_torch(2);
  struct Case { Shape shape; bool sharded; };
  std::vector<Case> cases;
  Shape s;  // GQA, tied, no bias, F32
  cases.push_back({s, false});
  s = Shape{}; s.kv_heads = 4; s.tied = false; s.bias = true; s.dtype = "F16";  // MHA, untied, Qwen2 bias
  cases.push_back({s, false});
  s = Shape{}; s.kv_heads = 1; s.tied = false; s.dtype = "BF16"; s.rope = "llama3"; s.theta = 500000;
  cases.push_back({s, true});  // MQA, llama3 rope, sharded
  s = Shape{}; s.hidden = 40; s.heads = 4; s.kv_heads = 2; s.inter = 44; s.tied = false;
  cases.push_back({s, false});  // widths that are not multiples of 16 (kernel tails)
  for (const auto& [shape, sharded] : cases) {
    auto dir = test::fresh_dir("ref");
    auto w = test::write_checkpoint(dir, shape, 11, sharded);
    Model m = Model::load(dir);
    auto ref = test::reference_logits(w, shape, kTokens);
    auto got = full_logits(m, kTokens);
    INFO("dtype " << shape.dtype << " bias " << shape.bias << " kv " << shape.kv_heads);
    CHECK(test::rel_error(got, ref) < 1e-4);
    // The autograd path agrees too.
    at::Tensor toks = at::tensor(std::vector<int64_t>(kTokens.begin(), kTokens.end())).view({1, -1});
    at::Tensor lt = m.forward_train(toks).contiguous();
    std::vector<float> train(lt.data_ptr<float>(), lt.data_ptr<float>() + lt.numel());
    CHECK(test::rel_error(train, ref) < 1e-4);
    // bf16 weights in memory: close, not exact.
    Model mb = Model::load(dir, {WeightType::kBF16});
    CHECK(test::rel_error(full_logits(mb, kTokens), ref) < 3e-2);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("every kernel instruction set matches the reference, f32 and bf16 weights") {
  setup_torch(2);
  Shape s;
  s.hidden = 40; s.heads = 4; s.kv_heads = 2; s.inter = 44; s.bias = true; s.tied = false;
  auto dir = test::fresh_dir("isa");
  auto w = test::write_checkpoint(dir, s, 13);
  Model m = Model::load(dir);
  Model mb = Model::load(dir, {WeightType::kBF16});
  auto ref = test::reference_logits(w, s, kTokens);
  std::vector<float> bf16_logits;
  std::vector<int> first_greedy;
  // The greedy token after each step: the same on every path.
  auto greedy = [&](const std::vector<float>& logits) {
    std::vector<int> ids;
    const std::size_t vocab = logits.size() / kTokens.size();
    for (std::size_t t = 0; t < kTokens.size(); ++t)
      ids.push_back(int(std::max_element(logits.begin() + t * vocab, logits.begin() + (t + 1) * vocab) -
                        (logits.begin() + t * vocab)));
    return ids;
  };
  for (const std::string& isa : available_kernel_isas()) {
    REQUIRE(set_kernel_isa(isa.c_str()));
    INFO("isa " << isa);
    // Decode token by token, so every product goes through the GEMV kernels.
    KVCache cache = m.make_cache(1, 16), cache_b = mb.make_cache(1, 16);
    std::vector<float> got, gotb;
    for (int t : kTokens) {
      auto l = m.forward(std::span(&t, 1), {}, 1, 1, cache);
      got.insert(got.end(), l.begin(), l.end());
      auto lb = mb.forward(std::span(&t, 1), {}, 1, 1, cache_b);
      gotb.insert(gotb.end(), lb.begin(), lb.end());
    }
    CHECK(test::rel_error(got, ref) < 1e-4);
    CHECK(test::rel_error(gotb, ref) < 3e-2);
    if (bf16_logits.empty()) bf16_logits = gotb;
    else CHECK(test::rel_error(gotb, bf16_logits) < 1e-4);  // same bf16 weights, any ISA
    if (first_greedy.empty()) first_greedy = greedy(got);
    else CHECK(greedy(got) == first_greedy);
  }
  set_kernel_isa("auto");
  std::filesystem::remove_all(dir);
}

TEST_CASE("KV-cache decoding equals the full forward pass") {
  setup_torch(2);
  Shape s;
  auto dir = test::fresh_dir("kv");
  test::write_checkpoint(dir, s, 5);
  Model m = Model::load(dir);
  auto full = full_logits(m, kTokens);
  KVCache cache = m.make_cache(1, 32);
  const int V = s.vocab, T = int(kTokens.size());
  // Prefill 4 tokens, then one at a time.
  auto first = m.forward(std::span(kTokens.data(), 4), {}, 1, 4, cache, true);
  CHECK(test::rel_error(first, std::vector<float>(full.begin(), full.begin() + 4 * V)) < 1e-5);
  for (int t = 4; t < T; ++t) {
    auto step = m.forward(std::span(kTokens.data() + t, 1), {}, 1, 1, cache);
    CHECK(test::rel_error(step, std::vector<float>(full.begin() + t * V, full.begin() + (t + 1) * V)) < 1e-5);
  }
  CHECK(cache.length() == T);
  // A longer prompt (attention runs on the thread pool) against the autograd path.
  std::vector<int> longer;
  for (int i = 0; i < 48; ++i) longer.push_back((i * 7 + 3) % s.vocab);
  auto lf = full_logits(m, longer);
  at::Tensor toks = at::tensor(std::vector<int64_t>(longer.begin(), longer.end())).view({1, -1});
  at::Tensor lt = m.forward_train(toks).contiguous();
  CHECK(test::rel_error(lf, std::vector<float>(lt.data_ptr<float>(), lt.data_ptr<float>() + lt.numel())) < 1e-4);
  std::filesystem::remove_all(dir);
}

TEST_CASE("batched prompts with left and right padding equal one-by-one") {
  setup_torch(2);
  Shape s;
  s.bias = true;
  auto dir = test::fresh_dir("batch");
  test::write_checkpoint(dir, s, 6);
  Model m = Model::load(dir);
  const std::vector<int> a = {1, 4, 9, 16, 25, 36, 49}, b = {2, 3, 5};
  const int V = s.vocab, T = 7;
  auto la = full_logits(m, a), lb = full_logits(m, b);
  for (bool left : {true, false}) {
    std::vector<int> toks(2 * T, 0);
    std::vector<std::uint8_t> mask(2 * T, 0);
    for (int t = 0; t < T; ++t) { toks[t] = a[t]; mask[t] = 1; }
    const int off = left ? T - 3 : 0;
    for (int t = 0; t < 3; ++t) { toks[T + off + t] = b[t]; mask[T + off + t] = 1; }
    KVCache cache = m.make_cache(2, 16);
    auto last = m.forward(toks, mask, 2, T, cache);
    CHECK(test::rel_error(std::vector<float>(last.begin(), last.begin() + V),
                          std::vector<float>(la.end() - V, la.end())) < 1e-5);
    CHECK(test::rel_error(std::vector<float>(last.begin() + V, last.end()),
                          std::vector<float>(lb.end() - V, lb.end())) < 1e-5);
    // One more decode step for both rows matches the single-row runs.
    std::vector<int> next = {7, 8};
    auto step = m.forward(next, {}, 2, 1, cache);
    auto a2 = a; a2.push_back(7);
    auto b2 = b; b2.push_back(8);
    auto fa = full_logits(m, a2), fb = full_logits(m, b2);
    CHECK(test::rel_error(std::vector<float>(step.begin(), step.begin() + V), std::vector<float>(fa.end() - V, fa.end())) < 1e-5);
    CHECK(test::rel_error(std::vector<float>(step.begin() + V, step.end()), std::vector<float>(fb.end() - V, fb.end())) < 1e-5);
  }
  // The training path with a left-padded mask agrees with single rows too.
  at::Tensor toks = at::zeros({2, T}, at::kLong), mask = at::zeros({2, T}, at::kLong);
  for (int t = 0; t < T; ++t) { toks[0][t] = a[t]; mask[0][t] = 1; }
  for (int t = 0; t < 3; ++t) { toks[1][T - 3 + t] = b[t]; mask[1][T - 3 + t] = 1; }
  at::Tensor lt = m.forward_train(toks, mask).contiguous();
  std::vector<float> row1(lt[1][T - 1].data_ptr<float>(), lt[1][T - 1].data_ptr<float>() + V);
  CHECK(test::rel_error(row1, std::vector<float>(lb.end() - V, lb.end())) < 1e-5);
  std::filesystem::remove_all(dir);
}

TEST_CASE("forward_rows: rows at different positions share a pass, a row resets and the cache grows in place") {
  setup_torch(2);
  Shape s;
  s.bias = true;
  auto dir = test::fresh_dir("rows");
  test::write_checkpoint(dir, s, 8);
  Model m = Model::load(dir);
  const int V = s.vocab;
  const std::vector<int> a = {1, 4, 9, 16, 25, 36, 49}, b = {2, 3, 5}, c = {11, 13};
  auto last_of = [&](const std::vector<int>& toks) {
    auto full = full_logits(m, toks);
    return std::vector<float>(full.end() - V, full.end());
  };
  auto row = [&](const std::vector<float>& logits, int i) {
    return std::vector<float>(logits.begin() + std::size_t(i) * V, logits.begin() + std::size_t(i + 1) * V);
  };
  // Row 0 prefills a alone in a cache of one row; b joins later in row 1.
  KVCache cache = m.make_cache(1, 8);
  const std::vector<RowTokens> first = {{0, std::span<const int>(a)}};
  CHECK(test::rel_error(m.forward_rows(first, cache), last_of(a)) < 1e-5);
  cache.grow(2, 12);  // row 0's keys and values survive the move
  CHECK(cache.batch() == 2);
  CHECK(cache.capacity() == 12);
  // One pass: row 0 decodes one token at position 7, row 1 prefills b at 0..2.
  const std::vector<int> next_a = {7};
  const std::vector<RowTokens> mixed = {{0, next_a}, {1, std::span<const int>(b)}};
  auto got = m.forward_rows(mixed, cache);
  auto a2 = a;
  a2.push_back(7);
  CHECK(test::rel_error(row(got, 0), last_of(a2)) < 1e-5);
  CHECK(test::rel_error(row(got, 1), last_of(b)) < 1e-5);
  CHECK(cache.next_position(0) == 8);
  CHECK(cache.next_position(1) == 3);
  // Row 0 leaves; a new sequence takes it while row 1 decodes.
  cache.reset_row(0);
  const std::vector<int> next_b = {8};
  const std::vector<RowTokens> reuse = {{1, next_b}, {0, std::span<const int>(c)}};
  got = m.forward_rows(reuse, cache);
  auto b2 = b;
  b2.push_back(8);
  CHECK(test::rel_error(row(got, 0), last_of(b2)) < 1e-5);
  CHECK(test::rel_error(row(got, 1), last_of(c)) < 1e-5);
  // Bad input: an unknown row, a row twice, no tokens, past the capacity.
  std::string message;
  const std::vector<RowTokens> outside = {{2, next_b}};
  CHECK(kind_of([&] { m.forward_rows(outside, cache); }, &message) == ErrorKind::kInvalidInput);
  CHECK(message.find("row 2") != std::string::npos);
  const std::vector<RowTokens> twice = {{1, next_b}, {1, next_b}};
  CHECK(kind_of([&] { m.forward_rows(twice, cache); }) == ErrorKind::kInvalidInput);
  const std::vector<RowTokens> empty = {{1, std::span<const int>()}};
  CHECK(kind_of([&] { m.forward_rows(empty, cache); }) == ErrorKind::kInvalidInput);
  const std::vector<int> too_long(10, 3);
  const std::vector<RowTokens> overflow = {{1, std::span<const int>(too_long)}};
  CHECK(kind_of([&] { m.forward_rows(overflow, cache); }, &message) == ErrorKind::kInvalidInput);
  CHECK(message.find("capacity of 12") != std::string::npos);
  CHECK(cache.next_position(1) == 4);  // a refused pass reserves nothing
  CHECK(kind_of([&] { cache.grow(2, 1 << 20); }) == ErrorKind::kInvalidInput);
  std::filesystem::remove_all(dir);
}

TEST_CASE("layer-range split execution equals the full model") {
  setup_torch(2);
  Shape s;
  s.layers = 3;
  auto dir = test::fresh_dir("split");
  test::write_checkpoint(dir, s, 7);
  Model m = Model::load(dir);
  auto full = full_logits(m, kTokens);
  const int T = int(kTokens.size());
  KVCache front = m.make_cache(1, 32, 0, 1), back = m.make_cache(1, 32, 1, 3);
  // Prefill all but the last token, then decode the last one, both split.
  auto h = m.embed(std::span(kTokens.data(), T - 1));
  m.forward_layers(h, {}, 1, T - 1, 0, 1, front);
  m.forward_layers(h, {}, 1, T - 1, 1, 3, back);
  auto h2 = m.embed(std::span(kTokens.data() + T - 1, 1));
  m.forward_layers(h2, {}, 1, 1, 0, 1, front);
  m.forward_layers(h2, {}, 1, 1, 1, 3, back);
  auto lg = m.logits(h2, 1);
  CHECK(test::rel_error(lg, std::vector<float>(full.end() - s.vocab, full.end())) < 1e-5);
  CHECK_THROWS_AS(m.forward_layers(h2, {}, 1, 1, 0, 2, front), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("tiny preset: deterministic from its seed, saves and reloads as an HF directory") {
  setup_torch(2);
  Model a = Model::tiny(0), b = Model::tiny(0), c = Model::tiny(1);
  CHECK(a.config().vocab_size == 261);
  const std::vector<int> toks = {256, 72, 105};
  auto la = full_logits(a, toks);
  CHECK(la == full_logits(b, toks));
  CHECK(la != full_logits(c, toks));
  auto dir = test::fresh_dir("tiny");
  a.save(dir);
  Model r = Model::load(dir);
  CHECK(r.config() == a.config());
  CHECK(full_logits(r, toks) == la);
  std::filesystem::remove_all(dir);
}

TEST_CASE("bad checkpoints and inputs give specific errors") {
  setup_torch(2);
  Shape s;
  std::string msg;
  CHECK(kind_of([&] { Model::load("/nonexistent/fedge/model"); }) == ErrorKind::kNotFound);
  auto dir = test::fresh_dir("bad");
  test::write_checkpoint(dir, s, 8);
  // Truncated safetensors.
  auto size = std::filesystem::file_size(dir / "model.safetensors");
  std::filesystem::resize_file(dir / "model.safetensors", size - 100);
  CHECK(kind_of([&] { Model::load(dir); }) == ErrorKind::kInvalidInput);
  // No weights file at all.
  std::filesystem::remove(dir / "model.safetensors");
  CHECK(kind_of([&] { Model::load(dir); }) == ErrorKind::kNotFound);
  // Missing tensor: config says untied, file has no lm_head.
  test::write_checkpoint(dir, s, 8);
  auto j = test::config_json(s);
  j["tie_word_embeddings"] = false;
  std::ofstream(dir / "config.json") << j.dump();
  CHECK(kind_of([&] { Model::load(dir); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("lm_head.weight") != std::string::npos);
  CHECK(msg.find("[50, 32]") != std::string::npos);
  // Mis-shaped tensor: config says a larger MLP.
  j = test::config_json(s);
  j["intermediate_size"] = 64;
  std::ofstream(dir / "config.json") << j.dump();
  CHECK(kind_of([&] { Model::load(dir); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("model.layers.0.mlp.gate_proj.weight") != std::string::npos);
  CHECK(msg.find("[64, 32]") != std::string::npos);
  // Unknown architecture.
  j = test::config_json(s);
  j["architectures"] = {"FalconForCausalLM"};
  j["model_type"] = "falcon";
  std::ofstream(dir / "config.json") << j.dump();
  CHECK(kind_of([&] { Model::load(dir); }, &msg) == ErrorKind::kInvalidInput);
  CHECK(msg.find("FalconForCausalLM") != std::string::npos);
  // Context overflow and out-of-vocabulary ids.
  std::ofstream(dir / "config.json") << test::config_json(s).dump();
  Model m = Model::load(dir);
  CHECK(kind_of([&] { m.make_cache(1, 65); }) == ErrorKind::kInvalidInput);
  KVCache cache = m.make_cache(1, 4);
  std::vector<int> five = {1, 2, 3, 4, 5};
  CHECK(kind_of([&] { m.forward(five, {}, 1, 5, cache); }) == ErrorKind::kInvalidInput);
  std::vector<int> oov = {50};
  CHECK(kind_of([&] { m.forward(oov, {}, 1, 1, cache); }) == ErrorKind::kInvalidInput);
  std::filesystem::remove_all(dir);
}

TEST_CASE("hostile config sizes are refused before allocating") {
  auto j = test::config_json(Shape{});
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"}) {
    auto bad = j;
    bad[field] = 1 << 29;
    std::string msg;
    CHECK(kind_of([&] { ModelConfig::from_json_text(bad.dump(), "cfg"); }, &msg) == ErrorKind::kInvalidInput);
    CHECK(msg.find(field) != std::string::npos);
  }
  auto huge = j;
  huge["max_position_embeddings"] = 1 << 29;
  auto c = ModelConfig::from_json_text(huge.dump(), "cfg");
  CHECK(c.context_length() == kMaxContext);
  auto neg = j;
  neg["num_attention_heads"] = -4;
  CHECK(kind_of([&] { ModelConfig::from_json_text(neg.dump(), "cfg"); }) == ErrorKind::kInvalidInput);
}
