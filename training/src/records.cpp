#include "fedge/training/records.h"

#include <fstream>
#include <span>
#include <sstream>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"

namespace fedge::training {
namespace {

// One line over this is hostile or broken input, not a training record.
constexpr std::size_t kMaxLineBytes = 16u << 20;

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kNotFound, path.string() + ": cannot open data file (check the path)");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string where(std::string_view source, std::size_t line) {
  return std::string(source) + ":" + std::to_string(line);
}

// Calls on_line(line_number, line) for every line (without its '\n' or '\r').
template <typename OnLine>
void for_each_line(std::string_view text, OnLine on_line) {
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    on_line(number, line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

// Runs parse_one on a line; a bad line becomes an error, or with skip_bad a
// counted skip.
template <typename ParseOne>
void guarded(const ReadOptions& options, ReadReport& report, std::vector<Record>& out, ParseOne parse_one) {
  try {
    out.push_back(parse_one());
    ++report.records;
  } catch (const Error& e) {
    if (!options.skip_bad || e.kind() != ErrorKind::kInvalidInput) throw;
    ++report.skipped;
    if (report.first_problems.size() < 10) report.first_problems.emplace_back(e.what());
  }
}

[[noreturn]] void bad(const std::string& at, const std::string& reason) {
  throw Error(ErrorKind::kInvalidInput, at + ": " + reason);
}

std::string string_field(const nlohmann::json& object, const char* key, const std::string& at) {
  const auto& value = object.at(key);
  if (!value.is_string()) bad(at, std::string("field '") + key + "' must be a string, got " + value.type_name());
  return value.get<std::string>();
}

Record record_from_json(std::string_view line, const std::string& at, const inference::ChatTemplate& chat) {
  if (line.size() > kMaxLineBytes) bad(at, "line is longer than 16 MiB");
  nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) bad(at, "not valid JSON");
  if (!object.is_object()) bad(at, std::string("expected a JSON object, got ") + object.type_name());
  if (object.contains("text")) return Record{"", string_field(object, "text", at)};
  if (object.contains("prompt") || object.contains("completion")) {
    if (!object.contains("prompt") || !object.contains("completion")) {
      bad(at, "a prompt record needs both 'prompt' and 'completion'");
    }
    return Record{string_field(object, "prompt", at), string_field(object, "completion", at)};
  }
  if (object.contains("messages")) {
    const auto& list = object["messages"];
    if (!list.is_array()) bad(at, std::string("field 'messages' must be an array, got ") + list.type_name());
    std::vector<ChatMessage> messages;
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::string item_at = at + ": messages[" + std::to_string(i) + "]";
      if (!list[i].is_object() || !list[i].contains("role") || !list[i].contains("content")) {
        bad(item_at, "each message needs 'role' and 'content'");
      }
      messages.push_back({string_field(list[i], "role", item_at), string_field(list[i], "content", item_at)});
    }
    try {
      return record_from_chat(messages, chat);
    } catch (const Error& e) {
      bad(at, e.what());
    }
  }
  bad(at, "expected a 'text', 'prompt'/'completion' or 'messages' field");
}

const inference::ChatTemplate& fedge_chat_template() {
  static const inference::ChatTemplate chat{inference::kFedgeChatTemplate};
  return chat;
}

}  // namespace

Record record_from_chat(const std::vector<ChatMessage>& messages) { return record_from_chat(messages, fedge_chat_template()); }

Record record_from_chat(const std::vector<ChatMessage>& messages, const inference::ChatTemplate& chat) {
  std::size_t last_assistant = messages.size();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      throw Error(ErrorKind::kInvalidInput, "message role '" + role + "' is not system, user or assistant");
    }
    if (role == "assistant") last_assistant = i;
  }
  if (last_assistant == messages.size()) {
    throw Error(ErrorKind::kInvalidInput, "a chat record needs at least one assistant message");
  }
  const std::span<const ChatMessage> turns(messages);
  std::string prompt = chat.render(turns.first(last_assistant), /*add_generation_prompt=*/true);
  std::string full = chat.render(turns.first(last_assistant + 1), /*add_generation_prompt=*/false);
  if (!full.starts_with(prompt)) {
    throw Error(ErrorKind::kInvalidInput,
                "the chat template renders the conversation through the last assistant turn so that it does not "
                "start with the prompt it renders for that turn (add_generation_prompt); the completion cannot be "
                "told apart");
  }
  std::string completion = full.substr(prompt.size());
  return Record{std::move(prompt), std::move(completion)};
}

std::vector<Record> parse_jsonl(std::string_view text, std::string_view source_name, const ReadOptions& options,
                                ReadReport* report) {
  ReadReport local;
  ReadReport& r = report ? *report : local;
  std::vector<Record> records;
  for_each_line(text, [&](std::size_t number, std::string_view line) {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return;
    const inference::ChatTemplate& chat = options.chat_template ? *options.chat_template : fedge_chat_template();
    guarded(options, r, records, [&] { return record_from_json(line, where(source_name, number), chat); });
  });
  return records;
}

std::vector<Record> read_jsonl(const std::filesystem::path& path, const ReadOptions& options, ReadReport* report) {
  return parse_jsonl(read_file(path), path.string(), options, report);
}

std::vector<std::string> split_csv_line(std::string_view line, std::string_view at) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  bool after_quote = false;  // a quoted field just closed: only ',' may follow
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c != '"') {
        fields.back() += c;
      } else if (i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else {
        quoted = false;
        after_quote = true;
      }
    } else if (c == ',') {
      fields.emplace_back();
      after_quote = false;
    } else if (after_quote) {
      bad(std::string(at), "text after a closing quote in field " + std::to_string(fields.size()));
    } else if (c == '"' && fields.back().empty()) {
      quoted = true;
    } else {
      fields.back() += c;
    }
  }
  if (quoted) bad(std::string(at), "unterminated quoted field " + std::to_string(fields.size()));
  return fields;
}

std::string render_template(std::string_view text_template, const std::map<std::string, std::string>& values,
                            std::string_view at) {
  std::string out;
  for (std::size_t i = 0; i < text_template.size();) {
    if (text_template[i] != '{') {
      out += text_template[i++];
      continue;
    }
    std::size_t close = text_template.find('}', i);
    if (close == std::string_view::npos) bad(std::string(at), "template has an unclosed '{'");
    std::string name(text_template.substr(i + 1, close - i - 1));
    auto found = values.find(name);
    if (found == values.end()) bad(std::string(at), "template names column '" + name + "', which the CSV lacks");
    out += found->second;
    i = close + 1;
  }
  return out;
}

std::vector<Record> parse_csv(std::string_view text, std::string_view source_name, std::string_view text_template,
                              const ReadOptions& options, ReadReport* report) {
  ReadReport local;
  ReadReport& r = report ? *report : local;
  std::vector<std::string> header;
  std::vector<Record> records;
  for_each_line(text, [&](std::size_t number, std::string_view line) {
    std::string at = where(source_name, number);
    if (line.size() > kMaxLineBytes) bad(at, "line is longer than 16 MiB");
    if (header.empty()) {
      header = split_csv_line(line, at);
      std::map<std::string, std::string> probe;
      for (const auto& name : header) probe[name] = "";
      render_template(text_template, probe, std::string(source_name) + ": header");  // columns exist?
      return;
    }
    if (line.empty()) return;
    guarded(options, r, records, [&] {
      auto fields = split_csv_line(line, at);
      if (fields.size() != header.size()) {
        bad(at, "expected " + std::to_string(header.size()) + " fields (as the header), got " +
                    std::to_string(fields.size()));
      }
      std::map<std::string, std::string> values;
      for (std::size_t i = 0; i < header.size(); ++i) values[header[i]] = fields[i];
      return Record{"", render_template(text_template, values, at)};
    });
  });
  if (header.empty()) bad(std::string(source_name), "empty CSV file (no header row)");
  return records;
}

std::vector<Record> read_csv(const std::filesystem::path& path, std::string_view text_template,
                             const ReadOptions& options, ReadReport* report) {
  return parse_csv(read_file(path), path.string(), text_template, options, report);
}

void write_jsonl(const std::filesystem::path& path, const std::vector<Record>& records) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  if (!out) throw Error(ErrorKind::kIo, path.string() + ": cannot open for writing");
  for (const auto& record : records) {
    nlohmann::json line = record.is_instruction()
                              ? nlohmann::json{{"prompt", record.prompt}, {"completion", record.completion}}
                              : nlohmann::json{{"text", record.completion}};
    out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  }
  if (!out) throw Error(ErrorKind::kIo, path.string() + ": write failed (disk full?)");
}

}  // namespace fedge::training
