// The interpreter: walks the syntax tree with a chain of scopes, writing text.
// Scoping follows Hugging Face's: a for loop has one scope for all its
// iterations, {% set %} writes the innermost scope, if blocks share their
// parent's, a macro call gets a scope over the one it was defined in.
#include <algorithm>
#include <cmath>
#include <optional>

#include "fedge/common/error.h"
#include "jinja_render.h"

namespace fedge::inference::jinja {

void Renderer::fail(std::size_t pos, const std::string& what) const { jinja::fail(program_.source, pos, what); }

void Renderer::tick(std::size_t cost, std::size_t pos) {
  steps_ += cost + 1;
  if (steps_ > limits_.max_steps) {
    fail(pos, "rendering took more than " + std::to_string(limits_.max_steps) + " steps (a runaway loop?)");
  }
}

void Renderer::check_size(std::size_t size, std::size_t pos) const {
  if (size > limits_.max_output_bytes) {
    fail(pos, "a value grew to " + std::to_string(size) + " bytes or items, over the limit of " +
                  std::to_string(limits_.max_output_bytes));
  }
}

void Renderer::check_depth(const Value& v, std::size_t pos) const {
  if (v.depth > limits_.max_nesting) fail(pos, "values are nested more than " + std::to_string(limits_.max_nesting) + " deep");
}

std::string Renderer::run(ScopePtr globals) {
  std::string out;
  const Flow flow = exec_body(program_.body, globals, out);
  if (flow != Flow::kNormal) fail(0, "break or continue outside a loop");
  return out;
}

void Renderer::append(std::string& out, std::string_view text, std::size_t pos) {
  tick(text.size(), pos);
  out += text;
  check_size(out.size(), pos);
}

Flow Renderer::exec_body(const Body& body, const ScopePtr& scope, std::string& out) {
  for (const NodePtr& n : body) {
    const Flow flow = exec(*n, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Flow Renderer::exec(const Node& n, const ScopePtr& scope, std::string& out) {
  tick(0, n.pos);
  switch (n.kind) {
    case NodeKind::kText: append(out, n.text, n.pos); return Flow::kNormal;
    case NodeKind::kOutput: {
      const Value v = eval(*n.kids[0], scope);
      // Like @huggingface/jinja, none and undefined print nothing.
      if (v.type != Type::kNone && !v.is_undefined()) append(out, to_str(v), n.pos);
      return Flow::kNormal;
    }
    case NodeKind::kIf: return exec_if(n, scope, out);
    case NodeKind::kFor: return exec_for(n, scope, out);
    case NodeKind::kSet: exec_set(n, scope); return Flow::kNormal;
    case NodeKind::kMacro: define_macro(n, scope); return Flow::kNormal;
    case NodeKind::kBreak: return Flow::kBreak;
    case NodeKind::kContinue: return Flow::kContinue;
    default: fail(n.pos, "not a statement");
  }
}

Flow Renderer::exec_if(const Node& n, const ScopePtr& scope, std::string& out) {
  for (std::size_t k = 0; k < n.kids.size(); ++k) {
    if (truthy(eval(*n.kids[k], scope))) return exec_body(n.bodies[k], scope, out);
  }
  if (n.flag) return exec_body(n.bodies.back(), scope, out);
  return Flow::kNormal;
}

namespace {

// What a for loop walks: a list's items, a dict's keys, a string's characters.
ValueList loop_items(const Value& v) {
  switch (v.type) {
    case Type::kList: return *v.list;
    case Type::kDict: {
      ValueList keys;
      for (const auto& item : v.dict->items) keys.push_back(Value::string(item.first));
      return keys;
    }
    case Type::kString: {
      ValueList chars;
      for (std::string_view c : code_points(v.s)) chars.push_back(Value::string(std::string(c)));
      return chars;
    }
    case Type::kUndefined: return {};
    default: throw std::invalid_argument(std::string("cannot loop over a ") + type_name(v));
  }
}

Value loop_object(std::size_t index, const ValueList& items) {
  const auto length = static_cast<std::int64_t>(items.size());
  const auto i = static_cast<std::int64_t>(index);
  ValueDict loop;
  loop.set("index", Value::integer(i + 1));
  loop.set("index0", Value::integer(i));
  loop.set("revindex", Value::integer(length - i));
  loop.set("revindex0", Value::integer(length - i - 1));
  loop.set("first", Value::boolean(i == 0));
  loop.set("last", Value::boolean(i == length - 1));
  loop.set("length", Value::integer(length));
  loop.set("previtem", index > 0 ? items[index - 1] : Value());
  loop.set("nextitem", i + 1 < length ? items[index + 1] : Value());
  return make_dict(std::move(loop));
}

}  // namespace

Flow Renderer::exec_for(const Node& n, const ScopePtr& scope, std::string& out) {
  auto loop_scope = std::make_shared<Scope>();
  loop_scope->parent = scope;
  const Value iterable = eval(*n.kids[0], loop_scope);
  ValueList candidates;
  try {
    candidates = loop_items(iterable);
  } catch (const std::invalid_argument& e) {
    fail(n.kids[0]->pos, e.what());
  }
  auto bind = [&](const Value& item, Scope& target) {
    if (n.names.size() == 1) {
      target.vars[n.names[0]] = item;
      return;
    }
    if (item.type != Type::kList || item.list->size() != n.names.size()) {
      fail(n.pos, "cannot unpack a " + std::string(type_name(item)) + " into " + std::to_string(n.names.size()) +
                      " loop variables");
    }
    for (std::size_t k = 0; k < n.names.size(); ++k) target.vars[n.names[k]] = (*item.list)[k];
  };
  ValueList items;
  for (const Value& item : candidates) {
    tick(0, n.pos);
    if (n.kids[1]) {  // {% for x in xs if condition %}
      auto test_scope = std::make_shared<Scope>();
      test_scope->parent = loop_scope;
      bind(item, *test_scope);
      if (!truthy(eval(*n.kids[1], test_scope))) continue;
    } else if (n.names.size() > 1) {
      bind(item, *loop_scope);  // unpacking errors come before any output
    }
    items.push_back(item);
  }
  for (std::size_t k = 0; k < items.size(); ++k) {
    loop_scope->vars["loop"] = loop_object(k, items);
    bind(items[k], *loop_scope);
    if (exec_body(n.bodies[0], loop_scope, out) == Flow::kBreak) break;
  }
  if (items.empty()) return exec_body(n.bodies[1], loop_scope, out);
  return Flow::kNormal;
}

void Renderer::exec_set(const Node& n, const ScopePtr& scope) {
  Value value;
  if (n.kids.empty()) {
    std::string text;
    if (exec_body(n.bodies[0], scope, text) != Flow::kNormal) fail(n.pos, "break or continue inside a set block");
    value = Value::string(std::move(text));
  } else {
    value = eval(*n.kids[0], scope);
  }
  if (!n.text.empty()) {  // {% set ns.attr = value %}
    const Value target = lookup(n.names[0], scope);
    if (target.type != Type::kNamespace) {
      fail(n.pos, "cannot set attribute '" + n.text + "' of '" + n.names[0] + "', a " + type_name(target) +
                      " (only namespace() objects take attributes)");
    }
    if (value.type == Type::kNamespace) fail(n.pos, "a namespace cannot be stored inside another namespace");
    target.ns->set(n.text, std::move(value));
    return;
  }
  if (n.names.size() == 1) {
    scope->vars[n.names[0]] = std::move(value);
    return;
  }
  if (value.type != Type::kList || value.list->size() != n.names.size()) {
    fail(n.pos, "cannot unpack a " + std::string(type_name(value)) + " into " + std::to_string(n.names.size()) +
                    " variables");
  }
  for (std::size_t k = 0; k < n.names.size(); ++k) scope->vars[n.names[k]] = (*value.list)[k];
}

void Renderer::define_macro(const Node& n, const ScopePtr& scope) {
  auto macro = std::make_shared<Callable>();
  macro->name = n.text;
  // A weak link to the defining scope: the scope holds the macro, so a strong
  // one would be a cycle.
  std::weak_ptr<Scope> home = scope;
  const Node* node = &n;
  macro->call = [node, home](Renderer& r, CallArgs& args, std::size_t pos) -> Value {
    auto parent = home.lock();
    if (!parent) r.fail(pos, "macro '" + node->text + "' called outside the block that defines it");
    if (r.call_depth_ >= r.limits_.max_call_depth) {
      r.fail(pos, "macros call each other more than " + std::to_string(r.limits_.max_call_depth) + " deep");
    }
    if (args.positional.size() > node->names.size()) {
      r.fail(pos, "macro '" + node->text + "' takes " + std::to_string(node->names.size()) + " arguments, got " +
                      std::to_string(args.positional.size()));
    }
    auto local = std::make_shared<Scope>();
    local->parent = parent;
    for (const auto& name : node->names) local->vars[name] = Value();  // bound before any default is evaluated
    for (std::size_t k = 0; k < node->names.size(); ++k) {
      if (const Value* given = args.get(k, node->names[k])) {
        local->vars[node->names[k]] = *given;
      } else if (node->kids[k]) {
        local->vars[node->names[k]] = r.eval(*node->kids[k], local);
      }
    }
    for (const auto& [name, value] : args.keyword) {
      if (std::find(node->names.begin(), node->names.end(), name) == node->names.end()) {
        r.fail(pos, "macro '" + node->text + "' has no parameter '" + name + "'");
      }
    }
    ++r.call_depth_;
    std::string text;
    const Flow flow = r.exec_body(node->bodies[0], local, text);
    --r.call_depth_;
    if (flow != Flow::kNormal) r.fail(pos, "break or continue outside a loop in macro '" + node->text + "'");
    return Value::string(std::move(text));
  };
  Value v = Value::with(Type::kCallable);
  v.fn = std::move(macro);
  scope->vars[n.text] = std::move(v);
}

// ---------------------------------------------------------------------------
// Expressions

Value Renderer::lookup(const std::string& name, const ScopePtr& scope) const {
  if (const Value* v = scope->find(name)) return *v;
  return global_function(name);
}

Value Renderer::attribute(const Value& object, const std::string& name) const {
  if (object.type == Type::kDict) {
    if (const Value* v = object.dict->find(name)) return *v;
  } else if (object.type == Type::kNamespace) {
    if (const Value* v = object.ns->find(name)) return *v;
  }
  return Value();
}

Value Renderer::eval(const Node& n, const ScopePtr& scope) {
  tick(0, n.pos);
  switch (n.kind) {
    case NodeKind::kLiteral:
      switch (n.literal_kind) {
        case LiteralKind::kNone: return Value::none();
        case LiteralKind::kBool: return Value::boolean(n.literal_bool);
        case LiteralKind::kInt: return Value::integer(n.literal_int);
        case LiteralKind::kFloat: return Value::real(n.literal_float);
        case LiteralKind::kString: return Value::string(n.text);
      }
      break;
    case NodeKind::kName: return lookup(n.text, scope);
    case NodeKind::kList:
    case NodeKind::kTuple: {
      ValueList items;
      for (const auto& kid : n.kids) {
        items.push_back(eval(*kid, scope));
        if (items.back().type == Type::kNamespace) fail(kid->pos, "a namespace cannot be put in a list");
      }
      Value v = make_list(std::move(items));
      check_depth(v, n.pos);
      return v;
    }
    case NodeKind::kDict: {
      ValueDict dict;
      for (std::size_t k = 0; k + 1 < n.kids.size(); k += 2) {
        const Value key = eval(*n.kids[k], scope);
        if (key.type != Type::kString) fail(n.kids[k]->pos, std::string("dict keys must be strings, got a ") + type_name(key));
        Value value = eval(*n.kids[k + 1], scope);
        if (value.type == Type::kNamespace) fail(n.kids[k + 1]->pos, "a namespace cannot be put in a dict");
        dict.set(key.s, std::move(value));
      }
      Value v = make_dict(std::move(dict));
      check_depth(v, n.pos);
      return v;
    }
    case NodeKind::kAttr: return attribute(eval(*n.kids[0], scope), n.text);
    case NodeKind::kIndex: return eval_index(n, scope);
    case NodeKind::kSlice: return eval_slice(n, scope);
    case NodeKind::kCall: return eval_call(n, scope);
    case NodeKind::kFilter: {
      const Value input = eval(*n.kids[0], scope);
      CallArgs args = eval_args(n, 1, scope);
      return apply_filter(*this, n.text, input, args, n.pos);
    }
    case NodeKind::kTest: {
      const Value input = eval(*n.kids[0], scope);
      CallArgs args = eval_args(n, 1, scope);
      return Value::boolean(apply_test(*this, n.text, input, args, n.pos) != n.flag);
    }
    case NodeKind::kUnary: {
      const Value v = eval(*n.kids[0], scope);
      if (n.text == "not") return Value::boolean(!truthy(v));
      if (!v.is_number()) fail(n.pos, "unary " + n.text + " needs a number, got a " + type_name(v));
      if (n.text == "+") return v;
      if (v.type == Type::kFloat) return Value::real(-v.f);
      // Negated in unsigned arithmetic: -INT64_MIN wraps instead of being undefined.
      return Value::integer(static_cast<std::int64_t>(0 - static_cast<std::uint64_t>(v.type == Type::kBool ? v.b : v.i)));
    }
    case NodeKind::kBinary: return eval_binary(n, scope);
    case NodeKind::kTernary:
      if (truthy(eval(*n.kids[0], scope))) return eval(*n.kids[1], scope);
      return n.kids[2] ? eval(*n.kids[2], scope) : Value();
    default: break;
  }
  fail(n.pos, "not an expression");
}

CallArgs Renderer::eval_args(const Node& n, std::size_t first, const ScopePtr& scope) {
  CallArgs args;
  const std::size_t keyword_start = n.kids.size() - n.names.size();
  for (std::size_t k = first; k < n.kids.size(); ++k) {
    Value v = eval(*n.kids[k], scope);
    if (k < keyword_start) {
      args.positional.push_back(std::move(v));
    } else {
      args.keyword.emplace_back(n.names[k - keyword_start], std::move(v));
    }
  }
  return args;
}

Value Renderer::eval_call(const Node& n, const ScopePtr& scope) {
  const Node& callee = *n.kids[0];
  if (callee.kind == NodeKind::kAttr) {  // a method: "text".strip(), message.items(), ...
    const Value object = eval(*callee.kids[0], scope);
    CallArgs args = eval_args(n, 1, scope);
    Value result;
    if (call_method(*this, object, callee.text, args, n.pos, result)) return result;
    return call(attribute(object, callee.text), args, n.pos);
  }
  const Value fn = eval(callee, scope);
  CallArgs args = eval_args(n, 1, scope);
  if (fn.is_undefined() && callee.kind == NodeKind::kName) fail(n.pos, "'" + callee.text + "' is undefined, cannot call it");
  return call(fn, args, n.pos);
}

Value Renderer::call(const Value& callee, CallArgs& args, std::size_t pos) {
  if (callee.type != Type::kCallable) fail(pos, std::string("a ") + type_name(callee) + " is not callable");
  return callee.fn->call(*this, args, pos);
}

namespace {

// Python's index normalisation: -1 is the last; nullopt when out of range.
std::optional<std::size_t> python_index(std::int64_t index, std::size_t size) {
  const auto n = static_cast<std::int64_t>(size);
  if (index < 0) index += n;
  if (index < 0 || index >= n) return std::nullopt;
  return static_cast<std::size_t>(index);
}

}  // namespace

Value Renderer::eval_index(const Node& n, const ScopePtr& scope) {
  const Value object = eval(*n.kids[0], scope);
  const Value key = eval(*n.kids[1], scope);
  if (key.type == Type::kString) return attribute(object, key.s);
  if (key.type != Type::kInt) return Value();
  if (object.type == Type::kList) {
    auto at = python_index(key.i, object.list->size());
    return at ? (*object.list)[*at] : Value();
  }
  if (object.type == Type::kString) {
    const auto chars = code_points(object.s);
    auto at = python_index(key.i, chars.size());
    return at ? Value::string(std::string(chars[*at])) : Value();
  }
  return Value();
}

Value Renderer::eval_slice(const Node& n, const ScopePtr& scope) {
  const Value object = eval(*n.kids[0], scope);
  auto bound = [&](const NodePtr& node) -> std::optional<std::int64_t> {
    if (!node) return std::nullopt;
    const Value v = eval(*node, scope);
    if (v.type == Type::kNone) return std::nullopt;
    if (v.type != Type::kInt) fail(node->pos, std::string("slice bounds must be integers, got a ") + type_name(v));
    return v.i;
  };
  const auto start_arg = bound(n.kids[1]), stop_arg = bound(n.kids[2]), step_arg = bound(n.kids[3]);
  const std::int64_t step = step_arg.value_or(1);
  if (step == 0) fail(n.pos, "slice step cannot be zero");
  std::vector<std::string_view> chars;
  std::int64_t size = 0;
  if (object.type == Type::kList) {
    size = static_cast<std::int64_t>(object.list->size());
  } else if (object.type == Type::kString) {
    chars = code_points(object.s);
    size = static_cast<std::int64_t>(chars.size());
  } else {
    fail(n.pos, std::string("cannot slice a ") + type_name(object));
  }
  // Python's slice.indices().
  auto clamp = [&](std::optional<std::int64_t> v, std::int64_t if_none) {
    if (!v) return if_none;
    std::int64_t x = *v < 0 ? *v + size : *v;
    if (step > 0) return std::clamp<std::int64_t>(x, 0, size);
    return std::clamp<std::int64_t>(x, -1, size - 1);
  };
  const std::int64_t start = clamp(start_arg, step > 0 ? 0 : size - 1);
  const std::int64_t stop = clamp(stop_arg, step > 0 ? size : -1);
  ValueList items;
  std::string text;
  for (std::int64_t k = start; step > 0 ? k < stop : k > stop;) {
    tick(0, n.pos);
    if (object.type == Type::kList) {
      items.push_back((*object.list)[static_cast<std::size_t>(k)]);
    } else {
      text += chars[static_cast<std::size_t>(k)];
    }
    if (__builtin_add_overflow(k, step, &k)) break;
  }
  return object.type == Type::kList ? make_list(std::move(items)) : Value::string(std::move(text));
}

Value Renderer::eval_binary(const Node& n, const ScopePtr& scope) {
  const std::string& op = n.text;
  const Value a = eval(*n.kids[0], scope);
  if (op == "and") return truthy(a) ? eval(*n.kids[1], scope) : a;
  if (op == "or") return truthy(a) ? a : eval(*n.kids[1], scope);
  const Value b = eval(*n.kids[1], scope);
  if (op == "==") return Value::boolean(equal(a, b));
  if (op == "!=") return Value::boolean(!equal(a, b));
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.type == Type::kString && a.type == Type::kString) {
      found = b.s.find(a.s) != std::string::npos;
    } else if (b.type == Type::kList) {
      found = std::any_of(b.list->begin(), b.list->end(), [&](const Value& x) { return equal(a, x); });
    } else if (b.type == Type::kDict || b.type == Type::kNamespace) {
      found = a.type == Type::kString && (b.type == Type::kDict ? b.dict->find(a.s) : b.ns->find(a.s)) != nullptr;
    } else if (!b.is_undefined()) {
      fail(n.pos, std::string("'in' needs a string, list or dict on its right, got a ") + type_name(b));
    }
    return Value::boolean(found == (op == "in"));
  }
  if (op == "~") {
    std::string text = to_str(a) + to_str(b);
    tick(text.size(), n.pos);
    check_size(text.size(), n.pos);
    return Value::string(std::move(text));
  }
  return arithmetic(op, a, b, n.pos);
}

Value Renderer::arithmetic(const std::string& op, const Value& a, const Value& b, std::size_t pos) {
  if (a.is_number() && b.is_number()) {
    const bool real = a.type == Type::kFloat || b.type == Type::kFloat;
    const double x = a.as_double(), y = b.as_double();
    if (op == "<") return Value::boolean(x < y);
    if (op == ">") return Value::boolean(x > y);
    if (op == "<=") return Value::boolean(x <= y);
    if (op == ">=") return Value::boolean(x >= y);
    if ((op == "/" || op == "//" || op == "%") && y == 0) fail(pos, "division by zero");
    if (op == "/") return Value::real(x / y);
    if (op == "**") {
      const double r = std::pow(x, y);
      if (!std::isfinite(r)) fail(pos, "** result is not a finite number");
      if (real || y < 0 || std::fabs(r) > 9.0e18) return Value::real(r);
      return Value::integer(static_cast<std::int64_t>(r));
    }
    if (real) {
      if (op == "+") return Value::real(x + y);
      if (op == "-") return Value::real(x - y);
      if (op == "*") return Value::real(x * y);
      if (op == "//") return Value::real(std::floor(x / y));
      if (op == "%") return Value::real(x - y * std::floor(x / y));
    } else {
      const std::int64_t p = a.type == Type::kBool ? a.b : a.i, q = b.type == Type::kBool ? b.b : b.i;
      std::int64_t r = 0;
      if (op == "+" && !__builtin_add_overflow(p, q, &r)) return Value::integer(r);
      if (op == "-" && !__builtin_sub_overflow(p, q, &r)) return Value::integer(r);
      if (op == "*" && !__builtin_mul_overflow(p, q, &r)) return Value::integer(r);
      if (op == "//" || op == "%") {
        if (p == INT64_MIN && q == -1) fail(pos, "integer overflow");
        std::int64_t quotient = p / q, rest = p % q;
        if (rest != 0 && ((rest < 0) != (q < 0))) {  // Python floors
          --quotient;
          rest += q;
        }
        return Value::integer(op == "//" ? quotient : rest);
      }
      if (op == "+" || op == "-" || op == "*") fail(pos, "integer overflow in " + op);
    }
  }
  if (a.type == Type::kString && b.type == Type::kString) {
    if (op == "<") return Value::boolean(a.s < b.s);
    if (op == ">") return Value::boolean(a.s > b.s);
    if (op == "<=") return Value::boolean(a.s <= b.s);
    if (op == ">=") return Value::boolean(a.s >= b.s);
  }
  if (op == "+") {
    if (a.type == Type::kList && b.type == Type::kList) {
      check_size(a.list->size() + b.list->size(), pos);
      tick(a.list->size() + b.list->size(), pos);
      ValueList items = *a.list;
      items.insert(items.end(), b.list->begin(), b.list->end());
      return make_list(std::move(items));
    }
    // A string and anything printable concatenate, as @huggingface/jinja does.
    const bool printable_a = a.type != Type::kUndefined && a.type != Type::kNone;
    const bool printable_b = b.type != Type::kUndefined && b.type != Type::kNone;
    if ((a.type == Type::kString || b.type == Type::kString) && printable_a && printable_b) {
      check_size(a.s.size() + b.s.size(), pos);
      std::string text = to_str(a) + to_str(b);
      tick(text.size(), pos);
      check_size(text.size(), pos);
      return Value::string(std::move(text));
    }
  }
  if (op == "*" && ((a.type == Type::kString && b.type == Type::kInt) || (a.type == Type::kInt && b.type == Type::kString))) {
    const std::string& s = a.type == Type::kString ? a.s : b.s;
    const std::int64_t times = std::max<std::int64_t>(0, a.type == Type::kInt ? a.i : b.i);
    if (!s.empty() && static_cast<std::uint64_t>(times) > limits_.max_output_bytes / s.size()) {
      check_size(limits_.max_output_bytes + 1, pos);
    }
    std::string text;
    for (std::int64_t k = 0; k < times; ++k) text += s;
    tick(text.size(), pos);
    return Value::string(std::move(text));
  }
  fail(pos, "cannot apply " + op + " to a " + type_name(a) + " and a " + type_name(b));
}

// ---------------------------------------------------------------------------

Template::Template(std::string_view source, Limits limits)
    : program_(parse_template(source, limits)), limits_(limits) {}
Template::~Template() = default;
Template::Template(const Template&) = default;
Template& Template::operator=(const Template&) = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) throw Error(ErrorKind::kInvalidInput, "chat template variables must be a JSON object");
  auto globals = std::make_shared<Scope>();
  for (const auto& [name, value] : context.items()) {
    try {
      globals->vars[name] = from_json(value, limits_.max_nesting);
    } catch (const std::length_error&) {
      throw Error(ErrorKind::kInvalidInput, "chat template variable '" + name + "' is nested more than " +
                                                std::to_string(limits_.max_nesting) + " deep");
    }
  }
  Renderer renderer(*program_, limits_);
  return renderer.run(std::move(globals));
}

}  // namespace fedge::inference::jinja
