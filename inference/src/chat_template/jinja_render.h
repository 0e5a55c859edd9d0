// The tree-walking interpreter (jinja_render.cpp) and the builtins it calls
// (jinja_builtins.cpp: filters, tests, methods of str/dict, global functions).
// Private to fedge_chat_template.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "jinja_syntax.h"
#include "jinja_values.h"

namespace fedge::inference::jinja {

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const Program& program, const Limits& limits) : program_(program), limits_(limits) {}

  std::string run(ScopePtr globals);

  [[noreturn]] void fail(std::size_t pos, const std::string& what) const;
  // Counts work; past the limit rendering stops.
  void tick(std::size_t cost, std::size_t pos);
  // Refuses a string or list over the size limit, and values nested too deep.
  void check_size(std::size_t size, std::size_t pos) const;
  void check_depth(const Value& v, std::size_t pos) const;
  const Limits& limits() const { return limits_; }

  Value call(const Value& callee, CallArgs& args, std::size_t pos);

 private:
  Flow exec_body(const Body& body, const ScopePtr& scope, std::string& out);
  Flow exec(const Node& n, const ScopePtr& scope, std::string& out);
  Flow exec_if(const Node& n, const ScopePtr& scope, std::string& out);
  Flow exec_for(const Node& n, const ScopePtr& scope, std::string& out);
  void exec_set(const Node& n, const ScopePtr& scope);
  void define_macro(const Node& n, const ScopePtr& scope);
  void append(std::string& out, std::string_view text, std::size_t pos);

  Value eval(const Node& n, const ScopePtr& scope);
  Value eval_binary(const Node& n, const ScopePtr& scope);
  Value arithmetic(const std::string& op, const Value& a, const Value& b, std::size_t pos);
  Value eval_index(const Node& n, const ScopePtr& scope);
  Value eval_slice(const Node& n, const ScopePtr& scope);
  Value eval_call(const Node& n, const ScopePtr& scope);
  CallArgs eval_args(const Node& n, std::size_t first, const ScopePtr& scope);
  Value attribute(const Value& object, const std::string& name) const;
  Value lookup(const std::string& name, const ScopePtr& scope) const;

  const Program& program_;
  const Limits& limits_;
  std::size_t steps_ = 0;
  int call_depth_ = 0;
};

// jinja_builtins.cpp
Value apply_filter(Renderer& r, const std::string& name, const Value& input, CallArgs& args, std::size_t pos);
bool apply_test(Renderer& r, const std::string& name, const Value& input, CallArgs& args, std::size_t pos);
// A method of a str, dict or list ("strip", "items", ...); false when there
// is no such method.
bool call_method(Renderer& r, const Value& object, const std::string& name, CallArgs& args, std::size_t pos,
                 Value& result);
// raise_exception, range, namespace, strftime_now; undefined for other names.
Value global_function(const std::string& name);

}  // namespace fedge::inference::jinja
