// Values a Jinja template computes with: Python's types as Jinja sees them
// (undefined, none, bool, int, float, str, list, dict), plus namespace()
// objects and callables (macros, builtins). Lists and dicts are immutable once
// built and shared; a namespace is the one mutable object, and may not be put
// inside another value, so values never form cycles and their depth is known
// when they are built. Private to fedge_chat_template.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedge::inference::jinja {

struct Value;
using ValueList = std::vector<Value>;

// A dict keeps its keys in insertion order, as Python's does.
struct ValueDict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);
};

class Renderer;
struct CallArgs;
struct Callable {
  std::string name;
  std::function<Value(Renderer&, CallArgs&, std::size_t pos)> call;
};

enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

struct Value {
  Type type = Type::kUndefined;
  bool b = false;
  std::int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<const ValueList> list;
  std::shared_ptr<const ValueDict> dict;
  std::shared_ptr<ValueDict> ns;
  std::shared_ptr<const Callable> fn;
  int depth = 0;  // containers: 1 + their deepest item

  static Value none() { return with(Type::kNone); }
  static Value boolean(bool v) {
    Value x = with(Type::kBool);
    x.b = v;
    return x;
  }
  static Value integer(std::int64_t v) {
    Value x = with(Type::kInt);
    x.i = v;
    return x;
  }
  static Value real(double v) {
    Value x = with(Type::kFloat);
    x.f = v;
    return x;
  }
  static Value string(std::string v) {
    Value x = with(Type::kString);
    x.s = std::move(v);
    return x;
  }
  static Value with(Type t) {
    Value x;
    x.type = t;
    return x;
  }

  bool is_undefined() const { return type == Type::kUndefined; }
  bool is_number() const { return type == Type::kInt || type == Type::kFloat || type == Type::kBool; }
  double as_double() const { return type == Type::kFloat ? f : static_cast<double>(type == Type::kBool ? b : i); }
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The argument at `index`, or the keyword `name`, or nullptr.
  const Value* get(std::size_t index, std::string_view name) const;
};

bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);
const char* type_name(const Value& v);
std::string format_float(double f);  // as Python's repr(): 2.0, 0.1, 1e+16
std::string to_str(const Value& v);  // Python's str(): None, True, ['a', 1], {'k': 'v'}
std::string repr(const Value& v);    // Python's repr(): strings quoted

// Python's json.dumps(ensure_ascii=False): ", " and ": " unless indenting
// (then "," between items), as transformers' tojson filter.
struct JsonStyle {
  int indent = 0;  // 0: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string json_string(std::string_view s);
// Throws std::invalid_argument for a function.
void to_json(const Value& v, const JsonStyle& style, int level, std::string& out);
// Throws std::length_error past `max_depth` levels.
Value from_json(const nlohmann::ordered_json& j, int max_depth);

Value make_list(ValueList items);
Value make_dict(ValueDict dict);

// A string's UTF-8 characters (a stray byte counts as one), for length,
// indexing and slicing by character as Python does.
std::vector<std::string_view> code_points(std::string_view s);
std::size_t code_point_count(std::string_view s);

}  // namespace fedge::inference::jinja
