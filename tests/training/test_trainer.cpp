// ATen (through glog) defines CHECK too; Catch must come after it so that
// CHECK is Catch's and a failed check is reported, not an abort.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <optional>
#include <set>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/training/dataset.h"
#include "fedge/training/trainer.h"

using namespace fedge;
using namespace fedge::training;

namespace {

// Sequences of a repeating pattern the tiny model can learn quickly; the first
// `prompt` tokens of each carry no loss.
TokenDataset pattern_data(int count, int length, int prompt, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Sequence> sequences;
  for (int i = 0; i < count; ++i) {
    Sequence s;
    int offset = static_cast<int>(rng.below(5));
    for (int t = 0; t < length; ++t) {
      s.tokens.push_back(static_cast<TokenId>(97 + (offset + t) % 5));
      s.target.push_back(t >= prompt ? 1 : 0);
    }
    sequences.push_back(std::move(s));
  }
  return TokenDataset::from_sequences(std::move(sequences));
}

inference::Model tiny_with_adapter(const std::string& name, std::uint64_t adapter_seed = 1) {
  inference::setup_torch(1);
  auto model = inference::Model::tiny(0);
  inference::LoraConfig config;
  config.r = 4;
  config.alpha = 8;
  config.target_modules = {"q_proj", "v_proj"};
  model.add_adapter(name, inference::LoraAdapter::create(model.config(), config, adapter_seed));
  return model;
}

TrainOptions quick_options(std::int64_t steps) {
  TrainOptions o;
  o.steps = steps;
  o.batch_size = 2;
  o.lr = 5e-3;
  o.warmup_steps = 1;
  o.log_every = 0;
  o.seed = 3;
  return o;
}

}  // namespace

TEST_CASE("LoRA training changes only the adapter: base weights identical bit for bit", "[trainer]") {
  auto model = tiny_with_adapter("site");
  std::vector<at::Tensor> before;
  for (auto& [name, tensor] : model.named_weights()) before.push_back(tensor.clone());
  auto adapter_before = model.adapter("site")->to_params();
  auto data = pattern_data(6, 24, 4, 1);
  auto trainer = Trainer::for_adapter(model, "site", data, quick_options(3));
  trainer.run();
  auto after = model.named_weights();
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < before.size(); ++i) {
    INFO(after[i].first);
    CHECK(at::equal(before[i], after[i].second));
    CHECK_FALSE(after[i].second.requires_grad());
  }
  auto adapter_after = model.adapter("site")->to_params();
  double moved = 0;
  for (std::size_t i = 0; i < adapter_after.size(); ++i) {
    moved += std::abs(adapter_after.values()[i] - adapter_before.values()[i]);
  }
  CHECK(moved > 0);
}

TEST_CASE("LoRA training lowers the loss on a small set", "[trainer]") {
  auto model = tiny_with_adapter("site");
  auto data = pattern_data(8, 24, 4, 2);
  double initial = evaluate_loss(model, data).loss;
  auto options = quick_options(25);
  options.lr = 1e-2;
  auto trainer = Trainer::for_adapter(model, "site", data, options);
  auto history = trainer.run();
  double final_loss = evaluate_loss(model, data).loss;
  INFO("initial " << initial << " final " << final_loss);
  CHECK(final_loss < 0.7 * initial);
  CHECK(history.back().loss < history.front().loss);
}

TEST_CASE("prompt tokens carry no loss", "[trainer]") {
  inference::setup_torch(1);
  auto model = inference::Model::tiny(0);
  auto data = pattern_data(3, 16, 6, 4);
  // Per-token losses from the logits, summed over the completion only.
  double expected = 0;
  std::int64_t count = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const auto& s = data[i];
    std::vector<std::int64_t> ids(s.tokens.begin(), s.tokens.end());
    at::Tensor tokens = at::from_blob(ids.data(), {1, (long)ids.size()}, at::kLong).clone();
    at::NoGradGuard no_grad;
    at::Tensor log_probs = at::log_softmax(model.forward_train(tokens), -1);
    for (std::size_t t = 1; t < ids.size(); ++t) {
      if (!s.target[t]) continue;
      expected -= log_probs[0][t - 1][ids[t]].item<double>();
      ++count;
    }
  }
  auto result = evaluate_loss(model, data, 2);
  CHECK(result.tokens == count);
  CHECK(result.tokens == 3 * 10);
  CHECK(result.loss == Approx(expected / count).epsilon(1e-5));
  CHECK(result.perplexity == Approx(std::exp(expected / count)).epsilon(1e-5));
}

TEST_CASE("a resumed run continues the same loss curve", "[trainer]") {
  auto data = pattern_data(6, 20, 3, 5);
  auto options = quick_options(6);
  std::vector<double> straight;
  {
    auto model = tiny_with_adapter("a");
    auto trainer = Trainer::for_adapter(model, "a", data, options);
    for (auto& s : trainer.run()) straight.push_back(s.loss);
  }
  auto dir = std::filesystem::temp_directory_path() / "fedge_test_resume";
  std::filesystem::remove_all(dir);
  {
    auto model = tiny_with_adapter("a");
    auto trainer = Trainer::for_adapter(model, "a", data, options);
    for (int i = 0; i < 3; ++i) CHECK(trainer.step().loss == Approx(straight[i]).margin(1e-5));
    trainer.save_checkpoint(dir);
  }
  auto model = tiny_with_adapter("a", /*adapter_seed=*/99);  // different start: the checkpoint must restore it
  auto trainer = Trainer::for_adapter(model, "a", data, options);
  trainer.load_checkpoint(dir);
  CHECK(trainer.current_step() == 3);
  for (int i = 3; i < 6; ++i) {
    double loss = trainer.step().loss;
    INFO("step " << i + 1);
    CHECK(loss == Approx(straight[i]).margin(1e-5));
  }
  CHECK(trainer.done());
  CHECK_THROWS_AS(trainer.step(), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a trained adapter saved as PEFT loads back with the trained logits", "[trainer]") {
  auto model = tiny_with_adapter("site");
  auto data = pattern_data(4, 16, 2, 6);
  auto trainer = Trainer::for_adapter(model, "site", data, quick_options(4));
  trainer.run();
  std::vector<std::int64_t> ids = {97, 98, 99, 100, 101, 97, 98};
  at::Tensor tokens = at::from_blob(ids.data(), {1, 7}, at::kLong).clone();
  at::NoGradGuard no_grad;
  at::Tensor trained = model.forward_train(tokens);
  auto dir = std::filesystem::temp_directory_path() / "fedge_test_peft_trained";
  std::filesystem::remove_all(dir);
  model.adapter("site")->save(dir);
  auto fresh = inference::Model::tiny(0);
  fresh.add_adapter("loaded", inference::LoraAdapter::load(dir, fresh.config()));
  fresh.set_active_adapter("loaded");
  at::Tensor loaded = fresh.forward_train(tokens);
  CHECK(at::allclose(trained, loaded, 1e-5, 1e-5));
  fresh.set_active_adapter("");
  CHECK_FALSE(at::allclose(fresh.forward_train(tokens), trained, 1e-4, 1e-4));
  std::filesystem::remove_all(dir);
}

TEST_CASE("FedProx keeps the adapter closer to the global centre", "[trainer]") {
  auto data = pattern_data(6, 20, 3, 7);
  auto distance_after = [&](double mu) {
    auto model = tiny_with_adapter("a");
    auto center = model.adapter("a")->to_params();
    auto options = quick_options(8);
    options.fedprox_mu = mu;
    options.max_grad_norm = 0;
    auto trainer = Trainer::for_adapter(model, "a", data, options);
    trainer.set_proximal_center(center);
    trainer.run();
    auto after = model.adapter("a")->to_params();
    double d = 0;
    for (std::size_t i = 0; i < after.size(); ++i) d += std::pow(after.values()[i] - center.values()[i], 2);
    return std::sqrt(d);
  };
  CHECK(distance_after(50.0) < 0.9 * distance_after(0.0));
}

TEST_CASE("full-parameter training updates base weights", "[trainer]") {
  inference::setup_torch(1);
  auto model = inference::Model::tiny(0);
  auto embed_before = model.embed_tokens().clone();
  auto data = pattern_data(4, 16, 1, 8);
  double initial = evaluate_loss(model, data).loss;
  auto options = quick_options(10);
  options.lr = 3e-3;
  auto trainer = Trainer::full(model, data, options);
  trainer.run();
  CHECK_FALSE(at::equal(embed_before, model.embed_tokens()));
  CHECK(evaluate_loss(model, data).loss < initial);
}

TEST_CASE("learning-rate schedule: warm-up then cosine or linear decay", "[trainer]") {
  TrainOptions o;
  o.lr = 1.0;
  o.steps = 10;
  o.warmup_steps = 2;
  CHECK(learning_rate(o, 0) == Approx(0.5));
  CHECK(learning_rate(o, 1) == Approx(1.0));
  CHECK(learning_rate(o, 2) == Approx(1.0));
  CHECK(learning_rate(o, 6) == Approx(0.5));   // half way through the cosine
  CHECK(learning_rate(o, 10) == Approx(0.0).margin(1e-12));
  o.schedule = "linear";
  CHECK(learning_rate(o, 6) == Approx(0.5));
  CHECK(learning_rate(o, 4) == Approx(0.75));
  o.schedule = "constant";
  CHECK(learning_rate(o, 9) == Approx(1.0));
  o.schedule = "exp";
  CHECK_THROWS_AS(o.validate(), Error);
}

TEST_CASE("batches follow a seeded per-epoch shuffle", "[trainer]") {
  std::multiset<std::size_t> epoch;
  for (int b = 0; b < 5; ++b) {
    for (auto i : batch_indices(10, 2, 7, b)) epoch.insert(i);
  }
  CHECK(epoch.size() == 10);
  CHECK(std::set<std::size_t>(epoch.begin(), epoch.end()).size() == 10);  // each sequence once per epoch
  CHECK(batch_indices(10, 3, 7, 4) == batch_indices(10, 3, 7, 4));
  CHECK(batch_indices(10, 3, 7, 4) != batch_indices(10, 3, 8, 4));
}

namespace {

// Sequences of different lengths (so batches carry padding), the first few
// tokens of each without a target.
TokenDataset ragged_data(std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Sequence> sequences;
  for (int i = 0; i < 6; ++i) {
    Sequence s;
    const int length = 9 + static_cast<int>(rng.below(14));
    for (int t = 0; t < length; ++t) {
      s.tokens.push_back(static_cast<TokenId>(rng.below(250)));
      s.target.push_back(t >= 3 ? 1 : 0);
    }
    sequences.push_back(std::move(s));
  }
  return TokenDataset::from_sequences(std::move(sequences));
}

struct StepResult {
  double loss = 0, grad_norm = 0;
  std::vector<at::Tensor> grads;
};

// One step of LoRA training (with adapter dropout, so a checkpointed layer
// must replay the same masks) or of full-parameter training.
StepResult one_step(bool fused, bool checkpoint, bool full, bool base_grad = false, int checkpoint_layers = 0) {
  inference::setup_torch(1);
  at::manual_seed(7);
  auto model = inference::Model::tiny(0);
  std::vector<at::Tensor> params;
  auto data = ragged_data(11);
  auto options = quick_options(2);
  options.batch_size = 3;
  options.grad_accum = 2;
  options.max_grad_norm = 0;  // the raw gradients stay in .grad()
  options.fused_head_loss = fused;
  options.gradient_checkpointing = checkpoint;
  options.checkpoint_layers = checkpoint_layers;
  // Compared at 1e-5 with a trainable base (always f32): keep the frozen base
  // in f32 too (test_frozen_bf16.cpp covers the bf16 path).
  options.frozen_base_bf16 = false;
  std::optional<Trainer> trainer;
  if (full) {
    for (auto& [name, tensor] : model.named_weights()) params.push_back(tensor);
    trainer.emplace(Trainer::full(model, data, options));
  } else {
    inference::LoraConfig config;
    config.r = 4;
    config.alpha = 8;
    config.dropout = 0.1;
    config.target_modules = {"q_proj", "v_proj", "down_proj"};
    model.add_adapter("site", inference::LoraAdapter::create(model.config(), config, 1));
    // B starts at zero; move it so A gets gradients too.
    for (auto& p : model.adapter("site")->parameters()) {
      at::NoGradGuard no_grad;
      if (p.abs().sum().item<double>() == 0) p.normal_(0, 0.05, at::detail::getDefaultCPUGenerator());
    }
    params = model.adapter("site")->parameters();
    // A base that requires grad takes the plain autograd formulas (no
    // hand-written Functions): the reference for their backward passes.
    if (base_grad) {
      for (auto& [name, tensor] : model.named_weights()) tensor.requires_grad_(true);
    }
    trainer.emplace(Trainer::for_adapter(model, "site", data, options));
  }
  StepStats stats = trainer->step();
  StepResult r{stats.loss, stats.grad_norm, {}};
  for (auto& p : params) r.grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
  return r;
}

void check_same(const StepResult& a, const StepResult& b) {
  // REQUIRE, not CHECK: glog (via ATen) redefines CHECK in this file.
  INFO("loss " << a.loss << " vs " << b.loss << ", grad norm " << a.grad_norm << " vs " << b.grad_norm);
  REQUIRE(a.loss == Approx(b.loss).epsilon(1e-5));
  REQUIRE(a.grad_norm == Approx(b.grad_norm).epsilon(1e-5));
  REQUIRE(a.grad_norm > 0);
  REQUIRE(a.grads.size() == b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(a.grads[i].defined() == b.grads[i].defined());
    if (!a.grads[i].defined()) continue;
    double scale = 1.0 + a.grads[i].abs().max().item<double>();
    REQUIRE((a.grads[i] - b.grads[i]).abs().max().item<double>() <= 1e-5 * scale);
  }
}

}  // namespace

TEST_CASE("fused head loss and gradient checkpointing match the plain graph (LoRA)", "[trainer]") {
  StepResult plain = one_step(false, false, false);
  SECTION("fused head loss") { check_same(plain, one_step(true, false, false)); }
  SECTION("fused head loss + checkpointing") { check_same(plain, one_step(true, true, false)); }
  SECTION("plain head + checkpointing") { check_same(plain, one_step(false, true, false)); }
  SECTION("hand-written RMS norm, RoPE, SwiGLU and frozen-linear backward vs plain autograd") {
    check_same(one_step(false, false, false, /*base_grad=*/true), plain);
  }
}

TEST_CASE("fused head loss and gradient checkpointing match the plain graph (full training)", "[trainer]") {
  StepResult plain = one_step(false, false, true);
  check_same(plain, one_step(true, true, true));
}

TEST_CASE("checkpointing only some layers gives the plain step's loss and gradients", "[trainer]") {
  const auto plain = one_step(true, false, false);
  const int layers = inference::ModelConfig::tiny().num_layers;
  for (int n : {1, layers / 2, layers + 3}) {
    INFO("checkpoint_layers " << n);
    check_same(plain, one_step(true, false, false, false, n));
  }
}

namespace {

// The tiny adapter with B moved off zero (so A gets gradients too) and the
// exact f32 path, for the SCAFFOLD checks below.
inference::Model scaffold_model() {
  auto model = tiny_with_adapter("a");
  at::manual_seed(5);
  for (auto& p : model.adapter("a")->parameters()) {
    at::NoGradGuard no_grad;
    if (p.abs().sum().item<double>() == 0) p.normal_(0, 0.05, at::detail::getDefaultCPUGenerator());
  }
  return model;
}

TrainOptions scaffold_options(std::int64_t steps) {
  auto o = quick_options(steps);
  o.warmup_steps = 0;
  o.schedule = "constant";
  o.max_grad_norm = 0;  // the step sees the corrected gradient unclipped
  o.frozen_base_bf16 = false;
  return o;
}

}  // namespace

TEST_CASE("SCAFFOLD gradient offset: the first AdamW step is -lr (g + o) / (|g + o| + eps), g the raw gradient", "[trainer]") {
  auto data = pattern_data(6, 20, 3, 7);
  const auto options = scaffold_options(1);
  // The raw gradient of the first step, from a run without an offset.
  auto plain_model = scaffold_model();
  auto plain = Trainer::for_adapter(plain_model, "a", data, options);
  plain.step();
  std::vector<float> raw;
  for (const auto& p : plain_model.adapter("a")->parameters()) {
    const at::Tensor g = p.grad().contiguous();
    raw.insert(raw.end(), g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
  }

  auto model = scaffold_model();
  const ParamVector before = model.adapter("a")->to_params();
  // An offset of -2g flips some coordinates' step, plus a constant that moves
  // coordinates whose raw gradient is tiny: o = -2g + 0.01 (i % 3 - 1).
  std::vector<float> offset(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i)
    offset[i] = (i % 2 ? -2.0F * raw[i] : 0.0F) + 0.01F * static_cast<float>(static_cast<int>(i % 3) - 1);
  auto trainer = Trainer::for_adapter(model, "a", data, options);
  trainer.set_gradient_offset(ParamVector(before.layout(), offset));
  trainer.step();
  // The reported mean over one step is that step's raw gradient, bit for bit.
  REQUIRE(trainer.mean_raw_gradient() == raw);
  // AdamW's first step with bias correction: m_hat = G, v_hat = G^2.
  const ParamVector after = model.adapter("a")->to_params();
  const double lr = options.lr, eps = options.eps;
  std::size_t flipped = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const double g = static_cast<double>(raw[i]) + offset[i];
    const double want = before.values()[i] - lr * g / (std::abs(g) + eps);
    INFO("coordinate " << i << ": raw " << raw[i] << ", offset " << offset[i]);
    REQUIRE(after.values()[i] == Approx(want).epsilon(0).margin(1e-3 * lr));
    if (g * raw[i] < 0) ++flipped;
  }
  REQUIRE(flipped > raw.size() / 8);  // the offset really turned steps around
}

TEST_CASE("SCAFFOLD mean raw gradient: the mean over the steps of the gradient before the offset", "[trainer]") {
  auto data = pattern_data(6, 20, 3, 7);
  auto model = scaffold_model();
  const ParamVector start = model.adapter("a")->to_params();
  std::vector<float> offset(start.size());
  for (std::size_t i = 0; i < offset.size(); ++i) offset[i] = 0.003F * static_cast<float>(static_cast<int>(i % 5) - 2);
  auto trainer = Trainer::for_adapter(model, "a", data, scaffold_options(3));
  CHECK_THROWS_WITH(trainer.mean_raw_gradient(), Catch::Contains("no gradient offset"));
  CHECK_THROWS_WITH(trainer.set_gradient_offset(ParamVector(ParamLayout(), {})), Catch::Contains("gradient offset has 0"));
  trainer.set_gradient_offset(ParamVector(start.layout(), offset));
  CHECK_THROWS_WITH(trainer.mean_raw_gradient(), Catch::Contains("no step"));
  // Each step's .grad() holds the corrected gradient g_k + o (no clipping), so
  // the raw one is what it holds minus o.
  std::vector<double> sum(offset.size(), 0.0);
  for (int k = 0; k < 3; ++k) {
    trainer.step();
    std::size_t i = 0;
    for (const auto& p : model.adapter("a")->parameters()) {
      const at::Tensor g = p.grad().contiguous();
      for (std::int64_t j = 0; j < g.numel(); ++j, ++i) sum[i] += static_cast<double>(g.data_ptr<float>()[j]) - offset[i];
    }
  }
  const auto mean = trainer.mean_raw_gradient();
  REQUIRE(mean.size() == offset.size());
  double largest = 0;
  for (std::size_t i = 0; i < mean.size(); ++i) {
    INFO("coordinate " << i);
    REQUIRE(mean[i] == Approx(sum[i] / 3).margin(1e-7));
    largest = std::max(largest, std::abs(sum[i] / 3));
  }
  REQUIRE(largest > 1e-4);  // not trivially zero
}
