// bf16 products for the frozen base in LoRA training
// (TrainOptions::frozen_base_bf16): close to the f32 path in loss and LoRA
// gradients, the same precision when a checkpointed layer is recomputed, and
// exactly the f32 path where it does not apply (no AVX512-BF16, full-parameter
// training, option off). Also the frozen base's blocked causal attention over
// several query blocks against the plain autograd graph.
//
// ATen (through glog) defines CHECK too; Catch must come after it.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <vector>

#include "fedge/common/rng.h"
#include "fedge/inference/frozen_bf16.h"
#include "fedge/inference/kernels_info.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/training/dataset.h"
#include "fedge/training/trainer.h"

using namespace fedge;
using namespace fedge::training;

namespace {

// The documented tolerances (docs/perf/training.md): per-step loss within
// kLossTol (absolute, nats); LoRA gradients, relative error (norm of the
// difference over the f32 gradient's norm), all of them together within
// kGradTol and each tensor within kTensorGradTol. bf16 operands alone (8-bit
// mantissas) give about 0.5-1.4% per tensor on this model (measured: the
// rounding of the products' outputs adds little), far below the gradient's
// batch-to-batch noise.
constexpr double kLossTol = 2e-3;
constexpr double kGradTol = 1e-2;
constexpr double kTensorGradTol = 2e-2;

TokenDataset letter_data(int count, int length, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Sequence> sequences;
  for (int i = 0; i < count; ++i) {
    Sequence s;
    for (int t = 0; t < length; ++t) {
      s.tokens.push_back(static_cast<TokenId>(97 + rng.below(26)));
      s.target.push_back(t >= 2 ? 1 : 0);
    }
    sequences.push_back(std::move(s));
  }
  return TokenDataset::from_sequences(std::move(sequences));
}

struct Run {
  std::vector<double> losses;
  std::vector<at::Tensor> first_grads;  // LoRA gradients of the first step
  std::vector<at::Tensor> base_before, base_after;
};

// `steps` LoRA steps on the tiny model (q, v and down; B moved off zero so A
// gets gradients too).
Run train(bool bf16, int steps, bool checkpoint = false) {
  inference::setup_torch(1);
  at::manual_seed(7);
  auto model = inference::Model::tiny(0);
  inference::LoraConfig config;
  config.r = 4;
  config.alpha = 8;
  config.target_modules = {"q_proj", "v_proj", "down_proj"};
  model.add_adapter("site", inference::LoraAdapter::create(model.config(), config, 1));
  for (auto& p : model.adapter("site")->parameters()) {
    at::NoGradGuard no_grad;
    if (p.abs().sum().item<double>() == 0) p.normal_(0, 0.05, at::detail::getDefaultCPUGenerator());
  }
  auto data = letter_data(8, 48, 5);
  TrainOptions o;
  o.steps = steps;
  o.batch_size = 4;
  o.lr = 5e-3;
  o.log_every = 0;
  o.seed = 3;
  o.max_grad_norm = 0;  // raw gradients stay in .grad()
  o.frozen_base_bf16 = bf16;
  o.gradient_checkpointing = checkpoint;
  Run run;
  for (auto& [name, w] : model.named_weights()) run.base_before.push_back(w.clone());
  auto trainer = Trainer::for_adapter(model, "site", data, o);
  for (int i = 0; i < steps; ++i) {
    run.losses.push_back(trainer.step().loss);
    if (i == 0) {
      for (auto& p : model.adapter("site")->parameters()) run.first_grads.push_back(p.grad().clone());
    }
  }
  for (auto& [name, w] : model.named_weights()) run.base_after.push_back(w.clone());
  return run;
}

std::vector<at::Tensor> flat(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.flatten());
  return out;
}

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).norm().item<double>() / want.norm().item<double>();
}

}  // namespace

TEST_CASE("bf16 frozen base: loss and LoRA gradients close to the f32 path", "[frozen_bf16]") {
  if (!inference::bf16_matmul_fast()) {
    WARN("CPU lacks AVX512-BF16: the bf16 path is never taken here (see the fallback test)");
    return;
  }
  Run f32 = train(false, 4), bf16 = train(true, 4);
  for (std::size_t i = 0; i < f32.losses.size(); ++i) {
    INFO("step " << i + 1 << ": f32 loss " << f32.losses[i] << ", bf16 " << bf16.losses[i]);
    REQUIRE(std::abs(bf16.losses[i] - f32.losses[i]) <= kLossTol);
  }
  // The bf16 path is really taken (not silently f32).
  REQUIRE(bf16.losses[0] != f32.losses[0]);
  REQUIRE(f32.first_grads.size() == 3 * 4 * 2);
  for (std::size_t i = 0; i < f32.first_grads.size(); ++i) {
    const double err = relative_error(bf16.first_grads[i], f32.first_grads[i]);
    INFO("LoRA parameter " << i << ": relative gradient error " << err);
    REQUIRE(f32.first_grads[i].norm().item<double>() > 0);
    REQUIRE(err < kTensorGradTol);
  }
  const double all = relative_error(at::cat(flat(bf16.first_grads)),
                                    at::cat(flat(f32.first_grads)));
  INFO("all LoRA gradients: relative error " << all);
  REQUIRE(all < kGradTol);
}

TEST_CASE("bf16 frozen base: the base stays unchanged bit for bit", "[frozen_bf16]") {
  Run run = train(true, 2);
  REQUIRE(run.base_before.size() == run.base_after.size());
  for (std::size_t i = 0; i < run.base_before.size(); ++i) REQUIRE(run.base_before[i].equal(run.base_after[i]));
}

TEST_CASE("bf16 frozen base: a checkpointed layer recomputes in bf16 too", "[frozen_bf16]") {
  Run plain = train(true, 1), checkpointed = train(true, 1, /*checkpoint=*/true);
  REQUIRE(checkpointed.losses[0] == Approx(plain.losses[0]).epsilon(1e-6));
  for (std::size_t i = 0; i < plain.first_grads.size(); ++i) {
    INFO("LoRA parameter " << i);
    const double scale = 1.0 + plain.first_grads[i].abs().max().item<double>();
    REQUIRE((plain.first_grads[i] - checkpointed.first_grads[i]).abs().max().item<double>() <= 1e-6 * scale);
  }
}

TEST_CASE("bf16 frozen base: without AVX512-BF16 the f32 path runs exactly", "[frozen_bf16]") {
  // Forcing the kernels to plain AVX-512 stands in for a CPU without bf16
  // dot products (the same runtime check).
  if (!inference::set_kernel_isa("avx512")) {
    WARN("CPU lacks AVX-512: cannot force the fallback here");
    return;
  }
  struct Restore {
    ~Restore() { inference::set_kernel_isa("auto"); }
  } restore;
  REQUIRE_FALSE(inference::bf16_matmul_fast());
  Run asked = train(true, 2);
  Run f32 = train(false, 2);
  REQUIRE(asked.losses == f32.losses);
  for (std::size_t i = 0; i < f32.first_grads.size(); ++i) REQUIRE(asked.first_grads[i].equal(f32.first_grads[i]));
}

TEST_CASE("bf16 frozen base: full-parameter training stays f32", "[frozen_bf16]") {
  auto run_full = [](bool bf16) {
    inference::setup_torch(1);
    auto model = inference::Model::tiny(0);
    auto data = letter_data(4, 24, 9);
    TrainOptions o;
    o.steps = 1;
    o.batch_size = 2;
    o.log_every = 0;
    o.frozen_base_bf16 = bf16;
    auto trainer = Trainer::full(model, data, o);
    return trainer.step().loss;
  };
  REQUIRE(run_full(true) == run_full(false));
}

TEST_CASE("FrozenBaseBf16 scopes nest and restore the previous setting", "[frozen_bf16]") {
  REQUIRE_FALSE(inference::FrozenBaseBf16::active());
  {
    inference::FrozenBaseBf16 on;
    REQUIRE(inference::FrozenBaseBf16::active());
    {
      inference::FrozenBaseBf16 off(false);
      REQUIRE_FALSE(inference::FrozenBaseBf16::active());
    }
    REQUIRE(inference::FrozenBaseBf16::active());
  }
  REQUIRE_FALSE(inference::FrozenBaseBf16::active());
}

namespace {

// Loss and LoRA gradients of one f32 step on sequences long enough for several
// 64-row query blocks (the last one partial), of different lengths so rows
// carry left padding. `base_grad`: the base requires grad, which takes the
// plain autograd attention (the reference) instead of the blocked one.
std::pair<double, std::vector<at::Tensor>> long_step(bool base_grad, std::vector<int> lengths = {150, 97, 131}) {
  inference::setup_torch(1);
  at::manual_seed(7);  // B's initialisation below
  auto model = inference::Model::tiny(0);
  inference::LoraConfig config;
  config.r = 4;
  config.alpha = 8;
  config.target_modules = {"q_proj", "k_proj", "v_proj"};
  model.add_adapter("site", inference::LoraAdapter::create(model.config(), config, 1));
  for (auto& p : model.adapter("site")->parameters()) {
    at::NoGradGuard no_grad;
    if (p.abs().sum().item<double>() == 0) p.normal_(0, 0.05, at::detail::getDefaultCPUGenerator());
  }
  if (base_grad) {
    for (auto& [name, w] : model.named_weights()) w.requires_grad_(true);
  }
  Rng rng(21);
  std::vector<Sequence> sequences;
  for (int length : lengths) {
    Sequence s;
    for (int t = 0; t < length; ++t) {
      s.tokens.push_back(static_cast<TokenId>(rng.below(250)));
      s.target.push_back(t >= 4 ? 1 : 0);
    }
    sequences.push_back(std::move(s));
  }
  auto data = TokenDataset::from_sequences(std::move(sequences));
  TrainOptions o;
  o.steps = 1;
  o.batch_size = 3;
  o.log_every = 0;
  o.max_grad_norm = 0;
  o.frozen_base_bf16 = false;
  auto trainer = Trainer::for_adapter(model, "site", data, o);
  double loss = trainer.step().loss;
  std::vector<at::Tensor> grads;
  for (auto& p : model.adapter("site")->parameters()) grads.push_back(p.grad().clone());
  return {loss, grads};
}

}  // namespace

TEST_CASE("frozen base: blocked causal attention matches the plain graph over several blocks", "[frozen_bf16]") {
  auto [loss, grads] = long_step(false);
  auto [ref_loss, ref_grads] = long_step(true);
  REQUIRE(loss == Approx(ref_loss).epsilon(1e-5));
  REQUIRE(grads.size() == ref_grads.size());
  for (std::size_t i = 0; i < grads.size(); ++i) {
    INFO("LoRA parameter " << i);
    REQUIRE(ref_grads[i].norm().item<double>() > 0);
    const double scale = 1.0 + ref_grads[i].abs().max().item<double>();
    REQUIRE((grads[i] - ref_grads[i]).abs().max().item<double>() <= 1e-5 * scale);
  }
}
