// `fedge generate`: parse flags, then hand over to the inference library,
// which streams only the continuation to stdout and speed figures to stderr.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "fedge/common/error.h"
#include "fedge/inference/generate.h"

namespace fedge::apps {

void add_generate_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  auto options = std::make_shared<inference::GenerateCommand>();
  auto* sub = app.add_subcommand("generate", "Generate text with a local model (streams the continuation)");
  sub->add_option("--model", options->model, "Hugging Face model folder, a .gguf file, or 'tiny' for the built-in preset")
      ->capture_default_str();
  sub->add_option("--adapter", options->adapter, "PEFT LoRA adapter folder to apply");
  sub->add_option("--prompt", options->prompt, "prompt text")->required();
  sub->add_option("--max-tokens", options->sampling.max_tokens, "most tokens to generate")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  sub->add_option("--temperature", options->sampling.temperature, "sampling temperature (0: greedy)")
      ->capture_default_str()->check(CLI::Range(0.0, 100.0));
  sub->add_option("--top-k", options->sampling.top_k, "keep the k most likely tokens (0: off)")
      ->check(CLI::Range(0, 1 << 30));
  sub->add_option("--top-p", options->sampling.top_p, "nucleus sampling mass (1: off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--repetition-penalty", options->sampling.repetition_penalty, "penalty for repeated tokens (1: off)");
  sub->add_option("--stop", options->sampling.stop_strings, "stop when this text appears (repeatable)");
  sub->add_option("--seed", options->sampling.seed, "sampling seed")->capture_default_str();
  auto dtype = std::make_shared<std::string>();
  sub->add_option("--weights,--dtype", *dtype,
                  "weights in memory: f32, bf16, f16, or GGUF's blocks q8_0, q4_0, q5_0, q4_k, q6_k; default f32 for a directory, "
                  "the file's own types for a .gguf file")
      ->check(CLI::IsMember(inference::weight_type_names()));
  sub->callback([&chosen, &global, options, dtype] {
    if (!dtype->empty()) options->weights = inference::parse_weight_type(*dtype);
    chosen = [options, &global] {
      options->threads = global.threads;
      return inference::run_generate(*options, stdout);
    };
  });
}

}  // namespace fedge::apps
