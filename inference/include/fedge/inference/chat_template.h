// A model's chat format: its Jinja chat template (tokenizer_config.json's
// chat_template or GGUF's tokenizer.chat_template) rendered over a list of
// messages, with the variables transformers passes (messages,
// add_generation_prompt, bos_token, eos_token, pad_token, unk_token). Serving
// renders chat requests with it and training renders chat records with it, so
// a model is trained on the format it is served with. Part of fedge_tokenizer
// (no libtorch).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fedge/inference/jinja.h"

namespace fedge::inference {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (templates may know more)
  std::string content;
};

// fedge's own chat format, the tiny preset's and the one for models without a
// template: each turn is "<|user|>" or "<|assistant|>" followed by its text; a
// system turn is folded into the next user turn (its text and "\n"); the
// generation prompt is "<|assistant|>". Other roles raise an error.
inline constexpr std::string_view kFedgeChatTemplate =
    "{%- set ns = namespace(system='') -%}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.role == 'system' -%}\n"
    "    {%- set ns.system = ns.system + message.content + '\\n' -%}\n"
    "  {%- elif message.role == 'user' -%}\n"
    "    {{- '<|user|>' + ns.system + message.content -}}\n"
    "    {%- set ns.system = '' -%}\n"
    "  {%- elif message.role == 'assistant' -%}\n"
    "    {{- '<|assistant|>' + message.content -}}\n"
    "  {%- else -%}\n"
    "    {{- raise_exception(\"message role '\" + message.role + \"' is not system, user or assistant\") -}}\n"
    "  {%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}\n";

class ChatTemplate {
 public:
  // Parses `source` (Error(kInvalidInput) naming line and column when it is
  // not a template fedge can run). `special_tokens` are extra variables, e.g.
  // {"bos_token": "<s>", "eos_token": "</s>"}.
  explicit ChatTemplate(std::string_view source, nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object(),
                        jinja::Limits limits = {});
  // The tokenizer's chat template with its special tokens' text, or fedge's
  // own format (kFedgeChatTemplate) when the model has none.
  static ChatTemplate for_tokenizer(const Tokenizer& tokenizer);

  // The conversation as the model reads it; with add_generation_prompt it
  // ends with the start of the assistant's turn. Errors (raise_exception, a
  // limit) are Error(kInvalidInput) naming the template's line and column.
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  jinja::Template template_;
  nlohmann::ordered_json special_tokens_;
};

}  // namespace fedge::inference
