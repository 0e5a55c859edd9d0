#include "fedge/training/records.h"
#include "fedge/training/data_files.h"

#include <algorithm>
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
template <typename T, typename ParseOne>
void guarded(const ReadOptions& options, ReadReport& report, std::vector<T>& out, ParseOne parse_one) {
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

nlohmann::json parse_object(std::string_view line, const std::string& at) {
  if (line.size() > kMaxLineBytes) bad(at, "line is longer than 16 MiB");
  nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) bad(at, "not valid JSON");
  if (!object.is_object()) bad(at, std::string("expected a JSON object, got ") + object.type_name());
  return object;
}

Record record_from_object(const nlohmann::json& object, const std::string& at, const inference::ChatTemplate& chat) {
  if (object.contains("text")) return Record{"", string_field(object, "text", at)};
  if (object.contains("prompt") || object.contains("completion")) {
    if (!object.contains("prompt") || !object.contains("completion")) {
      bad(at, "a prompt record needs both 'prompt' and 'completion'");
    }
    return Record{string_field(object, "prompt", at), string_field(object, "completion", at)};
  }
  if (object.contains("messages")) {
    const auto& list = object.at("messages");
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

Record record_from_json(std::string_view line, const std::string& at, const inference::ChatTemplate& chat) {
  return record_from_object(parse_object(line, at), at, chat);
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

namespace {

const inference::ChatTemplate& chat_of(const ReadOptions& options) {
  return options.chat_template ? *options.chat_template : fedge_chat_template();
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
  return out.empty() ? "no columns" : out;
}

std::vector<LocatedRecord> jsonl_records(std::string_view text, std::string_view source, std::string_view key_column,
                                         const ReadOptions& options, ReadReport& report) {
  std::vector<LocatedRecord> out;
  for_each_line(text, [&](std::size_t number, std::string_view line) {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return;
    guarded(options, report, out, [&] {
      const std::string at = where(source, number);
      const nlohmann::json object = parse_object(line, at);
      LocatedRecord located{record_from_object(object, at, chat_of(options)), number, ""};
      if (!key_column.empty()) {
        const std::string key(key_column);
        if (!object.contains(key)) bad(at, "field '" + key + "' (the site column) is missing");
        located.key = string_field(object, key.c_str(), at);
        if (located.key.empty()) bad(at, "field '" + key + "' (the site column) is empty");
      }
      return located;
    });
  });
  return out;
}

// Where each record's fields are in a data CSV's rows: a text column, or
// prompt and completion columns, and the key column if one was asked for.
struct CsvLayout {
  std::size_t fields = 0;
  std::ptrdiff_t text = -1, prompt = -1, completion = -1, key = -1;
};

CsvLayout csv_layout(const std::vector<std::string>& header, std::string_view key_column, const std::string& at) {
  CsvLayout layout;
  layout.fields = header.size();
  auto column = [&](std::string_view name) -> std::ptrdiff_t {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : it - header.begin();
  };
  layout.text = column("text");
  layout.prompt = column("prompt");
  layout.completion = column("completion");
  if (layout.text < 0 && layout.prompt < 0 && layout.completion < 0) {
    bad(at, "the header needs a 'text' column, or 'prompt' and 'completion' columns; it has " + joined(header));
  }
  if (layout.text < 0 && (layout.prompt < 0 || layout.completion < 0)) {
    bad(at, "the header has a '" + std::string(layout.prompt < 0 ? "completion" : "prompt") +
                "' column but no '" + (layout.prompt < 0 ? "prompt" : "completion") + "' column");
  }
  if (!key_column.empty()) {
    layout.key = column(key_column);
    if (layout.key < 0) bad(at, "the header has no '" + std::string(key_column) + "' column (the site column); it has " + joined(header));
  }
  return layout;
}

LocatedRecord csv_record(const std::vector<std::string>& fields, const CsvLayout& layout,
                         const std::vector<std::string>& header, std::size_t line, const std::string& at) {
  if (fields.size() != layout.fields) {
    bad(at, "expected " + std::to_string(layout.fields) + " fields (as the header), got " + std::to_string(fields.size()));
  }
  auto value = [&](std::ptrdiff_t i, bool may_be_empty) {
    const std::string& v = fields[static_cast<std::size_t>(i)];
    if (v.empty() && !may_be_empty) {
      bad(at, "column '" + header[static_cast<std::size_t>(i)] + "' (field " + std::to_string(i + 1) + ") is empty");
    }
    return v;
  };
  LocatedRecord located;
  located.line = line;
  located.record = layout.text >= 0 ? Record{"", value(layout.text, false)}
                                    : Record{value(layout.prompt, true), value(layout.completion, false)};
  if (layout.key >= 0) located.key = value(layout.key, false);
  return located;
}

std::vector<LocatedRecord> csv_records(std::string_view text, std::string_view source, std::string_view key_column,
                                       const ReadOptions& options, ReadReport& report) {
  std::vector<std::string> header;
  CsvLayout layout;
  std::vector<LocatedRecord> out;
  for_each_line(text, [&](std::size_t number, std::string_view line) {
    const std::string at = where(source, number);
    if (line.size() > kMaxLineBytes) bad(at, "line is longer than 16 MiB");
    if (header.empty()) {
      header = split_csv_line(line, at);
      layout = csv_layout(header, key_column, at);
      return;
    }
    if (line.empty()) return;
    guarded(options, report, out, [&] { return csv_record(split_csv_line(line, at), layout, header, number, at); });
  });
  return out;
}

// fortune(6)'s files: entries of plain text, each ended by a line holding only
// '%' (the last one may end at the end of the file).
std::vector<LocatedRecord> fortune_records(std::string_view text, std::string_view source, ReadReport& report) {
  std::vector<LocatedRecord> out;
  std::string entry;
  std::size_t first_line = 0;
  auto flush = [&] {
    if (entry.find_first_not_of(" \t\n") != std::string::npos) {
      out.push_back({Record{"", entry}, first_line, ""});
      ++report.records;
    }
    entry.clear();
    first_line = 0;
  };
  for_each_line(text, [&](std::size_t number, std::string_view line) {
    if (line.size() > kMaxLineBytes) bad(where(source, number), "line is longer than 16 MiB");
    if (line == "%") return flush();
    if (first_line == 0) first_line = number;
    if (!entry.empty()) entry += '\n';
    entry += line;
  });
  flush();
  return out;
}

}  // namespace

RecordFormat parse_record_format(std::string_view name) {
  if (name == "jsonl") return RecordFormat::kJsonl;
  if (name == "csv") return RecordFormat::kCsv;
  if (name == "fortune") return RecordFormat::kFortune;
  throw Error(ErrorKind::kInvalidInput, "unknown data format '" + std::string(name) + "' (jsonl, csv or fortune)");
}

std::string record_format_name(RecordFormat format) {
  switch (format) {
    case RecordFormat::kJsonl: return "jsonl";
    case RecordFormat::kCsv: return "csv";
    case RecordFormat::kFortune: return "fortune";
  }
  return "?";
}

RecordFormat record_format_of(const std::filesystem::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".jsonl" || ext == ".json") return RecordFormat::kJsonl;
  if (ext == ".csv") return RecordFormat::kCsv;
  if (ext.empty()) return RecordFormat::kFortune;
  throw Error(ErrorKind::kInvalidInput, path.string() + ": cannot tell the format from the extension '" + ext +
                                            "' (.jsonl, .json, .csv, or none for a fortune file); name it with format");
}

std::vector<LocatedRecord> parse_records(std::string_view text, std::string_view source_name, RecordFormat format,
                                         std::string_view key_column, const ReadOptions& options, ReadReport* report) {
  ReadReport local;
  ReadReport& r = report ? *report : local;
  std::vector<LocatedRecord> out;
  switch (format) {
    case RecordFormat::kJsonl: out = jsonl_records(text, source_name, key_column, options, r); break;
    case RecordFormat::kCsv: out = csv_records(text, source_name, key_column, options, r); break;
    case RecordFormat::kFortune:
      if (!key_column.empty()) bad(std::string(source_name), "a fortune file has no columns: it cannot carry a site column");
      out = fortune_records(text, source_name, r);
      break;
  }
  if (out.empty()) {
    bad(std::string(source_name), text.find_first_not_of(" \t\r\n") == std::string_view::npos
                                      ? "empty file (no records)"
                                      : "no records in the file (" + record_format_name(format) + ")");
  }
  return out;
}

std::vector<LocatedRecord> read_records(const std::filesystem::path& path, RecordFormat format,
                                        std::string_view key_column, const ReadOptions& options, ReadReport* report) {
  return parse_records(read_file(path), path.string(), format, key_column, options, report);
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
