#include "fedge/training/commands.h"

#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/machine.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/lora.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"

namespace fedge::training {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool all_instructions(const std::vector<Record>& records) {
  for (const auto& r : records) {
    if (!r.is_instruction()) return false;
  }
  return !records.empty();
}

std::int64_t steps_for_epochs(double epochs, std::size_t sequences, const TrainOptions& o) {
  double per_step = static_cast<double>(o.batch_size) * o.grad_accum;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(epochs * sequences / per_step)));
}

}  // namespace

std::vector<Record> DataSource::read(const inference::Tokenizer& tokenizer) const {
  const auto chat = inference::ChatTemplate::for_tokenizer(tokenizer);
  ReadOptions options;
  options.skip_bad = skip_bad;
  options.chat_template = &chat;
  ReadReport report;
  std::vector<Record> records;
  if (ends_with(path, ".csv")) {
    if (csv_template.empty()) {
      throw Error(ErrorKind::kInvalidInput, path + ": a CSV file needs --template (e.g. \"{date} {well}: {liquid}\")");
    }
    records = read_csv(path, csv_template, options, &report);
  } else {
    records = read_jsonl(path, options, &report);
  }
  if (report.skipped > 0) {
    spdlog::warn("{}: skipped {} bad records (first: {})", path, report.skipped, report.first_problems.front());
  }
  if (records.empty()) throw Error(ErrorKind::kInvalidInput, path + ": no records");
  spdlog::info("{}: {} records", path, records.size());
  return records;
}

std::vector<std::string> parse_lora_targets(const std::string& text) {
  static const std::vector<std::string> kAll = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};
  if (text == "all") return kAll;
  std::vector<std::string> targets;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) {
      std::string name = ends_with(item, "_proj") ? item : item + "_proj";
      if (std::find(kAll.begin(), kAll.end(), name) == kAll.end()) {
        throw Error(ErrorKind::kInvalidInput, "--targets: '" + item + "' is not one of q, k, v, o, gate, up, down");
      }
      targets.push_back(name);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (targets.empty()) throw Error(ErrorKind::kInvalidInput, "--targets: name at least one projection");
  return targets;
}

int run_train(const TrainCommand& command) {
  auto [model, tokenizer] = inference::load_model_spec(command.model, command.load);
  auto records = command.data.read(tokenizer);
  auto train = TokenDataset::build(tokenizer, records, command.seq_len, command.pack && !all_instructions(records));
  TrainOptions options = command.options;
  if (command.epochs > 0) options.steps = steps_for_epochs(command.epochs, train.size(), options);

  inference::LoraConfig lora;
  lora.r = command.rank;
  lora.alpha = command.alpha;
  lora.target_modules = command.targets;
  lora.base_model_name_or_path = command.model;
  lora.validate("--rank/--alpha/--targets");
  model.add_adapter("train", inference::LoraAdapter::create(model.config(), lora, options.seed));
  auto trainer = Trainer::for_adapter(model, "train", train, options);
  std::string checkpoint_dir = command.checkpoint_dir.empty() ? command.out + "/checkpoint" : command.checkpoint_dir;
  if (!command.resume.empty()) {
    trainer.load_checkpoint(command.resume);
    spdlog::info("resumed from {} at step {}", command.resume, trainer.current_step());
  }
  spdlog::info("training LoRA r={} alpha={} over a {} base on {} sequences ({} target tokens), {} steps", lora.r,
               lora.alpha, inference::weight_type_name(model.weight_type()), train.size(), train.target_tokens(),
               options.steps);
  trainer.run([&](const StepStats& stats) {
    if (command.checkpoint_every > 0 && stats.step % command.checkpoint_every == 0) {
      trainer.save_checkpoint(checkpoint_dir);
    }
  });
  trainer.save_checkpoint(checkpoint_dir);
  model.adapter("train")->save(command.out);
  std::printf("adapter: %s\n", command.out.c_str());
  if (!command.eval_path.empty()) {
    DataSource eval_source = command.data;
    eval_source.path = command.eval_path;
    auto eval = TokenDataset::build(tokenizer, eval_source.read(tokenizer), command.seq_len, false);
    auto result = evaluate_loss(model, eval);
    std::printf("eval loss %.4f  perplexity %.3f  (%lld tokens)\n", result.loss, result.perplexity,
                static_cast<long long>(result.tokens));
  }
  spdlog::info("peak RSS {:.0f} MB", peak_rss_megabytes());
  return 0;
}

int run_eval(const EvalCommand& command) {
  auto [model, tokenizer] = inference::load_model_spec(command.model, command.load);
  if (!command.adapter.empty()) {
    model.add_adapter("eval", inference::LoraAdapter::load(command.adapter, model.config()));
    model.set_active_adapter("eval");
  }
  auto records = command.data.read(tokenizer);
  auto data = TokenDataset::build(tokenizer, records, command.seq_len, false);
  auto result = evaluate_loss(model, data, command.batch_size);
  std::printf("loss %.4f\nperplexity %.3f\ntokens %lld\n", result.loss, result.perplexity,
              static_cast<long long>(result.tokens));
  if (command.accuracy && all_instructions(records)) {
    std::printf("accuracy %.4f\n", exact_match_accuracy(model, tokenizer, records));
  }
  return 0;
}

void pretrain_tiny(const std::vector<Record>& records, const PretrainCommand& command) {
  auto model = inference::Model::tiny(command.model_seed);
  auto tokenizer = inference::Tokenizer::byte_level_tiny();
  auto data = TokenDataset::build(tokenizer, records, command.seq_len, /*pack=*/true);
  spdlog::info("pretraining the tiny preset ({} parameters) on {} sequences of {} tokens, {} steps",
               model.config().num_parameters(), data.size(), command.seq_len, command.options.steps);
  auto trainer = Trainer::full(model, data, command.options);
  trainer.run();
  inference::save_model_dir(model, command.out, &tokenizer);
}

int run_pretrain(const PretrainCommand& command) {
  pretrain_tiny(command.data.read(inference::Tokenizer::byte_level_tiny()), command);
  std::printf("model: %s\n", command.out.c_str());
  return 0;
}

}  // namespace fedge::training
