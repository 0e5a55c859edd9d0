#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fedge/common/error.h"
#include "fedge/training/records.h"

using namespace fedge::training;
using Catch::Matchers::Contains;

namespace {

std::string error_of_jsonl(const std::string& text) {
  try {
    parse_jsonl(text, "d.jsonl");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    return e.what();
  }
  FAIL("bad JSONL accepted: " << text);
  return {};
}

}  // namespace

TEST_CASE("jsonl reads text, prompt/completion and chat records", "[records]") {
  auto records = parse_jsonl(
      "{\"text\": \"hello\"}\n"
      "\n"
      "{\"prompt\": \"Q?\", \"completion\": \"A.\"}\r\n"
      "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
      " {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Yo\"},"
      " {\"role\": \"user\", \"content\": \"Status?\"}, {\"role\": \"assistant\", \"content\": \"normal\"}]}\n",
      "d.jsonl");
  REQUIRE(records.size() == 3);
  CHECK(records[0].prompt.empty());
  CHECK(records[0].completion == "hello");
  CHECK(records[1].prompt == "Q?");
  CHECK(records[1].completion == "A.");
  CHECK(records[2].prompt == "<|user|>Be brief.\nHi<|assistant|>Yo<|user|>Status?<|assistant|>");
  CHECK(records[2].completion == "normal");
}

TEST_CASE("jsonl bad lines name the line and the reason", "[records]") {
  CHECK(error_of_jsonl("{\"text\": \"ok\"}\n{\"text\": 5}\n") == "d.jsonl:2: field 'text' must be a string, got number");
  CHECK(error_of_jsonl("{\"text\": \"ok\"}\n\n{not json\n") == "d.jsonl:3: not valid JSON");
  CHECK(error_of_jsonl("[1, 2]\n") == "d.jsonl:1: expected a JSON object, got array");
  CHECK(error_of_jsonl("{\"prompt\": \"x\"}\n") == "d.jsonl:1: a prompt record needs both 'prompt' and 'completion'");
  CHECK(error_of_jsonl("{\"other\": 1}\n") == "d.jsonl:1: expected a 'text', 'prompt'/'completion' or 'messages' field");
  CHECK_THAT(error_of_jsonl("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"),
             Contains("d.jsonl:1: a chat record needs at least one assistant message"));
  CHECK_THAT(error_of_jsonl("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}"),
             Contains("role 'robot'"));
  CHECK_THAT(error_of_jsonl("{\"messages\": [{\"role\": \"user\"}]}"), Contains("messages[0]"));
  CHECK_THAT(error_of_jsonl("{\"messages\": 3}"), Contains("field 'messages' must be an array"));
  CHECK(error_of_jsonl("{\"text\": \"trunc") == "d.jsonl:1: not valid JSON");
}

TEST_CASE("jsonl skip_bad counts and skips bad lines", "[records]") {
  ReadOptions options;
  options.skip_bad = true;
  ReadReport report;
  auto records = parse_jsonl("{\"text\": \"a\"}\nnope\n{\"text\": 1}\n{\"text\": \"b\"}\n", "d.jsonl", options, &report);
  REQUIRE(records.size() == 2);
  CHECK(records[1].completion == "b");
  CHECK(report.records == 2);
  CHECK(report.skipped == 2);
  REQUIRE(report.first_problems.size() == 2);
  CHECK(report.first_problems[0] == "d.jsonl:2: not valid JSON");
}

TEST_CASE("csv rows render through a template, quotes and escapes follow RFC 4180", "[records]") {
  auto records = parse_csv("date,well,liquid\n2024-01-02,\"A-1, east\",412\n2024-01-03,\"say \"\"hi\"\"\",7\n",
                           "p.csv", "{date} {well}: {liquid} bbl");
  REQUIRE(records.size() == 2);
  CHECK(records[0].completion == "2024-01-02 A-1, east: 412 bbl");
  CHECK(records[1].completion == "2024-01-03 say \"hi\": 7 bbl");
}

TEST_CASE("csv bad lines give their line number", "[records]") {
  REQUIRE_THROWS_WITH(parse_csv("a,b\n1,2\n3\n", "p.csv", "{a}{b}"),
                      "p.csv:3: expected 2 fields (as the header), got 1");
  REQUIRE_THROWS_WITH(parse_csv("a,b\n1,\"2\n", "p.csv", "{a}{b}"), "p.csv:2: unterminated quoted field 2");
  REQUIRE_THROWS_WITH(parse_csv("a,b\n\"1\"x,2\n", "p.csv", "{a}{b}"), "p.csv:2: text after a closing quote in field 1");
  REQUIRE_THROWS_WITH(parse_csv("a,b\n1,2\n", "p.csv", "{a}{c}"),
                      "p.csv: header: template names column 'c', which the CSV lacks");
  REQUIRE_THROWS_WITH(parse_csv("", "p.csv", "{a}"), "p.csv: empty CSV file (no header row)");
  REQUIRE_THROWS_WITH(parse_csv("a\n1\n", "p.csv", "{a"), Contains("unclosed '{'"));
}

TEST_CASE("jsonl written by fedge reads back", "[records]") {
  auto path = std::filesystem::temp_directory_path() / "fedge_test_records.jsonl";
  std::filesystem::remove(path);
  std::vector<Record> records = {{"", "plain \"quoted\" text\nline two"}, {"Q: 1+1?", "2"}};
  write_jsonl(path, records);
  auto back = read_jsonl(path);
  REQUIRE(back.size() == 2);
  CHECK(back[0].completion == records[0].completion);
  CHECK(back[1].prompt == "Q: 1+1?");
  std::filesystem::remove(path);
  REQUIRE_THROWS_AS(read_jsonl(path), fedge::Error);
}

namespace {

std::string template_text(const std::string& file) {
  std::ifstream in(std::filesystem::path(FEDGE_SOURCE_DIR) / "tests" / "data" / "chat_templates" / file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("chat records render with the model's chat template: prompt, then the reply as the template ends it",
          "[records]") {
  using fedge::inference::ChatTemplate;
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Yo"}};
  SECTION("Qwen 2.5 (ChatML)") {
    const ChatTemplate qwen(template_text("qwen2.5.jinja"), {{"eos_token", "<|im_end|>"}});
    const Record r = record_from_chat(chat, qwen);
    CHECK(r.prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    CHECK(r.completion == "Yo<|im_end|>\n");
    ReadOptions options;
    options.chat_template = &qwen;
    const auto records = parse_jsonl(
        R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})",
        "d.jsonl", options);
    REQUIRE(records.size() == 1);
    CHECK(records[0].prompt == r.prompt);
    CHECK(records[0].completion == r.completion);
  }
  SECTION("Llama 3: BOS written by the template, reply trimmed and ended with <|eot_id|>") {
    const ChatTemplate llama(template_text("llama3.jinja"), {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"}});
    const Record r = record_from_chat({{"user", "Hi"}, {"assistant", " Yo "}}, llama);
    CHECK(r.prompt == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n");
    CHECK(r.completion == "Yo<|eot_id|>");
  }
  SECTION("a template that raises names the line of the record and the template's message") {
    const ChatTemplate mistral(template_text("mistral-7b-instruct.jinja"), {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    ReadOptions options;
    options.chat_template = &mistral;
    CHECK_THROWS_WITH(parse_jsonl("\n" R"({"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]})",
                                  "d.jsonl", options),
                      Contains("d.jsonl:2") && Contains("Conversation roles must alternate"));
  }
  SECTION("a template whose full rendering does not extend the prompt is refused") {
    const ChatTemplate odd("{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}");
    CHECK_THROWS_WITH(record_from_chat({{"user", "Hi"}, {"assistant", "Yo"}}, odd), Contains("cannot be told apart"));
  }
}
