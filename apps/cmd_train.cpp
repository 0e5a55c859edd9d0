// `fedge train`, `fedge eval`, `fedge pretrain`: flags only; the logic is in
// training/src/commands.cpp.
#include <algorithm>
#include <memory>

#include "commands.h"
#include "fedge/training/commands.h"

namespace fedge::apps {
namespace {

void add_data_options(CLI::App* sub, training::DataSource& data) {
  sub->add_option("--data", data.path, "records: .jsonl (text, prompt/completion or messages) or .csv")
      ->required();
  sub->add_option("--template", data.csv_template, "for CSV: text template with {column} placeholders");
  sub->add_flag("--skip-bad", data.skip_bad, "skip malformed records (counted and logged) instead of failing");
}

void add_optimizer_options(CLI::App* sub, training::TrainOptions& o) {
  sub->add_option("--steps", o.steps, "optimizer steps")->check(CLI::Range(1, 100000000));
  sub->add_option("--batch", o.batch_size, "sequences per micro-batch")->check(CLI::Range(1, 4096));
  sub->add_option("--grad-accum", o.grad_accum, "micro-batches per step")->check(CLI::Range(1, 4096));
  sub->add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber);
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(CLI::NonNegativeNumber);
  sub->add_option("--warmup", o.warmup_steps, "warm-up steps")->check(CLI::NonNegativeNumber);
  sub->add_option("--schedule", o.schedule, "cosine, linear or constant")
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  sub->add_option("--max-grad-norm", o.max_grad_norm, "gradient-norm clip (0: off)")->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", o.seed, "seed for initialisation and data order");
  sub->add_option("--log-every", o.log_every, "steps between progress lines")->check(CLI::NonNegativeNumber);
  sub->add_flag("--gradient-checkpointing", o.gradient_checkpointing,
                "recompute each layer in backward: less memory, about a third more compute");
  sub->add_option("--checkpoint-layers", o.checkpoint_layers,
                  "recompute only the first N layers in backward (between no and full checkpointing)")
      ->check(CLI::NonNegativeNumber);
}

// `--weights TYPE` into load.weights (parsed when the command is chosen).
void add_weights_option(CLI::App* sub, inference::LoadOptions& load) {
  sub->add_option_function<std::string>(
         "--weights", [&load](const std::string& name) { load.weights = inference::parse_weight_type(name); },
         "base weights in memory: f32, bf16, f16, or GGUF's blocks q8_0, q4_0, q5_0, q4_k, q6_k (LoRA over blocks is QLoRA)")
      ->check(CLI::IsMember(inference::weight_type_names()))
      ->default_str("f32");
}

}  // namespace

void add_training_commands(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  auto train = std::make_shared<training::TrainCommand>();
  auto* t = app.add_subcommand("train", "Fine-tune a LoRA adapter on local data (writes a PEFT adapter)");
  t->add_option("--model", train->model, "Hugging Face model folder, or 'tiny'");
  add_weights_option(t, train->load);
  add_data_options(t, train->data);
  t->add_option("--eval", train->eval_path, "held-out records to score after training");
  t->add_option("--out", train->out, "adapter folder to write")->required();
  t->add_option("--rank", train->rank, "LoRA rank r")->check(CLI::Range(1, 4096));
  t->add_option("--alpha", train->alpha, "LoRA alpha (scale alpha/r)")->check(CLI::PositiveNumber);
  auto targets = std::make_shared<std::string>("q,v");
  t->add_option("--targets", *targets, "projections: q,k,v,o,gate,up,down or all");
  auto* epochs = t->add_option("--epochs", train->epochs, "passes over the data (instead of --steps)")
                     ->check(CLI::PositiveNumber);
  t->add_option("--seq-len", train->seq_len, "tokens per sequence")->check(CLI::Range(2, 1 << 20));
  t->add_flag("!--no-pack", train->pack, "one record per sequence instead of packing text");
  t->add_option("--fedprox-mu", train->options.fedprox_mu, "FedProx proximal weight (federated use)")
      ->check(CLI::NonNegativeNumber);
  t->add_option("--checkpoint-dir", train->checkpoint_dir, "checkpoint folder (default OUT/checkpoint)");
  t->add_option("--checkpoint-every", train->checkpoint_every, "steps between checkpoints")
      ->check(CLI::NonNegativeNumber);
  t->add_option("--resume", train->resume, "checkpoint folder to resume from");
  add_optimizer_options(t, train->options);
  t->add_flag("!--f32-base", train->options.frozen_base_bf16,
              "frozen base products in f32 (default: bf16 with f32 accumulation where the CPU has AVX512-BF16)");
  t->get_option("--steps")->excludes(epochs);
  t->callback([&chosen, train, targets] {
    train->targets = training::parse_lora_targets(*targets);
    chosen = [train] { return training::run_train(*train); };
  });

  auto eval = std::make_shared<training::EvalCommand>();
  auto* e = app.add_subcommand("eval", "Loss, perplexity (and accuracy for instruction data) of a model or adapter");
  e->add_option("--model", eval->model, "Hugging Face model folder, or 'tiny'");
  add_weights_option(e, eval->load);
  e->add_option("--adapter", eval->adapter, "PEFT adapter folder");
  add_data_options(e, eval->data);
  e->add_option("--seq-len", eval->seq_len, "tokens per sequence")->check(CLI::Range(2, 1 << 20));
  e->add_option("--batch", eval->batch_size, "sequences per batch")->check(CLI::Range(1, 4096));
  e->add_flag("!--no-accuracy", eval->accuracy, "skip greedy exact-match accuracy");
  e->callback([&chosen, eval] { chosen = [eval] { return training::run_eval(*eval); }; });

  auto pretrain = std::make_shared<training::PretrainCommand>();
  pretrain->options.steps = 300;
  pretrain->options.batch_size = 8;
  pretrain->options.lr = 3e-3;
  pretrain->options.warmup_steps = 20;
  pretrain->options.log_every = 25;
  auto* p = app.add_subcommand("pretrain", "Pretrain the tiny preset on a corpus (full parameters; writes a HF folder)");
  add_data_options(p, pretrain->data);
  p->add_option("--out", pretrain->out, "model folder to write")->required();
  p->add_option("--seq-len", pretrain->seq_len, "tokens per sequence")->check(CLI::Range(2, 512));
  p->add_option("--model-seed", pretrain->model_seed, "seed of the initial tiny model");
  add_optimizer_options(p, pretrain->options);
  p->callback([&chosen, pretrain, p] {
    // The default warm-up (20 steps) must fit a short run.
    if (p->get_option("--warmup")->count() == 0) {
      pretrain->options.warmup_steps = std::min<std::int64_t>(20, pretrain->options.steps / 10);
    }
    chosen = [pretrain] { return training::run_pretrain(*pretrain); };
  });
  (void)global;
}

}  // namespace fedge::apps
