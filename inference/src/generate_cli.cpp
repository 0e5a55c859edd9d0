// `fedge generate`'s logic and complete model directories: the parts of
// generation that need the tokenizer library.
#include <cstdio>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/inference/generate.h"
#include "fedge/inference/torch_setup.h"

namespace fedge::inference {

void save_model_dir(const Model& model, const std::filesystem::path& dir, const Tokenizer* tokenizer) {
  model.save(dir);
  if (tokenizer) tokenizer->save(dir);
}

int run_generate(const GenerateCommand& cmd, std::FILE* out) {
  const int threads = setup_torch(cmd.threads);
  LoadOptions options;
  options.weights = cmd.weights;
  auto [model, tokenizer] = load_model_spec(cmd.model, options);
  if (tokenizer.vocab_size() > model.config().vocab_size)
    throw Error(ErrorKind::kInvalidInput, "tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                                              " tokens but the model only " + std::to_string(model.config().vocab_size));
  if (!cmd.adapter.empty()) {
    model.add_adapter("cli", LoraAdapter::load(cmd.adapter, model.config()));
    model.set_active_adapter("cli");
  }
  std::vector<TokenId> prompt = tokenizer.encode(cmd.prompt, true);
  if (prompt.empty()) throw Error(ErrorKind::kInvalidInput, "prompt is empty");
  auto results = generate(model, {prompt}, cmd.sampling, &tokenizer, [out](int, TokenId, std::string_view text) {
    if (!text.empty()) {
      std::fwrite(text.data(), 1, text.size(), out);
      std::fflush(out);
    }
    return true;
  });
  std::fputc('\n', out);
  std::fflush(out);
  const auto& r = results[0];
  const double pre = r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0;
  const double dec = r.decode_seconds > 0 ? r.decoded_steps / r.decode_seconds : 0;
  std::fprintf(stderr, "prefill: %d tokens, %.1f tokens/s; decode: %zu tokens, %.1f tokens/s (%d threads, stop: %s)\n",
               r.prompt_tokens, pre, r.tokens.size(), dec, threads, r.stop_reason.c_str());
  return 0;
}

}  // namespace fedge::inference
