// Chat templates: ChatTemplate over a tokenizer (the tiny preset keeps fedge's
// format; tokenizer_config.json's chat_template is read and written back), and
// the hidden [oracle] test that tests/chat_templates/check.sh runs (ctest) to
// compare fedge's renderings with @huggingface/jinja's, byte for byte.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "fedge/inference/chat_template.h"
#include "fixtures.h"

using namespace fixtures;
using fedge::inference::ChatMessage;
using fedge::inference::ChatTemplate;
using fedge::inference::kFedgeChatTemplate;

namespace {

std::filesystem::path template_dir() {
  return std::filesystem::path(FEDGE_SOURCE_DIR) / "tests" / "data" / "chat_templates";
}

std::vector<ChatMessage> to_messages(const Json& list) {
  std::vector<ChatMessage> messages;
  for (const auto& m : list) messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return messages;
}

}  // namespace

TEST_CASE("the tiny preset's chat template is fedge's format, byte for byte as before") {
  const Tokenizer tiny = Tokenizer::byte_level_tiny();
  CHECK(tiny.chat_template() == kFedgeChatTemplate);
  CHECK(read(template_dir() / "fedge.jinja") == kFedgeChatTemplate);  // the test data is the shipped template
  const ChatTemplate chat = ChatTemplate::for_tokenizer(tiny);
  const std::vector<ChatMessage> m = {{"system", "be brief"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "rate?"}};
  CHECK(chat.render(m, true) == "<|user|>be brief\nhi<|assistant|>hello<|user|>rate?<|assistant|>");
  CHECK(chat.render(m, false) == "<|user|>be brief\nhi<|assistant|>hello<|user|>rate?");
  const std::vector<ChatMessage> bad = {{"tool", "x"}};
  CHECK_THROWS_WITH(chat.render(bad, true), Catch::Contains("message role 'tool' is not system, user or assistant"));
}

TEST_CASE("a model's chat_template comes from tokenizer_config.json and is written back") {
  TempDir dir;
  write(dir.path / "tokenizer.json", text("sentencepiece.json"));
  SECTION("a string, rendered with the config's special tokens") {
    write(dir.path / "tokenizer_config.json",
          R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{{ unk_token }}"})");
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    const std::vector<ChatMessage> m = {{"user", "hi"}};
    CHECK(ChatTemplate::for_tokenizer(t).render(m, true) == "<s>[user] hi</s><unk>");
    TempDir out;
    t.save(out.path);
    CHECK(Tokenizer::from_dir(out.path).chat_template() == t.chat_template());
  }
  SECTION("a list of named templates: the default one") {
    write(dir.path / "tokenizer_config.json",
          R"({"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "chat"}]})");
    CHECK(Tokenizer::from_dir(dir.path).chat_template() == "chat");
  }
  SECTION("no template: fedge's format") {
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK(t.chat_template().empty());
    CHECK(ChatTemplate::for_tokenizer(t).source() == kFedgeChatTemplate);
  }
  SECTION("a mistyped chat_template names the file and the field") {
    write(dir.path / "tokenizer_config.json", R"({"chat_template": 7})");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("tokenizer_config.json: chat_template must be"));
    write(dir.path / "tokenizer_config.json", R"({"chat_template": [{"name": "default"}]})");
    CHECK_THROWS_WITH(Tokenizer::from_dir(dir.path), Catch::Contains("chat_template must be"));
  }
  SECTION("a template fedge cannot parse is an error naming line and column") {
    write(dir.path / "tokenizer_config.json", R"({"chat_template": "{% for m in messages %}\n{{ m.content }"})");
    const Tokenizer t = Tokenizer::from_dir(dir.path);
    CHECK_THROWS_WITH(ChatTemplate::for_tokenizer(t), Catch::Contains("chat template line 2, column 1"));
  }
}

TEST_CASE("a prompt that starts with BOS itself gets no second BOS") {
  const Tokenizer tiny = Tokenizer::byte_level_tiny();
  const auto bos = *tiny.bos_id();
  CHECK(tiny.encode("<|bos|><|user|>hi") == std::vector<TokenId>{bos, 259, 'h', 'i'});
  CHECK(tiny.encode("<|user|>hi") == std::vector<TokenId>{bos, 259, 'h', 'i'});
  CHECK(tiny.encode("<|bos|>x", false) == std::vector<TokenId>{bos, 'x'});
}

// Run by tests/chat_templates/check.sh (ctest), which renders the reference
// with node first; hidden from plain runs, which have no reference file.
TEST_CASE("chat templates render as @huggingface/jinja renders them", "[.oracle]") {
  const char* path = std::getenv("FEDGE_CHAT_TEMPLATE_REFERENCE");
  REQUIRE(path != nullptr);  // set by tests/chat_templates/check.sh
  const Json reference = Json::parse(read(path));
  const auto& cases = reference.at("cases");
  REQUIRE(cases.size() > 100);
  std::size_t templates = 0, features = 0, errors = 0;
  for (const auto& c : cases) {
    const bool feature = c.contains("feature");
    const std::string source = feature ? c.at("source").get<std::string>()
                                       : read(template_dir() / c.at("file").get<std::string>());
    const std::string name = feature ? "feature '" + c.at("feature").get<std::string>() + "'"
                                     : "template " + c.at("template").get<std::string>();
    INFO(name << ", conversation '" << c.at("conversation").get<std::string>()
              << "', add_generation_prompt=" << c.at("add_generation_prompt").get<bool>());
    const Json conversations = Json::parse(read(std::filesystem::path(FEDGE_SOURCE_DIR) / "tests" / "chat_templates" /
                                                "conversations.json"))
                                   .at("conversations");
    std::vector<ChatMessage> messages;
    for (const auto& conv : conversations)
      if (conv.at("name") == c.at("conversation")) messages = to_messages(conv.at("messages"));
    REQUIRE_FALSE(messages.empty());
    std::string rendered, error;
    try {
      rendered = ChatTemplate(source, c.at("variables")).render(messages, c.at("add_generation_prompt").get<bool>());
    } catch (const fedge::Error& e) {
      error = e.what();
    }
    if (c.contains("error")) {
      INFO("@huggingface/jinja failed with: " << c.at("error").get<std::string>());
      CHECK_FALSE(error.empty());
      ++errors;
    } else {
      INFO("fedge's error: " << error);
      CHECK(rendered == c.at("output").get<std::string>());
    }
    ++(feature ? features : templates);
  }
  WARN("compared " << templates << " template renderings and " << features << " feature snippets (" << errors
                   << " expected errors) with " << reference.at("reference").get<std::string>());
}
