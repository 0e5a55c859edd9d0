// TOML configuration with schema checks.
//
// A command reads its settings through typed getters that state the type, the
// default and the allowed range of each key; every key the file has but no
// getter asked for is an error once reading is done. So a typo, a wrong type or
// an out-of-range value never passes silently, and each error names the file,
// line, column and dotted key:
//   scenario.toml:12:9: key 'rounds.count': expected an integer, got a string
//
//   auto doc = config::Document::parse_file("scenario.toml");
//   auto root = doc.root();
//   int rounds = root.integer("rounds", 5, {1, 10000});
//   auto dp = root.table("privacy");
//   double eps = dp.number("target_epsilon", 8.0, {0.0, 1e6});
//   doc.reject_unknown_keys();
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::config {

template <typename T>
struct Range {
  T min = std::numeric_limits<T>::lowest();
  T max = std::numeric_limits<T>::max();
};

class Table {
 public:
  // Each getter marks `key` as known. `fallback` is used when the key is absent.
  std::int64_t integer(std::string_view key, std::int64_t fallback, Range<std::int64_t> range = {}) const;
  std::int64_t required_integer(std::string_view key, Range<std::int64_t> range = {}) const;
  // Numbers accept TOML integers and floats.
  double number(std::string_view key, double fallback, Range<double> range = {}) const;
  double required_number(std::string_view key, Range<double> range = {}) const;
  bool boolean(std::string_view key, bool fallback) const;
  // `allowed` empty: any string.
  std::string string(std::string_view key, std::string fallback,
                     const std::vector<std::string>& allowed = {}) const;
  std::string required_string(std::string_view key, const std::vector<std::string>& allowed = {}) const;
  std::vector<std::string> strings(std::string_view key, std::vector<std::string> fallback) const;
  std::vector<std::int64_t> integers(std::string_view key, std::vector<std::int64_t> fallback,
                                     Range<std::int64_t> range = {}) const;
  std::vector<double> numbers(std::string_view key, std::vector<double> fallback,
                              Range<double> range = {}) const;

  bool has(std::string_view key) const;
  // The keys this table holds, in file order (empty for an absent table), for
  // tables whose keys are data rather than a fixed schema (a strategy's
  // parameters); marks none as known: read each with a getter.
  std::vector<std::string> keys() const;
  // A sub-table; an absent key gives an empty table (all getters fall back).
  Table table(std::string_view key) const;
  // An array of tables ([[key]]); absent gives an empty list.
  std::vector<Table> tables(std::string_view key) const;

  // "scenario.toml:12:9: key 'rounds.count': <what>"; throws Error(kInvalidInput).
  [[noreturn]] void fail(std::string_view key, std::string_view what) const;
  std::string dotted(std::string_view key) const;

 private:
  friend class Document;
  friend struct TableAccess;
  struct State;  // the parsed document and the keys asked for, shared by all views
  Table(std::shared_ptr<State> state, int id, std::string path);

  std::shared_ptr<State> state_;
  int id_;            // index of the table in State, -1 for an absent table
  std::string path_;  // dotted path of this table, "" for the root
};

// A path from a config file: absolute as written, relative to `base` (the
// config file's folder) otherwise; empty stays empty.
std::filesystem::path resolve_path(const std::filesystem::path& base, const std::string& value);

class Document {
 public:
  // Throws Error(kNotFound) for a missing file, Error(kInvalidInput) with the
  // parser's line and column for TOML syntax errors.
  static Document parse_file(const std::filesystem::path& path);
  static Document parse_string(std::string_view text, std::string source_name);

  Document(Document&&) noexcept;
  Document& operator=(Document&&) noexcept;
  ~Document();

  Table root() const;
  // Throws Error(kInvalidInput) naming the first key (in file order) that no
  // getter asked for, with the known keys of its table as a hint.
  void reject_unknown_keys() const;
  const std::string& source_name() const;

 private:
  struct Impl;
  explicit Document(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge::config
