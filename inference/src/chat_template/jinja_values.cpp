// What values do on their own: truth, equality, str(), repr(), JSON in and out,
// UTF-8 code points for lengths and slices.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "jinja_values.h"

namespace fedge::inference::jinja {

const Value* ValueDict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void ValueDict::set(std::string key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(std::size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

bool truthy(const Value& v) {
  switch (v.type) {
    case Type::kUndefined:
    case Type::kNone: return false;
    case Type::kBool: return v.b;
    case Type::kInt: return v.i != 0;
    case Type::kFloat: return v.f != 0;
    case Type::kString: return !v.s.empty();
    case Type::kList: return !v.list->empty();
    case Type::kDict: return !v.dict->items.empty();
    case Type::kNamespace:
    case Type::kCallable: return true;
  }
  return false;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type == Type::kFloat || b.type == Type::kFloat) return a.as_double() == b.as_double();
    return (a.type == Type::kBool ? a.b : a.i) == (b.type == Type::kBool ? b.b : b.i);
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Type::kUndefined:
    case Type::kNone: return true;
    case Type::kString: return a.s == b.s;
    case Type::kList:
      return a.list->size() == b.list->size() &&
             std::equal(a.list->begin(), a.list->end(), b.list->begin(), [](const Value& x, const Value& y) {
               return equal(x, y);
             });
    case Type::kDict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* other = b.dict->find(k);
        if (!other || !equal(v, *other)) return false;
      }
      return true;
    }
    case Type::kNamespace: return a.ns == b.ns;
    case Type::kCallable: return a.fn == b.fn;
    default: return false;
  }
}

const char* type_name(const Value& v) {
  switch (v.type) {
    case Type::kUndefined: return "undefined";
    case Type::kNone: return "none";
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kFloat: return "float";
    case Type::kString: return "string";
    case Type::kList: return "list";
    case Type::kDict: return "dict";
    case Type::kNamespace: return "namespace";
    case Type::kCallable: return "function";
  }
  return "?";
}

std::string format_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, f);
  std::string text(buffer, end);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";  // Python writes 2.0, not 2
  return text;
}

namespace {

std::string repr_string(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "'";
}

}  // namespace

std::string repr(const Value& v) { return v.type == Type::kString ? repr_string(v.s) : to_str(v); }

std::string to_str(const Value& v) {
  switch (v.type) {
    case Type::kUndefined: return "";
    case Type::kNone: return "None";
    case Type::kBool: return v.b ? "True" : "False";
    case Type::kInt: return std::to_string(v.i);
    case Type::kFloat: return format_float(v.f);
    case Type::kString: return v.s;
    case Type::kList: {
      std::string out = "[";
      for (std::size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + repr((*v.list)[k]);
      return out + "]";
    }
    case Type::kDict:
    case Type::kNamespace: {
      const ValueDict& d = v.type == Type::kDict ? *v.dict : *v.ns;
      std::string out = v.type == Type::kDict ? "{" : "Namespace(";
      for (std::size_t k = 0; k < d.items.size(); ++k) {
        out += (k ? ", " : "") + (v.type == Type::kDict ? repr_string(d.items[k].first) + ": " : d.items[k].first + "=");
        out += repr(d.items[k].second);
      }
      return out + (v.type == Type::kDict ? "}" : ")");
    }
    case Type::kCallable: return "<function " + v.fn->name + ">";
  }
  return "";
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

void to_json(const Value& v, const JsonStyle& style, int level, std::string& out) {
  auto newline = [&](int at) {
    out += '\n';
    out.append(static_cast<std::size_t>(style.indent * at), ' ');
  };
  switch (v.type) {
    case Type::kUndefined:
    case Type::kNone: out += "null"; return;
    case Type::kBool: out += v.b ? "true" : "false"; return;
    case Type::kInt: out += std::to_string(v.i); return;
    case Type::kFloat: out += std::isfinite(v.f) ? format_float(v.f) : "null"; return;
    case Type::kString: out += json_string(v.s); return;
    case Type::kList: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += style.item_separator;
        if (style.indent > 0) newline(level + 1);
        to_json((*v.list)[k], style, level + 1, out);
      }
      if (style.indent > 0) newline(level);
      out += ']';
      return;
    }
    case Type::kDict:
    case Type::kNamespace: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : (v.type == Type::kDict ? v.dict->items : v.ns->items)) items.push_back(&item);
      if (style.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      if (items.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (std::size_t k = 0; k < items.size(); ++k) {
        if (k) out += style.item_separator;
        if (style.indent > 0) newline(level + 1);
        out += json_string(items[k]->first);
        out += style.key_separator;
        to_json(items[k]->second, style, level + 1, out);
      }
      if (style.indent > 0) newline(level);
      out += '}';
      return;
    }
    case Type::kCallable: throw std::invalid_argument("a function cannot be written as JSON");
  }
}

Value from_json(const nlohmann::ordered_json& j, int max_depth) {
  if (max_depth < 0) throw std::length_error("nested deeper than the limit");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
    case nlohmann::ordered_json::value_t::discarded: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      return u <= static_cast<std::uint64_t>(INT64_MAX) ? Value::integer(static_cast<std::int64_t>(u))
                                                         : Value::real(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::binary: return Value::none();
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json(item, max_depth - 1));
      return make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      for (const auto& [k, item] : j.items()) dict.set(k, from_json(item, max_depth - 1));
      return make_dict(std::move(dict));
    }
  }
  return Value::none();
}

Value make_list(ValueList items) {
  Value v = Value::with(Type::kList);
  int deepest = 0;
  for (const Value& item : items) deepest = std::max(deepest, item.depth);
  v.depth = deepest + 1;
  v.list = std::make_shared<const ValueList>(std::move(items));
  return v;
}

Value make_dict(ValueDict dict) {
  Value v = Value::with(Type::kDict);
  int deepest = 0;
  for (const auto& item : dict.items) deepest = std::max(deepest, item.second.depth);
  v.depth = deepest + 1;
  v.dict = std::make_shared<const ValueDict>(std::move(dict));
  return v;
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (std::size_t k = 0; k < s.size();) {
    const auto c = static_cast<unsigned char>(s[k]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - k);
    out.push_back(s.substr(k, n));
    k += n;
  }
  return out;
}

std::size_t code_point_count(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace fedge::inference::jinja
