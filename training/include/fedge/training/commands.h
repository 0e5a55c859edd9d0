// The logic of `fedge train`, `fedge eval` and `fedge pretrain`; apps/ only
// parses flags into these structs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/training/trainer.h"

namespace fedge::training {

// Where records come from: a .jsonl file, or a .csv file rendered through
// `csv_template`.
struct DataSource {
  std::string path;
  std::string csv_template;
  bool skip_bad = false;
  // Logs how many records were read and skipped. Chat records are rendered
  // with the model's chat template (ChatTemplate::for_tokenizer).
  std::vector<Record> read(const inference::Tokenizer& tokenizer) const;
};

struct TrainCommand {
  std::string model = "tiny";  // HF directory, or "tiny" (the random tiny preset, seed 0)
  // The base in memory; a quantized base (q8_0, q4_0) trains QLoRA: the base
  // stays packed, the adapter saved is an ordinary PEFT adapter.
  inference::LoadOptions load;
  DataSource data;
  std::string eval_path;       // optional held-out file (same format as data)
  std::string out;             // PEFT adapter directory to write
  int rank = 8;
  double alpha = 16.0;
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  double epochs = 0.0;         // when > 0, overrides options.steps
  int seq_len = 256;
  bool pack = true;            // pack text records into full sequences
  std::string checkpoint_dir;  // where checkpoints go (default OUT/checkpoint)
  int checkpoint_every = 0;    // steps; 0: only at the end
  std::string resume;          // checkpoint directory to resume from
  TrainOptions options;
};

struct EvalCommand {
  std::string model = "tiny";
  inference::LoadOptions load;  // the base in memory (a quantized base: its perplexity)
  std::string adapter;
  DataSource data;
  int seq_len = 256;
  int batch_size = 8;
  bool accuracy = true;  // for instruction data: exact match of greedy completions
};

struct PretrainCommand {
  DataSource data;
  std::string out;
  int seq_len = 128;
  std::uint64_t model_seed = 0;
  TrainOptions options;
};

int run_train(const TrainCommand& command);
int run_eval(const EvalCommand& command);
int run_pretrain(const PretrainCommand& command);  // pretrain_tiny(), then prints the folder
// Pretrains the tiny preset on `records` (command.data is not read) and writes
// the model folder command.out; prints nothing (a caller that moves the folder
// says where it ends up).
void pretrain_tiny(const std::vector<Record>& records, const PretrainCommand& command);

// Expands "q,v" or "q_proj,v_proj" or "all" into PEFT module names.
std::vector<std::string> parse_lora_targets(const std::string& text);

}  // namespace fedge::training
