// Data files a simulation names per site ([data] source = "files" in a
// scenario), read with the same record rules as records.h: JSONL records;
// CSV with a header row and a `text` column, or `prompt` and `completion`
// columns (other columns are ignored; a field may not span lines); or
// fortune(6)'s format, plain text entries separated by lines holding only '%'
// (the files of Debian's fortunes packages). Implemented in records.cpp.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/training/records.h"

namespace fedge::training {

enum class RecordFormat { kJsonl, kCsv, kFortune };

// "jsonl", "csv" or "fortune"; else Error(kInvalidInput).
RecordFormat parse_record_format(std::string_view name);
std::string record_format_name(RecordFormat format);
// By the file name: .jsonl or .json -> JSONL, .csv -> CSV, no extension (as
// /usr/share/games/fortunes/science) -> fortune; any other is Error(kInvalidInput).
RecordFormat record_format_of(const std::filesystem::path& path);

// A record with where it came from: its (first) line in the file and, when a
// key column was asked for, that field's value (e.g. the site of the row).
struct LocatedRecord {
  Record record;
  std::size_t line = 0;
  std::string key;
};

// Every record of a data file. With `key_column`, each JSONL object must have
// it as a string field and each CSV header must name it (not for fortune
// files). A bad record is an Error(kInvalidInput) "file:line: reason" (with
// options.skip_bad: skipped and counted), and so is a file without records.
std::vector<LocatedRecord> parse_records(std::string_view text, std::string_view source_name, RecordFormat format,
                                         std::string_view key_column = {}, const ReadOptions& options = {},
                                         ReadReport* report = nullptr);
// Error(kNotFound) naming the path when it cannot be read.
std::vector<LocatedRecord> read_records(const std::filesystem::path& path, RecordFormat format,
                                        std::string_view key_column = {}, const ReadOptions& options = {},
                                        ReadReport* report = nullptr);

}  // namespace fedge::training
