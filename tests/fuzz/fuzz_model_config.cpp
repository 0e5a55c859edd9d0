// libFuzzer target for a model directory's JSON configs: the input is read as
// config.json (inference/model_config.h, ModelConfig::from_json_text), and as
// tokenizer_config.json and generation_config.json over the tiny tokenizer
// (Tokenizer::apply_tokenizer_config / apply_generation_config, as
// Tokenizer::from_dir reads them). Built and run by scripts/fuzz.sh
// (docs/FUZZING.md).
// Every read must either be refused with fedge::Error or succeed. An accepted
// config.json validates, gives finite RoPE frequencies, and its own
// config.json (to_json_text) reads back to an equal config; an accepted
// tokenizer config leaves BOS, EOS and PAD ids inside the vocabulary. Anything
// else (crash, other exception, sanitizer report) is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/inference/model_config.h"
#include "fedge/inference/tokenizer.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void read_model_config(std::string_view text) {
  using fedge::inference::ModelConfig;
  ModelConfig config;
  try {
    config = ModelConfig::from_json_text(text, "fuzz/config.json");
  } catch (const fedge::Error&) {
    return;
  }
  config.validate("accepted");
  (void)config.num_parameters();
  for (double f : fedge::inference::rope_inv_freq(config)) check(std::isfinite(f));
  check(ModelConfig::from_json_text(config.to_json_text(), "written") == config);
}

// One tokenizer for every input: making one costs about 35 ms under ASan (a
// fresh one per input ran 30 inputs a second). Settings an input leaves behind
// are only ever ids of the vocabulary, which is what is checked, so a failure
// still comes from the input that shows it.
void read_tokenizer_configs(std::string_view text) {
  static auto tok = fedge::inference::Tokenizer::byte_level_tiny();
  auto in_vocab = [&](std::optional<fedge::inference::TokenId> id) {
    return !id || (*id >= 0 && *id < tok.vocab_size());
  };
  for (bool generation : {false, true}) {
    try {
      if (generation) tok.apply_generation_config(text, "fuzz/generation_config.json");
      else tok.apply_tokenizer_config(text, "fuzz/tokenizer_config.json");
    } catch (const fedge::Error&) {
    }
    check(in_vocab(tok.bos_id()) && in_vocab(tok.pad_id()));
    for (auto id : tok.eos_ids()) check(in_vocab(id));
  }
  (void)tok.encode("<|user|>hi");
}

}  // namespace

// A token name the vocabulary lacks is logged and ignored: keep the log quiet.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  read_model_config(text);
  read_tokenizer_configs(text);
  return 0;
}
