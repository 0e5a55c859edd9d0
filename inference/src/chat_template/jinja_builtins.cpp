// Jinja's builtins as chat templates use them: filters (x | trim), tests
// (x is defined), methods of strings and dicts ("a b".split(), d.items()) and
// the global functions raise_exception, range, namespace and strftime_now.
// Case mapping (upper, lower, title, capitalize) covers ASCII letters only.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>

#include "fedge/common/error.h"
#include "jinja_render.h"

namespace fedge::inference::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
char upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string map_chars(std::string s, char (*f)(char)) {
  for (char& c : s) c = f(c);
  return s;
}

std::string title(const std::string& s) {
  std::string out = s;
  bool in_word = false;
  for (char& c : out) {
    c = in_word ? lower(c) : upper(c);
    in_word = is_alpha(c);
  }
  return out;
}

std::string capitalize(const std::string& s) {
  std::string out = map_chars(s, lower);
  if (!out.empty()) out[0] = upper(out[0]);
  return out;
}

// str.strip(chars) and friends: `chars` null strips whitespace.
std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strippable = [&](char c) {
    if (!chars || chars->type == Type::kNone) return is_space(c);
    return chars->s.find(c) != std::string::npos;
  };
  std::size_t begin = 0, end = s.size();
  if (left)
    while (begin < end && strippable(s[begin])) ++begin;
  if (right)
    while (end > begin && strippable(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

std::string replace(Renderer& r, const std::string& s, const std::string& from, const std::string& to,
                    std::int64_t count, std::size_t pos) {
  std::string out;
  std::size_t at = 0;
  std::int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` around every character
    for (std::string_view c : code_points(s)) {
      if (count >= 0 && done >= count) {
        out += c;
        continue;
      }
      out += to;
      out += c;
      ++done;
      r.check_size(out.size(), pos);
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  while (true) {
    const std::size_t found = (count >= 0 && done >= count) ? std::string::npos : s.find(from, at);
    if (found == std::string::npos) break;
    out.append(s, at, found - at);
    out += to;
    r.check_size(out.size(), pos);
    at = found + from.size();
    ++done;
  }
  out.append(s, at, std::string::npos);
  r.tick(out.size(), pos);
  return out;
}

ValueList split(const std::string& s, const Value* sep, std::int64_t max_split) {
  ValueList parts;
  if (!sep || sep->type == Type::kNone) {  // runs of whitespace, none empty
    std::size_t k = 0;
    while (true) {
      while (k < s.size() && is_space(s[k])) ++k;
      if (k >= s.size()) break;
      if (max_split >= 0 && static_cast<std::int64_t>(parts.size()) >= max_split) {
        std::size_t end = s.size();
        while (end > k && is_space(s[end - 1])) --end;
        parts.push_back(Value::string(s.substr(k, end - k)));
        break;
      }
      std::size_t end = k;
      while (end < s.size() && !is_space(s[end])) ++end;
      parts.push_back(Value::string(s.substr(k, end - k)));
      k = end;
    }
    return parts;
  }
  std::size_t at = 0;
  while (true) {
    const std::size_t found =
        max_split >= 0 && static_cast<std::int64_t>(parts.size()) >= max_split ? std::string::npos : s.find(sep->s, at);
    if (found == std::string::npos) break;
    parts.push_back(Value::string(s.substr(at, found - at)));
    at = found + sep->s.size();
  }
  parts.push_back(Value::string(s.substr(at)));
  return parts;
}

std::int64_t int_arg(Renderer& r, const CallArgs& args, std::size_t index, std::string_view name, std::int64_t fallback,
                     std::size_t pos) {
  const Value* v = args.get(index, name);
  if (!v || v->type == Type::kNone) return fallback;
  if (v->type != Type::kInt) r.fail(pos, "argument '" + std::string(name) + "' must be an integer, got a " + type_name(*v));
  return v->i;
}

const std::string& string_arg(Renderer& r, const CallArgs& args, std::size_t index, std::string_view name,
                              std::size_t pos) {
  const Value* v = args.get(index, name);
  if (!v || v->type != Type::kString) {
    r.fail(pos, "argument '" + std::string(name) + "' must be a string" + (v ? std::string(", got a ") + type_name(*v) : ""));
  }
  return v->s;
}

void need(Renderer& r, bool ok, const std::string& what, const Value& input, std::size_t pos) {
  if (!ok) r.fail(pos, what + " cannot take a " + type_name(input));
}

// An item's attribute for sort/map/selectattr: "a.b" walks dicts.
Value attribute_path(const Value& item, const std::string& path) {
  Value v = item;
  std::size_t at = 0;
  while (at <= path.size()) {
    const std::size_t dot = path.find('.', at);
    const std::string key = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (v.type == Type::kDict) {
      const Value* next = v.dict->find(key);
      v = next ? *next : Value();
    } else if (v.type == Type::kList) {
      std::int64_t index = 0;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), index);
      v = ec == std::errc() && end == key.data() + key.size() && index >= 0 &&
                  static_cast<std::size_t>(index) < v.list->size()
              ? (*v.list)[static_cast<std::size_t>(index)]
              : Value();
    } else {
      return Value();
    }
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  return v;
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.as_double() < b.as_double();
  if (a.type == Type::kString && b.type == Type::kString) return a.s < b.s;
  return static_cast<int>(a.type) < static_cast<int>(b.type);
}

ValueList as_items(Renderer& r, const std::string& filter, const Value& input, std::size_t pos) {
  if (input.type == Type::kList) return *input.list;
  if (input.type == Type::kUndefined) return {};
  if (input.type == Type::kString) {
    ValueList chars;
    for (std::string_view c : code_points(input.s)) chars.push_back(Value::string(std::string(c)));
    return chars;
  }
  if (input.type == Type::kDict) {
    ValueList keys;
    for (const auto& item : input.dict->items) keys.push_back(Value::string(item.first));
    return keys;
  }
  r.fail(pos, "filter '" + filter + "' cannot take a " + type_name(input));
}

Value dict_items(const ValueDict& dict) {
  ValueList items;
  for (const auto& [k, v] : dict.items) items.push_back(make_list({Value::string(k), v}));
  return make_list(std::move(items));
}

Value tojson(Renderer& r, const Value& input, const CallArgs& args, std::size_t pos) {
  JsonStyle style;
  style.indent = static_cast<int>(std::clamp<std::int64_t>(int_arg(r, args, 0, "indent", 0, pos), 0, 64));
  if (style.indent > 0) style.item_separator = ",";
  if (const Value* sep = args.get(99, "separators"); sep && sep->type == Type::kList && sep->list->size() == 2) {
    style.item_separator = to_str((*sep->list)[0]);
    style.key_separator = to_str((*sep->list)[1]);
  }
  if (const Value* sort = args.get(99, "sort_keys")) style.sort_keys = truthy(*sort);
  std::string out;
  try {
    to_json(input, style, 0, out);
  } catch (const std::invalid_argument& e) {
    r.fail(pos, std::string("tojson: ") + e.what());
  }
  r.tick(out.size(), pos);
  r.check_size(out.size(), pos);
  return Value::string(std::move(out));
}

Value join(Renderer& r, const Value& input, const CallArgs& args, std::size_t pos) {
  const Value* sep = args.get(0, "d");
  const Value* attribute = args.get(1, "attribute");
  std::string out;
  const ValueList items = as_items(r, "join", input, pos);
  for (std::size_t k = 0; k < items.size(); ++k) {
    if (k && sep) out += to_str(*sep);
    out += to_str(attribute ? attribute_path(items[k], to_str(*attribute)) : items[k]);
    r.check_size(out.size(), pos);
  }
  r.tick(out.size(), pos);
  return Value::string(std::move(out));
}

Value to_int(Renderer& r, const Value& input, const CallArgs& args, std::size_t pos) {
  const std::int64_t fallback = int_arg(r, args, 0, "default", 0, pos);
  switch (input.type) {
    case Type::kInt: return input;
    case Type::kBool: return Value::integer(input.b);
    case Type::kFloat:
      return std::isfinite(input.f) && std::fabs(input.f) < 9.0e18 ? Value::integer(static_cast<std::int64_t>(input.f))
                                                                   : Value::integer(fallback);
    case Type::kString: {
      const std::string text = strip(input.s, nullptr, true, true);
      std::int64_t v = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec == std::errc() && end == text.data() + text.size()) return Value::integer(v);
      char* stop = nullptr;
      const double d = std::strtod(text.c_str(), &stop);
      if (!text.empty() && stop == text.c_str() + text.size() && std::isfinite(d) && std::fabs(d) < 9.0e18) {
        return Value::integer(static_cast<std::int64_t>(d));
      }
      return Value::integer(fallback);
    }
    default: return Value::integer(fallback);
  }
}

// select/reject (by test) and selectattr/rejectattr (by an attribute's test).
Value select(Renderer& r, const std::string& name, const Value& input, CallArgs& args, std::size_t pos) {
  const bool by_attribute = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  const std::size_t first = by_attribute ? 1 : 0;
  const std::string attribute = by_attribute ? string_arg(r, args, 0, "attribute", pos) : "";
  const Value* test = args.get(first, "test");
  CallArgs test_args;
  for (std::size_t k = first + 1; k < args.positional.size(); ++k) test_args.positional.push_back(args.positional[k]);
  ValueList out;
  for (const Value& item : as_items(r, name, input, pos)) {
    const Value subject = by_attribute ? attribute_path(item, attribute) : item;
    const bool passed = test ? apply_test(r, to_str(*test), subject, test_args, pos) : truthy(subject);
    if (passed == keep) out.push_back(item);
  }
  return make_list(std::move(out));
}

Value map(Renderer& r, const Value& input, CallArgs& args, std::size_t pos) {
  ValueList out;
  if (const Value* attribute = args.get(99, "attribute")) {
    const Value* fallback = args.get(99, "default");
    for (const Value& item : as_items(r, "map", input, pos)) {
      Value v = attribute_path(item, to_str(*attribute));
      out.push_back(v.is_undefined() && fallback ? *fallback : v);
    }
    return make_list(std::move(out));
  }
  const std::string filter = string_arg(r, args, 0, "filter", pos);
  CallArgs rest;
  for (std::size_t k = 1; k < args.positional.size(); ++k) rest.positional.push_back(args.positional[k]);
  for (const Value& item : as_items(r, "map", input, pos)) out.push_back(apply_filter(r, filter, item, rest, pos));
  return make_list(std::move(out));
}

Value indent(Renderer& r, const Value& input, const CallArgs& args, std::size_t pos) {
  const Value* width = args.get(0, "width");
  const std::string pad = !width ? "    " : width->type == Type::kString ? width->s
                                               : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(
                                                                 width->type == Type::kInt ? width->i : 4, 0, 256)),
                                                             ' ');
  const Value* first = args.get(1, "first");
  const Value* blank = args.get(2, "blank");
  std::string out;
  std::size_t at = 0, line = 0;
  while (at <= input.s.size()) {
    const std::size_t nl = input.s.find('\n', at);
    const std::string text = input.s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    const bool indent_it = (line > 0 || (first && truthy(*first))) && (!text.empty() || (blank && truthy(*blank)));
    if (indent_it) out += pad;
    out += text;
    r.check_size(out.size(), pos);
    if (nl == std::string::npos) break;
    out += '\n';
    at = nl + 1;
    ++line;
  }
  return Value::string(std::move(out));
}

}  // namespace

Value apply_filter(Renderer& r, const std::string& name, const Value& input, CallArgs& args, std::size_t pos) {
  r.tick(0, pos);
  if (name == "tojson") return tojson(r, input, args, pos);
  if (name == "safe") return input;
  if (name == "string") return Value::string(to_str(input));
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    const bool use_fallback = input.is_undefined() || (boolean && truthy(*boolean) && !truthy(input));
    return use_fallback ? (fallback ? *fallback : Value::string("")) : input;
  }
  if (name == "length" || name == "count") {
    if (input.type == Type::kString) return Value::integer(static_cast<std::int64_t>(code_point_count(input.s)));
    if (input.type == Type::kList) return Value::integer(static_cast<std::int64_t>(input.list->size()));
    if (input.type == Type::kDict) return Value::integer(static_cast<std::int64_t>(input.dict->items.size()));
    if (input.type == Type::kNamespace) return Value::integer(static_cast<std::int64_t>(input.ns->items.size()));
    if (input.is_undefined()) return Value::integer(0);
    need(r, false, "filter 'length'", input, pos);
  }
  if (name == "trim" || name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    const std::string text = to_str(input);
    if (name == "trim") return Value::string(strip(text, args.get(0, "chars"), true, true));
    if (name == "upper") return Value::string(map_chars(text, upper));
    if (name == "lower") return Value::string(map_chars(text, lower));
    if (name == "title") return Value::string(title(text));
    return Value::string(capitalize(text));
  }
  if (name == "replace") {
    need(r, input.type == Type::kString, "filter 'replace'", input, pos);
    return Value::string(replace(r, input.s, string_arg(r, args, 0, "old", pos), string_arg(r, args, 1, "new", pos),
                                 int_arg(r, args, 2, "count", -1, pos), pos));
  }
  if (name == "join") return join(r, input, args, pos);
  if (name == "int") return to_int(r, input, args, pos);
  if (name == "float") {
    if (input.is_number()) return Value::real(input.as_double());
    if (input.type == Type::kString) {
      char* stop = nullptr;
      const double d = std::strtod(input.s.c_str(), &stop);
      if (!input.s.empty() && stop == input.s.c_str() + input.s.size()) return Value::real(d);
    }
    return Value::real(0);
  }
  if (name == "abs") {
    need(r, input.is_number(), "filter 'abs'", input, pos);
    if (input.type == Type::kFloat) return Value::real(std::fabs(input.f));
    if (input.i == INT64_MIN) r.fail(pos, "integer overflow in abs");
    return Value::integer(input.type == Type::kBool ? input.b : std::abs(input.i));
  }
  if (name == "items") {
    if (input.type == Type::kDict) return dict_items(*input.dict);
    if (input.type == Type::kNamespace) return dict_items(*input.ns);
    if (input.is_undefined()) return make_list({});
    need(r, false, "filter 'items'", input, pos);
  }
  if (name == "first" || name == "last") {
    const ValueList items = as_items(r, name, input, pos);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return make_list(as_items(r, name, input, pos));
  if (name == "reverse") {
    if (input.type == Type::kString) {
      auto chars = code_points(input.s);
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value::string(std::move(out));
    }
    ValueList items = as_items(r, name, input, pos);
    std::reverse(items.begin(), items.end());
    return make_list(std::move(items));
  }
  if (name == "sort") {
    ValueList items = as_items(r, name, input, pos);
    const Value* reverse = args.get(0, "reverse");
    const Value* attribute = args.get(2, "attribute");
    r.tick(items.size() * 8, pos);
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      return attribute ? less(attribute_path(a, to_str(*attribute)), attribute_path(b, to_str(*attribute))) : less(a, b);
    });
    if (reverse && truthy(*reverse)) std::reverse(items.begin(), items.end());
    return make_list(std::move(items));
  }
  if (name == "unique") {
    ValueList out;
    for (const Value& item : as_items(r, name, input, pos)) {
      r.tick(out.size(), pos);
      if (std::none_of(out.begin(), out.end(), [&](const Value& x) { return equal(x, item); })) out.push_back(item);
    }
    return make_list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return select(r, name, input, args, pos);
  }
  if (name == "map") return map(r, input, args, pos);
  if (name == "indent") {
    need(r, input.type == Type::kString, "filter 'indent'", input, pos);
    return indent(r, input, args, pos);
  }
  r.fail(pos, "unknown filter '" + name + "'");
}

bool apply_test(Renderer& r, const std::string& name, const Value& input, CallArgs& args, std::size_t pos) {
  const Value* other = args.get(0, "value");
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.type == Type::kNone;
  if (name == "string") return input.type == Type::kString;
  if (name == "number") return input.type == Type::kInt || input.type == Type::kFloat;
  if (name == "integer") return input.type == Type::kInt;
  if (name == "float") return input.type == Type::kFloat;
  if (name == "boolean") return input.type == Type::kBool;
  if (name == "true") return input.type == Type::kBool && input.b;
  if (name == "false") return input.type == Type::kBool && !input.b;
  if (name == "mapping") return input.type == Type::kDict || input.type == Type::kNamespace;
  if (name == "iterable") return input.type == Type::kList || input.type == Type::kDict || input.type == Type::kString;
  if (name == "sequence") return input.type == Type::kList || input.type == Type::kDict || input.type == Type::kString;
  if (name == "callable") return input.type == Type::kCallable;
  if (name == "lower") return input.type == Type::kString && map_chars(input.s, lower) == input.s;
  if (name == "upper") return input.type == Type::kString && map_chars(input.s, upper) == input.s;
  if (name == "odd" || name == "even" || name == "divisibleby") {
    need(r, input.type == Type::kInt, "test '" + name + "'", input, pos);
    if (name == "divisibleby") {
      const std::int64_t d = int_arg(r, args, 0, "num", 1, pos);
      return d != 0 && (d == -1 || input.i % d == 0);
    }
    return (input.i % 2 != 0) == (name == "odd");
  }
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") return other && equal(input, *other);
  if (name == "ne" || name == "!=") return !other || !equal(input, *other);
  if (name == "in") {
    if (!other) r.fail(pos, "test 'in' needs a value");
    if (other->type == Type::kString && input.type == Type::kString) return other->s.find(input.s) != std::string::npos;
    if (other->type == Type::kList) {
      return std::any_of(other->list->begin(), other->list->end(), [&](const Value& x) { return equal(input, x); });
    }
    if (other->type == Type::kDict) return input.type == Type::kString && other->dict->find(input.s);
    return false;
  }
  if (name == "gt" || name == "lt" || name == "ge" || name == "le") {
    if (!other || !input.is_number() || !other->is_number()) r.fail(pos, "test '" + name + "' needs two numbers");
    const double a = input.as_double(), b = other->as_double();
    return name == "gt" ? a > b : name == "lt" ? a < b : name == "ge" ? a >= b : a <= b;
  }
  r.fail(pos, "unknown test '" + name + "'");
}

bool call_method(Renderer& r, const Value& object, const std::string& name, CallArgs& args, std::size_t pos,
                 Value& result) {
  r.tick(0, pos);
  if (object.type == Type::kString) {
    const std::string& s = object.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      result = Value::string(strip(s, args.get(0, "chars"), name != "rstrip", name != "lstrip"));
    } else if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      result = apply_filter(r, name, object, args, pos);
    } else if (name == "startswith" || name == "endswith") {
      const Value* affix = args.get(0, "prefix");
      auto matches = [&](const Value& v) {
        if (v.type != Type::kString) r.fail(pos, name + " needs a string or a tuple of strings");
        return name == "startswith" ? s.starts_with(v.s) : s.ends_with(v.s);
      };
      if (!affix) r.fail(pos, name + " needs an argument");
      if (affix->type == Type::kList) {
        result = Value::boolean(std::any_of(affix->list->begin(), affix->list->end(), matches));
      } else {
        result = Value::boolean(matches(*affix));
      }
    } else if (name == "split") {
      const Value* sep = args.get(0, "sep");
      if (sep && sep->type == Type::kString && sep->s.empty()) r.fail(pos, "split: empty separator");
      if (sep && sep->type != Type::kString && sep->type != Type::kNone) r.fail(pos, "split: the separator must be a string");
      result = make_list(split(s, sep, int_arg(r, args, 1, "maxsplit", -1, pos)));
    } else if (name == "replace") {
      result = Value::string(replace(r, s, string_arg(r, args, 0, "old", pos), string_arg(r, args, 1, "new", pos),
                                     int_arg(r, args, 2, "count", -1, pos), pos));
    } else if (name == "find") {
      const std::size_t at = s.find(string_arg(r, args, 0, "sub", pos));
      result = Value::integer(at == std::string::npos ? -1 : static_cast<std::int64_t>(code_point_count(s.substr(0, at))));
    } else if (name == "join") {
      CallArgs join_args;
      join_args.positional.push_back(object);
      const Value* items = args.get(0, "iterable");
      if (!items) r.fail(pos, "join needs a list");
      result = join(r, *items, join_args, pos);
    } else {
      return false;
    }
    return true;
  }
  if (object.type == Type::kDict || object.type == Type::kNamespace) {
    const ValueDict& dict = object.type == Type::kDict ? *object.dict : *object.ns;
    if (name == "items") {
      result = dict_items(dict);
    } else if (name == "keys" || name == "values") {
      ValueList out;
      for (const auto& [k, v] : dict.items) out.push_back(name == "keys" ? Value::string(k) : v);
      result = make_list(std::move(out));
    } else if (name == "get") {
      const Value* key = args.get(0, "key");
      const Value* fallback = args.get(1, "default");
      const Value* found = key && key->type == Type::kString ? dict.find(key->s) : nullptr;
      result = found ? *found : fallback ? *fallback : Value::none();
    } else {
      return false;
    }
    return true;
  }
  return false;
}

namespace {

Value builtin(std::string name, std::function<Value(Renderer&, CallArgs&, std::size_t)> body) {
  auto fn = std::make_shared<Callable>();
  fn->name = std::move(name);
  fn->call = std::move(body);
  Value v = Value::with(Type::kCallable);
  v.fn = std::move(fn);
  return v;
}

Value raise_exception() {
  return builtin("raise_exception", [](Renderer& r, CallArgs& args, std::size_t pos) -> Value {
    const Value* message = args.get(0, "message");
    r.fail(pos, "raise_exception: " + (message ? to_str(*message) : std::string("(no message)")));
  });
}

Value range() {
  return builtin("range", [](Renderer& r, CallArgs& args, std::size_t pos) -> Value {
    std::int64_t start = 0, stop = 0, step = 1;
    auto number = [&](std::size_t k) {
      if (args.positional[k].type != Type::kInt) r.fail(pos, "range() takes integers");
      return args.positional[k].i;
    };
    if (args.positional.size() == 1) {
      stop = number(0);
    } else if (args.positional.size() == 2 || args.positional.size() == 3) {
      start = number(0);
      stop = number(1);
      if (args.positional.size() == 3) step = number(2);
    } else {
      r.fail(pos, "range() takes 1 to 3 integers");
    }
    if (step == 0) r.fail(pos, "range() step cannot be zero");
    const double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
    if (count > static_cast<double>(r.limits().max_output_bytes)) r.check_size(r.limits().max_output_bytes + 1, pos);
    ValueList items;
    for (std::int64_t k = start; step > 0 ? k < stop : k > stop;) {
      items.push_back(Value::integer(k));
      r.tick(0, pos);
      if (__builtin_add_overflow(k, step, &k)) break;
    }
    return make_list(std::move(items));
  });
}

Value namespace_function() {
  return builtin("namespace", [](Renderer& r, CallArgs& args, std::size_t pos) -> Value {
    Value v = Value::with(Type::kNamespace);
    v.ns = std::make_shared<ValueDict>();
    int deepest = 0;
    for (const Value& given : args.positional) {  // namespace(some_dict)
      if (given.type != Type::kDict) r.fail(pos, "namespace() takes a dict or name=value arguments");
      for (const auto& [k, x] : given.dict->items) v.ns->set(k, x);
      deepest = std::max(deepest, given.depth);
    }
    for (const auto& [k, x] : args.keyword) {
      if (x.type == Type::kNamespace) r.fail(pos, "a namespace cannot be stored inside another namespace");
      v.ns->set(k, x);
      deepest = std::max(deepest, x.depth + 1);
    }
    v.depth = deepest + 1;
    return v;
  });
}

Value strftime_now() {
  return builtin("strftime_now", [](Renderer& r, CallArgs& args, std::size_t pos) -> Value {
    const std::string& format = string_arg(r, args, 0, "format", pos);
    if (format.size() > 256) r.fail(pos, "strftime_now: format longer than 256 bytes");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[1024];
    const std::size_t n = format.empty() ? 0 : std::strftime(buffer, sizeof buffer, format.c_str(), &local);
    return Value::string(std::string(buffer, n));
  });
}

}  // namespace

Value global_function(const std::string& name) {
  static const Value raise = raise_exception();
  static const Value range_fn = range();
  static const Value ns = namespace_function();
  static const Value time = strftime_now();
  if (name == "raise_exception") return raise;
  if (name == "range") return range_fn;
  if (name == "namespace") return ns;
  if (name == "strftime_now") return time;
  return Value();
}

}  // namespace fedge::inference::jinja
