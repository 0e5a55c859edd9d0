// A Jinja2 template interpreter for chat templates (the `chat_template` of a
// model's tokenizer_config.json or GGUF metadata). It covers what real chat
// templates use: {% for %} (loop.*), {% if %}, {% set %} (namespace() and
// attribute assignment, block set), {% macro %}, break/continue, comments,
// whitespace control, expressions, filters, tests, string and dict methods,
// raise_exception(), range(), namespace(), strftime_now(). It parses as Hugging
// Face does (trim_blocks and lstrip_blocks on, one trailing newline dropped)
// and is checked byte for byte against @huggingface/jinja (docs/SERVING.md).
// Lives in fedge_chat_template, which does not use libtorch.
//
// A template is untrusted input: syntax errors, runaway loops, deep nesting and
// huge output end in Error(kInvalidInput) naming the line and column, within
// the Limits below; never a crash or unbounded recursion.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fedge::inference::jinja {

struct Limits {
  std::size_t max_template_bytes = 1u << 20;  // source text
  std::size_t max_output_bytes = 16u << 20;   // rendered text, and any one string or list built on the way
  std::size_t max_steps = 20'000'000;         // evaluated nodes plus bytes built: bounds the work
  int max_nesting = 64;                       // blocks and expressions inside each other, and value depth
  int max_call_depth = 32;                    // macro calls inside macro calls
};

struct Program;  // the parsed template (internal)

class Template {
 public:
  // Parses `source`; a syntax error is Error(kInvalidInput) "chat template
  // line L, column C: what". Thread-safe to render from several threads.
  explicit Template(std::string_view source, Limits limits = {});
  ~Template();
  Template(const Template&);
  Template& operator=(const Template&);
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `context`'s members as variables (a JSON object; keys keep
  // their order, as Python dicts do, for tojson and items()). A failure at run
  // time (raise_exception(), a type error, a limit) is Error(kInvalidInput)
  // naming the position; raise_exception's text is kept whole.
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const Program> program_;
  Limits limits_;
};

}  // namespace fedge::inference::jinja
