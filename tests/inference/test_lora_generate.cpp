// LoRA (unmerged, merged, PEFT files, hot swap, flat vectors, gradients) and
// generation (sampling, stops, batching, streaming).
#include "model_helpers.h"  // before Catch2
#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "test_support.h"

using namespace fedge;
using namespace fedge::inference;
using fedge::test::Shape;
using fedge::test::random_adapter;

namespace {

const std::vector<int> kTokens = {1, 7, 42, 3, 9, 0, 33, 12};

std::vector<float> full_logits(Model& m, const std::vector<int>& toks) {
  KVCache cache = m.make_cache(1, int(toks.size()));
  return m.forward(toks, {}, 1, int(toks.size()), cache, true);
}

Model small_model(Shape& s, test::Weights* w = nullptr, std::uint64_t seed = 3) {
  auto dir = test::fresh_dir("lora_model");
  auto weights = test::write_checkpoint(dir, s, seed);
  if (w) *w = weights;
  Model m = Model::load(dir);
  std::filesystem::remove_all(dir);
  return m;
}

}  // namespace

TEST_CASE("LoRA: zero B is the base model, non-zero matches the reference with W + s*B*A") {
  setup_torch(2);
  Shape s;
  test::Weights w;
  Model m = small_model(s, &w);
  auto base = full_logits(m, kTokens);
  LoraConfig lc;
  lc.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  m.add_adapter("zero", LoraAdapter::create(m.config(), lc, 1));
  m.set_active_adapter("zero");
  CHECK(full_logits(m, kTokens) == base);

  LoraAdapter ad = random_adapter(m.config(), lc.target_modules, 9);
  std::map<std::string, std::vector<double>> deltas;
  for (int l = 0; l < s.layers; ++l)
    for (int t = 0; t < kNumLoraTargets; ++t) {
      at::Tensor d = at::mm(ad.b(l, LoraTarget(t)).to(at::kDouble), ad.a(l, LoraTarget(t)).to(at::kDouble)) * ad.scale();
      d = d.contiguous();
      deltas["model.layers." + std::to_string(l) + "." + lora_target_parent(LoraTarget(t)) + "." +
             lora_target_name(LoraTarget(t))] = std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
    }
  m.add_adapter("rand", std::move(ad));
  m.set_active_adapter("rand");
  auto ref = test::reference_logits(w, s, kTokens, deltas);
  auto got = full_logits(m, kTokens);
  CHECK(test::rel_error(got, ref) < 1e-4);
  CHECK(test::rel_error(got, base) > 1e-3);
  // The autograd path applies the same adapter.
  at::Tensor toks = at::tensor(std::vector<int64_t>(kTokens.begin(), kTokens.end())).view({1, -1});
  at::Tensor lt = m.forward_train(toks).contiguous();
  CHECK(test::rel_error(std::vector<float>(lt.data_ptr<float>(), lt.data_ptr<float>() + lt.numel()), ref) < 1e-4);
}

TEST_CASE("LoRA: merged equals unmerged, unmerge restores the base weights") {
  setup_torch(2);
  Shape s;
  Model m = small_model(s);
  auto base = full_logits(m, kTokens);
  at::Tensor wq0 = m.layer(0).wq.clone();
  m.add_adapter("a", random_adapter(m.config(), {"q_proj", "v_proj", "down_proj"}, 4));
  m.set_active_adapter("a");
  auto unmerged = full_logits(m, kTokens);
  m.merge_adapter("a");
  CHECK(m.active_adapter().empty());
  auto merged = full_logits(m, kTokens);
  CHECK(test::rel_error(merged, unmerged) < 1e-5);
  CHECK_THROWS_AS(m.set_active_adapter("a"), Error);
  m.unmerge_adapter();
  CHECK((m.layer(0).wq - wq0).abs().max().item<float>() < 1e-6f);
  CHECK(test::rel_error(full_logits(m, kTokens), base) < 1e-5);
}

TEST_CASE("LoRA: hot swap between adapters without reloading the base") {
  setup_torch(2);
  Shape s;
  Model m = small_model(s);
  auto base = full_logits(m, kTokens);
  m.add_adapter("x", random_adapter(m.config(), {"q_proj", "v_proj"}, 1));
  m.add_adapter("y", random_adapter(m.config(), {"gate_proj", "up_proj"}, 2));
  m.set_active_adapter("x");
  auto lx = full_logits(m, kTokens);
  m.set_active_adapter("y");
  auto ly = full_logits(m, kTokens);
  CHECK(test::rel_error(lx, ly) > 1e-3);
  m.set_active_adapter("x");
  CHECK(full_logits(m, kTokens) == lx);
  m.set_active_adapter("");
  CHECK(full_logits(m, kTokens) == base);
  m.remove_adapter("x");
  CHECK(m.adapter_names() == std::vector<std::string>{"y"});
  CHECK_THROWS_AS(m.set_active_adapter("x"), Error);
}

TEST_CASE("LoRA: PEFT files and flat parameter vectors round-trip") {
  setup_torch(2);
  Shape s;
  Model m = small_model(s);
  LoraAdapter ad = random_adapter(m.config(), {"q_proj", "k_proj", "o_proj", "up_proj"}, 5);
  auto dir = test::fresh_dir("peft");
  ad.save(dir);
  auto cfg = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["task_type"] == "CAUSAL_LM");
  CHECK(cfg["r"] == 4);
  auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  const TensorInfo& a0 = file.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(a0.shape == std::vector<std::int64_t>{4, 32});
  CHECK(file.at("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight").shape == std::vector<std::int64_t>{48, 4});
  CHECK(file.at("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight").shape ==
        std::vector<std::int64_t>{16, 4});
  LoraAdapter back = LoraAdapter::load(dir, m.config());
  CHECK(back.config().target_modules == ad.config().target_modules);
  ParamVector pa = ad.to_params(), pb = back.to_params();
  CHECK(pa.layout() == pb.layout());
  CHECK(std::equal(pa.values().begin(), pa.values().end(), pb.values().begin()));
  CHECK(pa.size() == std::size_t(2 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 16 * 4) + 2 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 48 * 4)));
  // from_params writes into the same tensors the model uses.
  LoraAdapter zero = LoraAdapter::create(m.config(), ad.config(), 0);
  zero.from_params(pa);
  m.add_adapter("orig", ad.clone());
  m.add_adapter("copy", std::move(zero));
  m.set_active_adapter("orig");
  auto lo = full_logits(m, kTokens);
  m.set_active_adapter("copy");
  CHECK(full_logits(m, kTokens) == lo);
  // Bad inputs: wrong model shape, missing tensor, bad config.
  Shape other;
  other.hidden = 64;
  ModelConfig oc = ModelConfig::from_json_text(test::config_json(other).dump(), "other");
  CHECK_THROWS_AS(LoraAdapter::load(dir, oc), Error);
  auto j = cfg;
  j["target_modules"] = {"q_proj", "v_proj"};
  std::ofstream(dir / "adapter_config.json") << j.dump();
  try {
    LoraAdapter::load(dir, m.config());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    CHECK(std::string(e.what()).find("v_proj.lora_A.weight") != std::string::npos);
  }
  j["target_modules"] = {"lm_head"};
  std::ofstream(dir / "adapter_config.json") << j.dump();
  CHECK_THROWS_AS(LoraAdapter::load(dir, m.config()), Error);
  std::ofstream(dir / "adapter_config.json") << "{\"r\": ";
  CHECK_THROWS_AS(LoraAdapter::load(dir, m.config()), Error);
  std::filesystem::remove(dir / "adapter_config.json");
  try {
    LoraAdapter::load(dir, m.config());
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kNotFound);
  }
  ParamLayout wrong;
  wrong.add("x", {3});
  CHECK_THROWS_AS(back.from_params(ParamVector(wrong)), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("LoRA: gradients reach only the adapter") {
  setup_torch(2);
  Shape s;
  Model m = small_model(s);
  LoraConfig lc;
  lc.target_modules = {"q_proj", "v_proj"};
  m.add_adapter("t", LoraAdapter::create(m.config(), lc, 3));
  m.set_active_adapter("t");
  for (auto& p : m.adapter("t")->parameters()) p.requires_grad_(true);
  at::Tensor toks = at::tensor(std::vector<int64_t>(kTokens.begin(), kTokens.end())).view({1, -1});
  at::Tensor logits = m.forward_train(toks, {}, true);
  at::Tensor loss = at::cross_entropy_loss(logits.view({-1, s.vocab}).narrow(0, 0, 7), toks.view({-1}).narrow(0, 1, 7));
  loss.backward();
  CHECK(!m.layer(0).wq.requires_grad());
  auto params = m.adapter("t")->parameters();
  // B starts at zero, so A gets no gradient yet but B does.
  CHECK(params[1].grad().defined());
  CHECK(params[1].grad().abs().sum().item<float>() > 0);
}

TEST_CASE("sampling: greedy, top-k, top-p, repetition penalty, seeds") {
  std::mt19937_64 rng(1);
  SamplingOptions o;
  std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  CHECK(sample_token(logits, {}, o, rng) == 1);
  o.repetition_penalty = 2.0f;  // 3.0 -> 1.5, so token 2 wins
  CHECK(sample_token(logits, {1}, o, rng) == 2);
  o.repetition_penalty = 1.0f;
  o.temperature = 1.0f;
  o.top_k = 1;
  for (int i = 0; i < 20; ++i) CHECK(sample_token(logits, {}, o, rng) == 1);
  o.top_k = 0;
  o.top_p = 0.5f;  // the top token alone has p > 0.5
  for (int i = 0; i < 20; ++i) CHECK(sample_token(logits, {}, o, rng) == 1);
  o.top_p = 1.0f;
  std::set<int> seen;
  for (int i = 0; i < 200; ++i) seen.insert(sample_token(logits, {}, o, rng));
  CHECK(seen.size() >= 3);
  std::mt19937_64 r1(7), r2(7);
  std::vector<int> s1, s2;
  for (int i = 0; i < 20; ++i) {
    s1.push_back(sample_token(logits, {}, o, r1));
    s2.push_back(sample_token(logits, {}, o, r2));
  }
  CHECK(s1 == s2);
  o.top_p = 0.0f;
  CHECK_THROWS_AS(o.validate(), Error);
}

TEST_CASE("generation: batched equals one-by-one, seeded, stops and streams") {
  setup_torch(2);
  Shape s;
  s.max_pos = 48;
  Model m = small_model(s, nullptr, 21);
  const std::vector<std::vector<int>> prompts = {{1, 5, 9, 13, 17}, {1, 30}, {1, 8, 8, 8}};
  for (float temperature : {0.0f, 0.9f}) {
    SamplingOptions o;
    o.max_tokens = 12;
    o.temperature = temperature;
    o.top_k = 20;
    o.seed = 42;
    o.stop_ids = {};
    auto batch = generate(m, prompts, o);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      auto one = generate(m, {prompts[i]}, o);
      INFO("row " << i << " temperature " << temperature);
      CHECK(one[0].tokens == batch[i].tokens);
      CHECK(one[0].stop_reason == batch[i].stop_reason);
    }
    CHECK(generate(m, prompts, o)[0].tokens == batch[0].tokens);  // deterministic
  }
  // Stop ids: stop at the first greedy token -> nothing generated.
  SamplingOptions o;
  o.max_tokens = 10;
  auto r = generate(m, {prompts[0]}, o);
  REQUIRE(!r[0].tokens.empty());
  o.stop_ids = {r[0].tokens[0]};
  auto stopped = generate(m, {prompts[0]}, o);
  CHECK(stopped[0].tokens.empty());
  CHECK(stopped[0].stop_reason == "eos");
  // max tokens and streaming callback order.
  o.stop_ids = {};
  o.max_tokens = 3;
  std::vector<int> streamed;
  auto three = generate(m, {prompts[0]}, o, nullptr, [&](int, TokenId id, std::string_view) {
    streamed.push_back(id);
    return true;
  });
  CHECK(three[0].tokens.size() <= 3);
  CHECK(streamed == three[0].tokens);
  // Context: a prompt filling the context is an error; one leaving room stops at the end.
  std::vector<int> longp(48, 3);
  CHECK_THROWS_AS(generate(m, {longp}, o), Error);
  o.max_tokens = 100;
  std::vector<int> nearly(45, 3);
  auto end = generate(m, {nearly}, o);
  CHECK(end[0].tokens.size() <= 3);
}

TEST_CASE("generation with the byte-level tokenizer: stop strings and UTF-8 streaming") {
  setup_torch(2);
  Model m = Model::tiny(0);
  Tokenizer tok = Tokenizer::byte_level_tiny();
  SamplingOptions o;
  o.max_tokens = 20;
  auto prompt = tok.encode("Hello", true);
  auto r = generate(m, {prompt}, o, &tok);
  std::string streamed;
  auto r2 = generate(m, {prompt}, o, &tok, [&](int, TokenId, std::string_view t) {
    streamed += t;
    return true;
  });
  CHECK(streamed == r2[0].text);
  CHECK(r2[0].text == r[0].text);
  // Always valid UTF-8, even from a random model's stray bytes.
  auto valid_utf8 = [](const std::string& t) {
    std::size_t i = 0;
    while (i < t.size()) {
      const unsigned char c = t[i];
      const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (n == 0 || i + n > t.size()) return false;
      for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(t[i + k]) & 0xC0) != 0x80) return false;
      i += n;
    }
    return true;
  };
  for (std::uint64_t seed = 0; seed < 4; ++seed) {
    SamplingOptions hot;
    hot.temperature = 1.5f;
    hot.seed = seed;
    hot.max_tokens = 24;
    CHECK(valid_utf8(generate(m, {prompt}, hot, &tok)[0].text));
  }
  // A stop string equal to a piece of the text cuts it there.
  if (r[0].text.size() >= 4) {
    const std::string stop = r[0].text.substr(2, 2);
    o.stop_strings = {stop};
    std::string s2;
    auto cut = generate(m, {prompt}, o, &tok, [&](int, TokenId, std::string_view t) {
      s2 += t;
      return true;
    });
    CHECK(cut[0].stop_reason == "stop_string");
    CHECK(cut[0].text == r[0].text.substr(0, r[0].text.find(stop)));
    CHECK(s2 == cut[0].text);
  }
  // A tiny model saved with its tokenizer is a complete HF directory.
  auto dir = test::fresh_dir("tinydir");
  save_model_dir(m, dir, &tok);
  CHECK(std::filesystem::exists(dir / "tokenizer.json"));
  Model back = Model::load(dir);
  Tokenizer tback = Tokenizer::from_dir(dir);
  o.stop_strings = {};
  CHECK(generate(back, {tback.encode("Hello", true)}, o, &tback)[0].tokens == r[0].tokens);
  std::filesystem::remove_all(dir);
}

TEST_CASE("run_generate (the `fedge generate` logic): output and bad input") {
  auto dir = test::fresh_dir("cli");
  const auto out_path = dir / "out.txt";
  GenerateCommand cmd;
  cmd.model = "tiny";
  cmd.prompt = "Hi";
  cmd.sampling.max_tokens = 8;
  cmd.threads = 1;
  std::FILE* out = std::fopen(out_path.c_str(), "wb");
  CHECK(run_generate(cmd, out) == 0);
  std::fclose(out);
  // Only the continuation (greedy, as generate() gives it) and a newline.
  Model m = Model::tiny(0);
  Tokenizer tok = Tokenizer::byte_level_tiny();
  SamplingOptions o;
  o.max_tokens = 8;
  const std::string expect = generate(m, {tok.encode("Hi", true)}, o, &tok)[0].text + "\n";
  std::ifstream in(out_path, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(got == expect);
  // With an adapter folder (non-zero B), on a saved model directory.
  save_model_dir(m, dir / "model", &tok);
  LoraAdapter ad = random_adapter(m.config(), {"q_proj", "v_proj", "up_proj"}, 77);
  for (auto& t : ad.parameters()) {
    at::NoGradGuard g;
    t.mul_(20.0);  // large enough to change greedy tokens of a random model
  }
  ad.save(dir / "adapter");
  GenerateCommand with = cmd;
  with.model = (dir / "model").string();
  with.adapter = (dir / "adapter").string();
  out = std::fopen(out_path.c_str(), "wb");
  CHECK(run_generate(with, out) == 0);
  std::fclose(out);
  m.add_adapter("a", LoraAdapter::load(dir / "adapter", m.config()));
  m.set_active_adapter("a");
  const std::string expect_adapter = generate(m, {tok.encode("Hi", true)}, o, &tok)[0].text + "\n";
  std::ifstream in2(out_path, std::ios::binary);
  std::string got2((std::istreambuf_iterator<char>(in2)), std::istreambuf_iterator<char>());
  CHECK(got2 == expect_adapter);
  CHECK(got2 != expect);
  auto kind = [&](const GenerateCommand& c) {
    try {
      run_generate(c, out);
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::kRuntime;
  };
  GenerateCommand bad = cmd;
  bad.model = (dir / "missing").string();
  CHECK(kind(bad) == ErrorKind::kNotFound);
  bad = cmd;
  bad.adapter = (dir / "no_adapter").string();
  CHECK(kind(bad) == ErrorKind::kNotFound);
  bad = cmd;
  bad.prompt = std::string(600, 'x');
  CHECK(kind(bad) == ErrorKind::kInvalidInput);
  std::filesystem::remove_all(dir);
}
