// Quality of a quantized base (issue 14's acceptance): on a tiny base
// pretrained here the way the simulator pretrains its cached one
// (training::pretrain_tiny on the public corpus, fewer steps), held-out
// perplexity with the base in Q8_0 is within 1% of f32 and Q4_0 within 10%;
// LoRA over a Q4_0 base (QLoRA) lowers held-out perplexity as the bf16 path
// does, its final loss within 5% of that path's, and the adapter it saves is an
// ordinary PEFT adapter that loads onto the f32 base.
//
// ATen (through glog) defines CHECK too; Catch must come after it.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../test_util.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/training/commands.h"
#include "fedge/training/dataset.h"
#include "fedge/training/synth_data.h"
#include "fedge/training/trainer.h"

using namespace fedge;
using namespace fedge::training;
using inference::WeightType;

namespace {

constexpr int kSeqLen = 64;

// The tiny preset pretrained briefly on the synthetic public corpus, saved as
// a HF folder once for every test of this file, and one site's records.
struct PretrainedBase {
  testing::TempDir dir{"fedge_qlora_"};
  SynthDataset synth;
  PretrainedBase() {
    inference::setup_torch(1);
    SynthOptions so;
    so.sites = 2;
    so.public_records = 1200;
    so.seed = 1;
    synth = make_synth_dataset(so);
    PretrainCommand command;
    command.out = (dir.path / "base").string();
    command.seq_len = kSeqLen;
    command.options.steps = 60;
    command.options.batch_size = 8;
    command.options.lr = 3e-3;
    command.options.warmup_steps = 10;
    command.options.seed = 1;
    command.options.log_every = 0;
    pretrain_tiny(synth.public_corpus, command);
  }
  std::string path() const { return (dir.path / "base").string(); }
  const SiteData& site() const { return synth.sites.front(); }
};

const PretrainedBase& pretrained() {
  static PretrainedBase base;
  return base;
}

inference::Model load(WeightType type) {
  inference::LoadOptions options;
  options.weights = type;
  auto model = inference::Model::load(pretrained().path(), options);
  REQUIRE(model.weight_type() == type);
  return model;
}

TokenDataset tokens_of(const std::vector<Record>& records) {
  return TokenDataset::build(inference::Tokenizer::byte_level_tiny(), records, kSeqLen, /*pack=*/false);
}

double held_out_perplexity(inference::Model& model) {
  return evaluate_loss(model, tokens_of(pretrained().site().eval_text)).perplexity;
}

struct LoraRun {
  double base_perplexity = 0;     // held out, before the adapter
  double adapted_perplexity = 0;  // held out, after training
  double final_loss = 0;          // mean training loss of the last steps
};

// LoRA r=8 on q, v over the base in `type`, with the default options (bf16
// frozen-base products where the CPU has them); saves the adapter to `out`.
LoraRun train_lora(WeightType type, const std::filesystem::path& out) {
  auto model = load(type);
  LoraRun run;
  run.base_perplexity = held_out_perplexity(model);
  inference::LoraConfig lora;
  lora.r = 8;
  lora.alpha = 16;
  lora.target_modules = {"q_proj", "v_proj"};
  model.add_adapter("site", inference::LoraAdapter::create(model.config(), lora, 1));
  TrainOptions o;
  o.steps = 24;
  o.batch_size = 8;
  o.lr = 5e-3;
  o.warmup_steps = 4;
  o.seed = 2;
  o.log_every = 0;
  auto data = tokens_of(pretrained().site().train_text);
  auto trainer = Trainer::for_adapter(model, "site", data, o);
  auto history = trainer.run();
  constexpr int kLast = 6;  // one step's loss is one batch's: average the tail
  for (std::size_t i = history.size() - kLast; i < history.size(); ++i) run.final_loss += history[i].loss / kLast;
  run.adapted_perplexity = held_out_perplexity(model);
  model.adapter("site")->save(out);
  return run;
}

}  // namespace

TEST_CASE("held-out perplexity of a pretrained tiny base: Q8_0 within 1% and Q4_0 within 10% of f32",
          "[qlora][quant-quality][long]") {
  auto f32 = load(WeightType::kF32);
  auto q8 = load(WeightType::kQ8_0);
  auto q4 = load(WeightType::kQ4_0);
  const double p32 = held_out_perplexity(f32), p8 = held_out_perplexity(q8), p4 = held_out_perplexity(q4);
  INFO("perplexity f32 " << p32 << ", q8_0 " << p8 << ", q4_0 " << p4);
  // A base that learnt nothing would pass trivially: it must be far below
  // the uniform guess over the 261-token vocabulary.
  REQUIRE(p32 < 20.0);
  CHECK(std::abs(p8 / p32 - 1.0) < 0.01);
  CHECK(std::abs(p4 / p32 - 1.0) < 0.10);
  CHECK(p4 != p32);  // the Q4_0 base really is another model
}

TEST_CASE("QLoRA over a Q4_0 base lowers held-out perplexity as the bf16 path does and saves a PEFT adapter",
          "[qlora][long]") {
  testing::TempDir out("fedge_qlora_adapter_");
  const LoraRun reference = train_lora(WeightType::kF32, out.path / "f32");
  const LoraRun qlora = train_lora(WeightType::kQ4_0, out.path / "q4_0");
  INFO("f32 base: perplexity " << reference.base_perplexity << " -> " << reference.adapted_perplexity
                               << ", final loss " << reference.final_loss);
  INFO("q4_0 base: perplexity " << qlora.base_perplexity << " -> " << qlora.adapted_perplexity << ", final loss "
                                << qlora.final_loss);
  CHECK(reference.adapted_perplexity < 0.9 * reference.base_perplexity);
  CHECK(qlora.adapted_perplexity < 0.9 * qlora.base_perplexity);
  CHECK(std::abs(qlora.final_loss / reference.final_loss - 1.0) < 0.05);

  SECTION("the QLoRA adapter is an ordinary PEFT adapter: it loads onto the f32 base and helps there too") {
    auto f32 = load(WeightType::kF32);
    const double before = held_out_perplexity(f32);
    f32.add_adapter("q", inference::LoraAdapter::load(out.path / "q4_0", f32.config()));
    f32.set_active_adapter("q");
    const double after = held_out_perplexity(f32);
    INFO("f32 base with the QLoRA adapter: perplexity " << before << " -> " << after);
    CHECK(after < 0.9 * before);
    CHECK(std::abs(after / qlora.adapted_perplexity - 1.0) < 0.10);
  }
}

TEST_CASE("fedge train --weights q4_0 trains over the packed base and fedge eval scores it", "[qlora][long]") {
  testing::TempDir out("fedge_qlora_cli_");
  write_jsonl(out.path / "train.jsonl", pretrained().site().train_text);
  write_jsonl(out.path / "eval.jsonl", pretrained().site().eval_text);
  TrainCommand train;
  train.model = pretrained().path();
  train.load.weights = WeightType::kQ4_0;
  train.data.path = (out.path / "train.jsonl").string();
  train.out = (out.path / "adapter").string();
  train.seq_len = kSeqLen;
  train.pack = false;
  train.options.steps = 3;
  train.options.batch_size = 4;
  train.options.log_every = 0;
  REQUIRE(run_train(train) == 0);
  auto adapter = inference::LoraAdapter::load(train.out, inference::ModelConfig::tiny());
  CHECK(adapter.config().target_modules == std::vector<std::string>{"q_proj", "v_proj"});
  // The adapter loads onto the f32 base through the same command path.
  EvalCommand eval;
  eval.model = pretrained().path();
  eval.adapter = train.out;
  eval.data.path = (out.path / "eval.jsonl").string();
  eval.seq_len = kSeqLen;
  eval.accuracy = false;
  REQUIRE(run_eval(eval) == 0);
  eval.load.weights = WeightType::kQ8_0;
  REQUIRE(run_eval(eval) == 0);
}
