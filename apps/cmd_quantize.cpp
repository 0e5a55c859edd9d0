// `fedge quantize`: parse flags, then hand over to the inference library,
// which writes the model as a GGUF file (progress on stderr through spdlog).
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "fedge/inference/model_gguf.h"
#include "fedge/inference/torch_setup.h"

namespace fedge::apps {

void add_quantize_command(CLI::App& app, const GlobalOptions& global, CommandBody& chosen) {
  struct Flags {
    inference::QuantizeCommand command;
    std::string type = "q8_0", keep;
    std::string out;
  };
  auto flags = std::make_shared<Flags>();
  // Every in-memory type, and llama.cpp's Q4_K_M mix of q4_k and q6_k.
  auto types = inference::weight_type_names();
  types.emplace_back("q4_k_m");
  auto* sub = app.add_subcommand("quantize", "Write a model as a GGUF file (llama.cpp's format) in Q8_0, Q4_0, Q5_0, Q4_K, Q4_K_M, Q6_K, F16, BF16 or F32");
  sub->add_option("--model", flags->command.model, "Hugging Face model folder, a .gguf file, or 'tiny'")->required();
  sub->add_option("--out", flags->out, "the GGUF file to write (replaced atomically)")->required();
  sub->add_option("--type", flags->type, "type of the linear projections (q4_k and q6_k fall back to q5_0 and q8_0 for rows that are not whole 256-weight "
                  "super-blocks, as llama.cpp does; q4_k_m: q4_k with llama.cpp's Q4_K_M choice of q6_k tensors)")
      ->check(CLI::IsMember(types))->capture_default_str();
  sub->add_option("--keep", flags->keep, "type of the token embedding and LM head (default: --type)")
      ->check(CLI::IsMember(inference::weight_type_names()));
  sub->add_option("--compare", flags->command.compare_prompt,
                  "after writing, load the file back and log how far this prompt's logits moved from the source's "
                  "(relative L2)");
  sub->add_option("--name", flags->command.name, "general.name in the file (default: the model folder's name)");
  sub->callback([&chosen, &global, flags] {
    flags->command.q4_k_m = flags->type == "q4_k_m";
    flags->command.type = inference::parse_weight_type(flags->command.q4_k_m ? "q4_k" : flags->type);
    if (!flags->keep.empty()) flags->command.keep = inference::parse_weight_type(flags->keep);
    flags->command.out = flags->out;
    chosen = [flags, &global] {
      inference::setup_torch(global.threads);
      const auto result = inference::run_quantize(flags->command);
      if (result.compare_relative_l2)
        std::printf("logits relative L2 vs %s as stored (%d-token --compare prompt): %.6f\n",
                    flags->command.model.c_str(), result.compare_tokens, *result.compare_relative_l2);
      return 0;
    };
  });
}

}  // namespace fedge::apps
