// libFuzzer target for chat templates (inference/jinja.h, chat_template.h): a
// model's chat_template comes from its tokenizer_config.json or GGUF file, so
// it is untrusted input. Built and run by scripts/fuzz.sh (docs/FUZZING.md).
// The input is a template: it must parse and render (over a small conversation,
// generation prompt off and on) or throw fedge::Error, within small limits;
// anything else (crash, other exception, sanitizer report, a result over the
// output limit, a stack overflow from deep nesting) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/inference/chat_template.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  // Small limits keep each input fast; the real ones only scale them.
  fedge::inference::jinja::Limits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_steps = 200'000;
  const std::vector<fedge::inference::ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi \xc3\xa9"}, {"assistant", "<think>\nx\n</think>\n\nYo"}, {"user", "Status?"}};
  try {
    const fedge::inference::ChatTemplate chat(source, {{"bos_token", "<s>"}, {"eos_token", "</s>"}}, limits);
    for (bool generation_prompt : {false, true}) {
      try {
        const std::string text = chat.render(messages, generation_prompt);
        check(text.size() <= limits.max_output_bytes);
      } catch (const fedge::Error&) {
      }
    }
  } catch (const fedge::Error&) {
  }
  return 0;
}
