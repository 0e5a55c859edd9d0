// Training records from on-site files: JSONL text, prompt/completion and chat
// records, and CSV rows rendered through a template. A record is text split into
// a prompt (no loss) and a completion (loss), so instruction data trains only
// on what the model should say.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/inference/chat_template.h"

namespace fedge::training {

struct Record {
  std::string prompt;      // context the model reads; carries no loss
  std::string completion;  // what the model learns to produce
  bool is_instruction() const { return !prompt.empty(); }
};

using ChatMessage = inference::ChatMessage;  // role "system", "user" or "assistant"

// How bad records are handled: by default the first one is an error naming
// the file, line and reason; with skip_bad they are counted and skipped.
struct ReadOptions {
  bool skip_bad = false;
  // How {"messages": [...]} records are rendered: the model's chat template
  // (ChatTemplate::for_tokenizer), or fedge's own format when null.
  const inference::ChatTemplate* chat_template = nullptr;
};

struct ReadReport {
  std::size_t records = 0;
  std::size_t skipped = 0;
  std::vector<std::string> first_problems;  // up to 10 "file:line: reason"
};

// A {"messages": [...]} record in the model's chat format, the one serving
// renders requests with: the prompt is the conversation before the last
// assistant turn rendered with the generation prompt, the completion is what
// the rendering through that turn adds (its text and the template's end of
// turn, e.g. "<|eot_id|>"), so loss falls on the last assistant turn only.
// Roles are system, user or assistant, and there is at least one assistant
// turn; a template whose full rendering does not start with the prompt's is an
// Error(kInvalidInput) (fedge could not tell the completion apart). Without a
// template, fedge's own format (kFedgeChatTemplate): "<|user|>" / "<|assistant|>"
// turns, a system turn folded into the next user turn.
Record record_from_chat(const std::vector<ChatMessage>& messages, const inference::ChatTemplate& chat_template);
Record record_from_chat(const std::vector<ChatMessage>& messages);

// One record per line: {"text": ...}, {"prompt": ..., "completion": ...} or
// {"messages": [{"role": ..., "content": ...}, ...]}. Blank lines are skipped.
std::vector<Record> read_jsonl(const std::filesystem::path& path, const ReadOptions& options = {},
                               ReadReport* report = nullptr);
std::vector<Record> parse_jsonl(std::string_view text, std::string_view source_name,
                                const ReadOptions& options = {}, ReadReport* report = nullptr);

// A CSV file (RFC 4180: header row, commas, double-quoted fields) rendered one
// row per record through `text_template`, where {column} stands for a column's
// value; e.g. "{date} well {well}: liquid {liquid} bbl, gas {gas} mcf".
// A template that names a column the header lacks is an error.
std::vector<Record> read_csv(const std::filesystem::path& path, std::string_view text_template,
                             const ReadOptions& options = {}, ReadReport* report = nullptr);
std::vector<Record> parse_csv(std::string_view text, std::string_view source_name, std::string_view text_template,
                              const ReadOptions& options = {}, ReadReport* report = nullptr);

// Splits one CSV line into fields; throws Error(kInvalidInput) with `where`
// for an unterminated quote or text after a closing quote.
std::vector<std::string> split_csv_line(std::string_view line, std::string_view where);

// Replaces each {name} in `text_template` by values.at(name).
std::string render_template(std::string_view text_template, const std::map<std::string, std::string>& values,
                            std::string_view where);

// Appends records to a JSONL file in fedge's own format (text or prompt/completion).
void write_jsonl(const std::filesystem::path& path, const std::vector<Record>& records);

}  // namespace fedge::training
