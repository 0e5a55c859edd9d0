#include "fedge/common/config.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "fedge/common/error.h"

namespace fedge::config {

struct Table::State {
  toml::table root;
  std::string source;
  std::vector<const toml::table*> tables;  // every table handed out, root first
  std::vector<std::string> paths;
  std::vector<std::set<std::string, std::less<>>> known;  // keys asked for, per table

  int register_table(const toml::table* table, const std::string& path) {
    for (std::size_t i = 0; i < tables.size(); ++i) {
      if (tables[i] == table) return static_cast<int>(i);
    }
    tables.push_back(table);
    paths.push_back(path);
    known.emplace_back();
    return static_cast<int>(tables.size() - 1);
  }
};

namespace {

std::string type_phrase(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::string: return "a string";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string position(const std::string& source, const toml::source_region& region) {
  std::ostringstream out;
  out << source;
  if (region.begin.line > 0) out << ':' << region.begin.line << ':' << region.begin.column;
  return out.str();
}

template <typename T>
std::string range_text(Range<T> range) {
  std::ostringstream out;
  out << "[" << range.min << ", " << range.max << "]";
  return out.str();
}

}  // namespace

// Private access to a Table's node lookup, kept out of the public header so
// that toml++ stays an implementation detail.
struct TableAccess {
  static const toml::node* lookup(const Table& t, std::string_view key) {
    if (t.id_ < 0) return nullptr;
    auto& state = *t.state_;
    state.known[static_cast<std::size_t>(t.id_)].insert(std::string(key));
    return state.tables[static_cast<std::size_t>(t.id_)]->get(key);
  }
  [[noreturn]] static void fail_at(const Table& t, const toml::node& node, std::string_view key,
                                   std::string_view what) {
    throw Error(ErrorKind::kInvalidInput, position(t.state_->source, node.source()) + ": key '" +
                                              t.dotted(key) + "': " + std::string(what));
  }
};

Table::Table(std::shared_ptr<State> state, int id, std::string path)
    : state_(std::move(state)), id_(id), path_(std::move(path)) {}

std::string Table::dotted(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void Table::fail(std::string_view key, std::string_view what) const {
  if (const toml::node* node = id_ >= 0 ? state_->tables[static_cast<std::size_t>(id_)]->get(key) : nullptr) {
    TableAccess::fail_at(*this, *node, key, what);
  }
  throw Error(ErrorKind::kInvalidInput,
              state_->source + ": key '" + dotted(key) + "': " + std::string(what));
}

bool Table::has(std::string_view key) const { return TableAccess::lookup(*this, key) != nullptr; }

namespace {

template <typename T>
T check_range(const Table& t, std::string_view key, T value, Range<T> range) {
  if (value < range.min || value > range.max) {
    std::ostringstream what;
    what << "value " << value << " is out of range " << range_text(range);
    t.fail(key, what.str());
  }
  return value;
}

std::int64_t read_integer(const Table& t, std::string_view key, const toml::node& node,
                          Range<std::int64_t> range) {
  if (!node.is_integer()) TableAccess::fail_at(t, node, key, "expected an integer, got " + type_phrase(node));
  return check_range(t, key, node.as_integer()->get(), range);
}

double read_number(const Table& t, std::string_view key, const toml::node& node, Range<double> range) {
  double value;
  if (node.is_integer()) {
    value = static_cast<double>(node.as_integer()->get());
  } else if (node.is_floating_point()) {
    value = node.as_floating_point()->get();
  } else {
    TableAccess::fail_at(t, node, key, "expected a number, got " + type_phrase(node));
  }
  if (value != value) TableAccess::fail_at(t, node, key, "nan is not allowed");
  return check_range(t, key, value, range);
}

std::string read_string(const Table& t, std::string_view key, const toml::node& node,
                        const std::vector<std::string>& allowed) {
  if (!node.is_string()) TableAccess::fail_at(t, node, key, "expected a string, got " + type_phrase(node));
  std::string value = node.as_string()->get();
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
    std::string choices;
    for (const auto& a : allowed) choices += (choices.empty() ? "'" : ", '") + a + "'";
    TableAccess::fail_at(t, node, key, "'" + value + "' is not one of " + choices);
  }
  return value;
}

// Reads an array whose every element `read_one` converts.
template <typename T, typename ReadOne>
std::vector<T> read_array(const Table& t, std::string_view key, const toml::node& node, ReadOne read_one) {
  const toml::array* array = node.as_array();
  if (array == nullptr) TableAccess::fail_at(t, node, key, "expected an array, got " + type_phrase(node));
  std::vector<T> values;
  values.reserve(array->size());
  for (std::size_t i = 0; i < array->size(); ++i) {
    values.push_back(read_one(std::string(key) + "[" + std::to_string(i) + "]", (*array)[i]));
  }
  return values;
}

}  // namespace

std::int64_t Table::integer(std::string_view key, std::int64_t fallback, Range<std::int64_t> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  return node ? read_integer(*this, key, *node, range) : fallback;
}

std::int64_t Table::required_integer(std::string_view key, Range<std::int64_t> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) fail(key, "is required (an integer in " + range_text(range) + ")");
  return read_integer(*this, key, *node, range);
}

double Table::number(std::string_view key, double fallback, Range<double> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  return node ? read_number(*this, key, *node, range) : fallback;
}

double Table::required_number(std::string_view key, Range<double> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) fail(key, "is required (a number in " + range_text(range) + ")");
  return read_number(*this, key, *node, range);
}

bool Table::boolean(std::string_view key, bool fallback) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return fallback;
  if (!node->is_boolean()) TableAccess::fail_at(*this, *node, key, "expected a boolean, got " + type_phrase(*node));
  return node->as_boolean()->get();
}

std::string Table::string(std::string_view key, std::string fallback,
                          const std::vector<std::string>& allowed) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  return node ? read_string(*this, key, *node, allowed) : fallback;
}

std::string Table::required_string(std::string_view key, const std::vector<std::string>& allowed) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) fail(key, "is required (a string)");
  return read_string(*this, key, *node, allowed);
}

std::vector<std::string> Table::strings(std::string_view key, std::vector<std::string> fallback) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return fallback;
  return read_array<std::string>(*this, key, *node, [this](const std::string& k, const toml::node& n) {
    return read_string(*this, k, n, {});
  });
}

std::vector<std::int64_t> Table::integers(std::string_view key, std::vector<std::int64_t> fallback,
                                          Range<std::int64_t> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return fallback;
  return read_array<std::int64_t>(*this, key, *node, [this, range](const std::string& k, const toml::node& n) {
    return read_integer(*this, k, n, range);
  });
}

std::vector<double> Table::numbers(std::string_view key, std::vector<double> fallback, Range<double> range) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return fallback;
  return read_array<double>(*this, key, *node, [this, range](const std::string& k, const toml::node& n) {
    return read_number(*this, k, n, range);
  });
}

std::vector<std::string> Table::keys() const {
  std::vector<std::string> out;
  if (id_ < 0) return out;
  std::vector<std::pair<toml::source_position, std::string>> found;
  for (const auto& [key, node] : *state_->tables[id_]) found.push_back({node.source().begin, std::string(key.str())});
  std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first.line != b.first.line ? a.first.line < b.first.line : a.first.column < b.first.column;
  });
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

Table Table::table(std::string_view key) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return Table(state_, -1, dotted(key));
  if (!node->is_table()) TableAccess::fail_at(*this, *node, key, "expected a table, got " + type_phrase(*node));
  return Table(state_, state_->register_table(node->as_table(), dotted(key)), dotted(key));
}

std::vector<Table> Table::tables(std::string_view key) const {
  const toml::node* node = TableAccess::lookup(*this, key);
  if (!node) return {};
  if (!node->is_array_of_tables()) {
    TableAccess::fail_at(*this, *node, key, "expected an array of tables ([[" + dotted(key) + "]]), got " +
                                                type_phrase(*node));
  }
  std::vector<Table> result;
  const toml::array& array = *node->as_array();
  for (std::size_t i = 0; i < array.size(); ++i) {
    std::string path = dotted(key) + "[" + std::to_string(i) + "]";
    result.push_back(Table(state_, state_->register_table(array[i].as_table(), path), path));
  }
  return result;
}

struct Document::Impl {
  std::shared_ptr<Table::State> state;
};

Document::Document(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Document::Document(Document&&) noexcept = default;
Document& Document::operator=(Document&&) noexcept = default;
Document::~Document() = default;

Document Document::parse_string(std::string_view text, std::string source_name) {
  auto state = std::make_shared<Table::State>();
  state->source = source_name;
  try {
    state->root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    throw Error(ErrorKind::kInvalidInput,
                position(source_name, e.source()) + ": TOML syntax error: " + std::string(e.description()));
  }
  state->register_table(&state->root, "");
  auto impl = std::make_unique<Impl>();
  impl->state = std::move(state);
  return Document(std::move(impl));
}

Document Document::parse_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kNotFound, path.string() + ": cannot open config file (check the path)");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_string(text.str(), path.string());
}

Table Document::root() const { return Table(impl_->state, 0, ""); }

const std::string& Document::source_name() const { return impl_->state->source; }

void Document::reject_unknown_keys() const {
  const auto& state = *impl_->state;
  // Collect every unknown key, then report the one that comes first in the file.
  const toml::key* first = nullptr;
  std::size_t first_table = 0;
  for (std::size_t i = 0; i < state.tables.size(); ++i) {
    for (auto&& [key, node] : *state.tables[i]) {
      if (state.known[i].count(key.str()) != 0) continue;
      if (first == nullptr || key.source().begin < first->source().begin) {
        first = &key;
        first_table = i;
      }
    }
  }
  if (first == nullptr) return;
  const std::string first_key(first->str());
  std::string hint;
  for (const auto& k : state.known[first_table]) hint += (hint.empty() ? "" : ", ") + k;
  const std::string& path = state.paths[first_table];
  throw Error(ErrorKind::kInvalidInput,
              position(state.source, first->source()) + ": unknown key '" +
                  (path.empty() ? first_key : path + "." + first_key) + "'" +
                  (hint.empty() ? "" : " (known keys here: " + hint + ")"));
}

std::filesystem::path resolve_path(const std::filesystem::path& base, const std::string& value) {
  if (value.empty()) return {};
  std::filesystem::path p(value);
  return p.is_absolute() ? p : base / p;
}

}  // namespace fedge::config
