// ChatTemplate: a model's Jinja chat template with its special tokens.
#include "fedge/inference/chat_template.h"

#include "fedge/inference/tokenizer.h"

namespace fedge::inference {

ChatTemplate::ChatTemplate(std::string_view source, nlohmann::ordered_json special_tokens, jinja::Limits limits)
    : source_(source), template_(source, limits), special_tokens_(std::move(special_tokens)) {}

ChatTemplate ChatTemplate::for_tokenizer(const Tokenizer& tokenizer) {
  nlohmann::ordered_json tokens = nlohmann::ordered_json::object();
  if (auto bos = tokenizer.bos_id()) tokens["bos_token"] = tokenizer.id_to_token(*bos);
  if (auto eos = tokenizer.eos_ids(); !eos.empty()) tokens["eos_token"] = tokenizer.id_to_token(eos.front());
  if (auto pad = tokenizer.pad_id()) tokens["pad_token"] = tokenizer.id_to_token(*pad);
  if (auto unk = tokenizer.unk_token()) tokens["unk_token"] = *unk;
  const std::string& source = tokenizer.chat_template();
  return ChatTemplate(source.empty() ? kFedgeChatTemplate : std::string_view(source), std::move(tokens));
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::ordered_json context = special_tokens_;
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = add_generation_prompt;
  return template_.render(context);
}

}  // namespace fedge::inference
