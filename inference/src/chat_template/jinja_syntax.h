// The Jinja syntax tree: what jinja_parse.cpp builds from a template's text and
// jinja_render.cpp walks. Private to fedge_chat_template.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/inference/jinja.h"

namespace fedge::inference::jinja {

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NodeKind {
  // Statements
  kText,      // text: the literal text
  kOutput,    // {{ kids[0] }}
  kIf,        // kids: one condition per branch; bodies: one per branch, plus else when flag
  kFor,       // names: loop targets; kids[0] iterable, kids[1] filter (or null); bodies[0] body, bodies[1] else
  kSet,       // names: targets; text: attribute when setting ns.attr (names[0] is ns); kids[0] value or bodies[0]
  kMacro,     // text: name; names: parameters; kids: defaults (null where none); bodies[0]
  kBreak,
  kContinue,
  // Expressions
  kLiteral,   // none/true/false/int/float/string: literal_* fields
  kName,      // text: the variable
  kList,      // kids: items
  kTuple,     // kids: items
  kDict,      // kids: key, value, key, value, ...
  kAttr,      // kids[0] . text
  kIndex,     // kids[0] [ kids[1] ]
  kSlice,     // kids[0] [ kids[1] : kids[2] : kids[3] ] (null where left out)
  kCall,      // kids[0] ( kids[1..] ); names: keyword names of the last names.size() arguments
  kFilter,    // kids[0] | text ( kids[1..] ); names as in kCall
  kTest,      // kids[0] is [not: flag] text ( kids[1..] )
  kUnary,     // text: "-", "+" or "not"; kids[0]
  kBinary,    // text: the operator; kids[0], kids[1]
  kTernary,   // kids[1] if kids[0] else kids[2] (kids[2] null: undefined)
};

enum class LiteralKind { kNone, kBool, kInt, kFloat, kString };

struct Node {
  NodeKind kind;
  std::size_t pos = 0;  // byte offset in the source, for errors
  std::string text;
  std::vector<std::string> names;
  std::vector<NodePtr> kids;
  std::vector<Body> bodies;
  bool flag = false;
  int depth = 1;  // 1 + the deepest kid: the parser refuses trees that would recurse too deep
  LiteralKind literal_kind = LiteralKind::kNone;
  bool literal_bool = false;
  std::int64_t literal_int = 0;
  double literal_float = 0;
};

struct Program {
  std::string source;  // kept to turn byte offsets into line and column
  Body body;
};

// "chat template line L, column C: " for a byte offset of `source`.
std::string where(std::string_view source, std::size_t pos);
[[noreturn]] void fail(std::string_view source, std::size_t pos, const std::string& what);

// Parses a template (jinja_parse.cpp).
std::shared_ptr<const Program> parse_template(std::string_view source, const Limits& limits);

}  // namespace fedge::inference::jinja
