// Jinja lexer and parser: template text to the syntax tree of jinja_syntax.h.
// Whitespace follows Hugging Face's chat template settings (transformers and
// @huggingface/jinja): trim_blocks (the newline after a block or comment tag
// is dropped), lstrip_blocks (spaces and tabs between a line's start and a
// block or comment tag are dropped), one trailing newline of the template is
// dropped, and "-" in a tag strips the whitespace on its side.
#include <algorithm>
#include <charconv>
#include <initializer_list>

#include "fedge/common/error.h"
#include "jinja_syntax.h"

namespace fedge::inference::jinja {

std::string where(std::string_view source, std::size_t pos) {
  pos = std::min(pos, source.size());
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < pos; ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "chat template line " + std::to_string(line) + ", column " + std::to_string(column) + ": ";
}

void fail(std::string_view source, std::size_t pos, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, where(source, pos) + what);
}

namespace {

enum class Tok { kText, kComment, kStmtOpen, kStmtClose, kExprOpen, kExprClose, kName, kString, kInt, kFloat, kOp, kEnd };

struct Token {
  Tok kind;
  std::size_t pos;
  std::string text;
  std::int64_t int_value = 0;
  double float_value = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Token> run() {
    while (i_ < src_.size()) {
      lex_text();
      if (i_ >= src_.size()) break;
      if (src_[i_ + 1] == '#') {
        lex_comment();
      } else {
        lex_tag();
      }
    }
    tokens_.push_back({Tok::kEnd, src_.size(), {}});
    return std::move(tokens_);
  }

 private:
  // Text up to the next "{{", "{%" or "{#".
  void lex_text() {
    std::size_t end = i_;
    while (true) {
      end = src_.find('{', end);
      if (end == std::string_view::npos || end + 1 >= src_.size()) {
        end = src_.size();
        break;
      }
      const char next = src_[end + 1];
      if (next == '%' || next == '{' || next == '#') break;
      ++end;
    }
    std::size_t cut = end;
    if (end < src_.size() && src_[end + 1] != '{') cut = lstrip_block_start(end);
    if (cut > i_) tokens_.push_back({Tok::kText, i_, std::string(src_.substr(i_, cut - i_))});
    i_ = end;
  }

  // lstrip_blocks: where a block or comment tag at `tag` has only spaces and
  // tabs before it on its line, the text ends where they start.
  std::size_t lstrip_block_start(std::size_t tag) const {
    std::size_t k = tag;
    while (k > 0 && (src_[k - 1] == ' ' || src_[k - 1] == '\t')) --k;
    if (k == 0 || src_[k - 1] == '\n' || src_[k - 1] == '\r') return std::max(k, i_);
    return tag;
  }

  // "{%-", "{{-", "{#-": the text before loses its trailing whitespace.
  void strip_previous_text() {
    if (tokens_.empty() || tokens_.back().kind != Tok::kText) return;
    std::string& t = tokens_.back().text;
    while (!t.empty() && is_space(t.back())) t.pop_back();
    if (t.empty()) tokens_.pop_back();
  }

  void skip_whitespace() {
    while (i_ < src_.size() && is_space(src_[i_])) ++i_;
  }

  void lex_comment() {
    const std::size_t open = i_;
    i_ += 2;
    const bool strip_before = i_ < src_.size() && src_[i_] == '-';
    if (strip_before) ++i_;
    const std::size_t end = src_.find("#}", i_);
    if (end == std::string_view::npos) fail(src_, open, "comment is not closed (missing #})");
    const bool strip_after = end > i_ && src_[end - 1] == '-';
    if (strip_before) strip_previous_text();
    tokens_.push_back({Tok::kComment, open, {}});
    i_ = end + 2;
    if (i_ < src_.size() && src_[i_] == '\n') ++i_;  // trim_blocks
    if (strip_after) skip_whitespace();
  }

  void lex_tag() {
    const std::size_t open = i_;
    const bool statement = src_[i_ + 1] == '%';
    i_ += 2;
    if (i_ < src_.size() && src_[i_] == '-') {
      strip_previous_text();
      ++i_;
    }
    tokens_.push_back({statement ? Tok::kStmtOpen : Tok::kExprOpen, open, {}});
    int curly_depth = 0;
    while (true) {
      skip_whitespace();
      if (i_ >= src_.size()) {
        fail(src_, open, std::string("tag is not closed (missing ") + (statement ? "%}" : "}}") + ")");
      }
      const std::string_view rest = src_.substr(i_);
      const std::string_view close = statement ? "%}" : "}}";
      const bool stripping = rest.size() >= 3 && rest[0] == '-' && rest.substr(1, 2) == close;
      if (stripping || (rest.substr(0, 2) == close && (statement || curly_depth <= 0))) {
        tokens_.push_back({statement ? Tok::kStmtClose : Tok::kExprClose, i_, {}});
        i_ += stripping ? 3 : 2;
        if (statement && i_ < src_.size() && src_[i_] == '\n') ++i_;  // trim_blocks
        if (stripping) skip_whitespace();
        return;
      }
      lex_inside_tag(curly_depth);
    }
  }

  void lex_inside_tag(int& curly_depth) {
    const char c = src_[i_];
    if (c == '\'' || c == '"') return lex_string(c);
    if (is_digit(c)) return lex_number();
    if (is_word(c)) {
      const std::size_t start = i_;
      while (i_ < src_.size() && is_word(src_[i_])) ++i_;
      tokens_.push_back({Tok::kName, start, std::string(src_.substr(start, i_ - start))});
      return;
    }
    static constexpr std::string_view kTwo[] = {"**", "//", "==", "!=", "<=", ">="};
    for (std::string_view op : kTwo) {
      if (src_.substr(i_, 2) == op) {
        tokens_.push_back({Tok::kOp, i_, std::string(op)});
        i_ += 2;
        return;
      }
    }
    static constexpr std::string_view kOne = "+-*/%~<>=()[]{},.:|";
    if (kOne.find(c) == std::string_view::npos) {
      fail(src_, i_, std::string("unexpected character '") + c + "' inside a tag");
    }
    if (c == '{') ++curly_depth;
    if (c == '}') --curly_depth;
    tokens_.push_back({Tok::kOp, i_, std::string(1, c)});
    ++i_;
  }

  void lex_string(char quote) {
    const std::size_t open = i_++;
    std::string value;
    while (true) {
      if (i_ >= src_.size()) fail(src_, open, "string is not closed (missing " + std::string(1, quote) + ")");
      const char c = src_[i_++];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (i_ >= src_.size()) fail(src_, open, "string ends in a lone backslash");
      const char e = src_[i_++];
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '0': value += '\0'; break;
        case '\\': case '\'': case '"': value += e; break;
        case 'x': case 'u': value += hex_escape(e == 'x' ? 2 : 4); break;
        default: fail(src_, i_ - 2, std::string("unknown escape \\") + e + " in a string");
      }
    }
    tokens_.push_back({Tok::kString, open, std::move(value)});
  }

  // \xHH or \uHHHH as UTF-8.
  std::string hex_escape(std::size_t digits) {
    unsigned code = 0;
    const std::string_view hex = src_.substr(i_, digits);
    auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), code, 16);
    if (hex.size() != digits || ec != std::errc() || end != hex.data() + hex.size()) {
      fail(src_, i_ - 2, "bad hexadecimal escape in a string");
    }
    i_ += digits;
    std::string out;
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
    return out;
  }

  void lex_number() {
    const std::size_t start = i_;
    while (i_ < src_.size() && is_digit(src_[i_])) ++i_;
    const bool after_dot = !tokens_.empty() && tokens_.back().kind == Tok::kOp && tokens_.back().text == ".";
    bool fraction = !after_dot && i_ + 1 < src_.size() && src_[i_] == '.' && is_digit(src_[i_ + 1]);
    if (fraction) {
      ++i_;
      while (i_ < src_.size() && is_digit(src_[i_])) ++i_;
    }
    const std::string text(src_.substr(start, i_ - start));
    Token t{fraction ? Tok::kFloat : Tok::kInt, start, text};
    if (fraction) {
      t.float_value = std::strtod(text.c_str(), nullptr);
    } else if (std::from_chars(text.data(), text.data() + text.size(), t.int_value).ec != std::errc()) {
      fail(src_, start, "integer " + text + " is too large");
    }
    tokens_.push_back(std::move(t));
  }

  std::string_view src_;
  std::size_t i_ = 0;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::string_view src, std::vector<Token> tokens, const Limits& limits)
      : src_(src), tokens_(std::move(tokens)), limits_(limits) {}

  Body parse_program() {
    std::string found;
    Body body = parse_block({}, found, 0);
    return body;
  }

 private:
  const Token& peek(std::size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& t = tokens_[at_];
    if (at_ + 1 < tokens_.size()) ++at_;
    return t;
  }
  bool is_op(std::string_view op, std::size_t ahead = 0) const {
    return peek(ahead).kind == Tok::kOp && peek(ahead).text == op;
  }
  bool is_name(std::string_view name, std::size_t ahead = 0) const {
    return peek(ahead).kind == Tok::kName && peek(ahead).text == name;
  }
  [[noreturn]] void fail_here(const std::string& what) const {
    const Token& t = peek();
    fail(src_, t.pos, what + (t.kind == Tok::kEnd ? " (the template ended)" : ""));
  }
  void expect_op(std::string_view op) {
    if (!is_op(op)) fail_here("expected '" + std::string(op) + "'");
    next();
  }
  std::string expect_name(const char* what) {
    if (peek().kind != Tok::kName) fail_here(std::string("expected ") + what);
    return next().text;
  }
  void expect_stmt_close() {
    if (peek().kind != Tok::kStmtClose) fail_here("expected %} to end the tag");
    next();
  }

  NodePtr make(NodeKind kind, std::size_t pos) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->pos = pos;
    return n;
  }
  // Sets the node's depth from its kids and refuses trees too deep to walk.
  NodePtr finish(NodePtr n) {
    int deepest = 0;
    for (const auto& k : n->kids)
      if (k) deepest = std::max(deepest, k->depth);
    n->depth = deepest + 1;
    if (n->depth > 4 * limits_.max_nesting) {
      fail(src_, n->pos, "expression is nested more than " + std::to_string(4 * limits_.max_nesting) + " deep");
    }
    return n;
  }

  // ---- statements --------------------------------------------------------

  // Parses until "{% name" with name in `stops` (consumed up to the name,
  // which is returned in `found`), or the end of input when stops is empty.
  Body parse_block(std::initializer_list<std::string_view> stops, std::string& found, int nesting) {
    if (nesting > limits_.max_nesting) fail_here("blocks are nested more than " + std::to_string(limits_.max_nesting) + " deep");
    Body body;
    while (true) {
      const Token& t = peek();
      switch (t.kind) {
        case Tok::kText: {
          auto n = make(NodeKind::kText, t.pos);
          n->text = next().text;
          body.push_back(std::move(n));
          break;
        }
        case Tok::kComment:
          next();
          break;
        case Tok::kExprOpen: {
          auto n = make(NodeKind::kOutput, next().pos);
          n->kids.push_back(parse_expression());
          if (peek().kind != Tok::kExprClose) fail_here("expected }} to end the expression");
          next();
          body.push_back(finish(std::move(n)));
          break;
        }
        case Tok::kStmtOpen: {
          const std::string& name = peek(1).text;
          if (peek(1).kind == Tok::kName && std::find(stops.begin(), stops.end(), name) != stops.end()) {
            next();
            found = next().text;
            return body;
          }
          if (auto n = parse_statement(nesting)) body.push_back(std::move(n));
          break;
        }
        case Tok::kEnd:
          if (stops.size() == 0) return body;
          fail_here("missing {% " + std::string(*(stops.end() - 1)) + " %}");
        default:
          fail_here("unexpected token");
      }
    }
  }

  NodePtr parse_statement(int nesting) {
    const std::size_t open = next().pos;  // {%
    if (peek().kind != Tok::kName) fail_here("expected a statement name after {%");
    const std::string name = next().text;
    if (name == "if") return parse_if(open, nesting);
    if (name == "for") return parse_for(open, nesting);
    if (name == "set") return parse_set(open, nesting);
    if (name == "macro") return parse_macro(open, nesting);
    if (name == "break" || name == "continue") {
      expect_stmt_close();
      return make(name == "break" ? NodeKind::kBreak : NodeKind::kContinue, open);
    }
    if (name == "generation" || name == "endgeneration") {  // transformers' assistant-mask markers
      expect_stmt_close();
      return nullptr;
    }
    fail(src_, open, "unknown or unsupported tag '" + name + "'");
  }

  NodePtr parse_if(std::size_t open, int nesting) {
    auto n = make(NodeKind::kIf, open);
    std::string found = "elif";
    while (found == "elif") {
      n->kids.push_back(parse_expression());
      expect_stmt_close();
      n->bodies.push_back(parse_block({"elif", "else", "endif"}, found, nesting + 1));
    }
    if (found == "else") {
      expect_stmt_close();
      n->flag = true;
      n->bodies.push_back(parse_block({"endif"}, found, nesting + 1));
    }
    expect_stmt_close();
    return finish(std::move(n));
  }

  NodePtr parse_for(std::size_t open, int nesting) {
    auto n = make(NodeKind::kFor, open);
    n->names.push_back(expect_name("a loop variable"));
    while (is_op(",")) {
      next();
      n->names.push_back(expect_name("a loop variable"));
    }
    if (!is_name("in")) fail_here("expected 'in' in the for loop");
    next();
    n->kids.push_back(parse_or());
    n->kids.push_back(nullptr);
    if (is_name("if")) {
      next();
      n->kids[1] = parse_expression();
    }
    if (is_name("recursive")) fail_here("recursive loops are not supported");
    expect_stmt_close();
    std::string found;
    n->bodies.push_back(parse_block({"else", "endfor"}, found, nesting + 1));
    n->bodies.emplace_back();
    if (found == "else") {
      expect_stmt_close();
      n->bodies[1] = parse_block({"endfor"}, found, nesting + 1);
    }
    expect_stmt_close();
    return finish(std::move(n));
  }

  NodePtr parse_set(std::size_t open, int nesting) {
    auto n = make(NodeKind::kSet, open);
    n->names.push_back(expect_name("a variable to set"));
    if (is_op(".")) {
      next();
      n->text = expect_name("an attribute to set");
    } else {
      while (is_op(",")) {
        next();
        n->names.push_back(expect_name("a variable to set"));
      }
    }
    if (is_op("=")) {
      next();
      n->kids.push_back(parse_expression());
      expect_stmt_close();
    } else {
      expect_stmt_close();
      std::string found;
      n->bodies.push_back(parse_block({"endset"}, found, nesting + 1));
      expect_stmt_close();
    }
    return finish(std::move(n));
  }

  NodePtr parse_macro(std::size_t open, int nesting) {
    auto n = make(NodeKind::kMacro, open);
    n->text = expect_name("a macro name");
    expect_op("(");
    while (!is_op(")")) {
      n->names.push_back(expect_name("a parameter name"));
      NodePtr default_value;
      if (is_op("=")) {
        next();
        default_value = parse_expression();
      }
      n->kids.push_back(std::move(default_value));
      if (!is_op(")")) expect_op(",");
    }
    next();
    expect_stmt_close();
    std::string found;
    n->bodies.push_back(parse_block({"endmacro"}, found, nesting + 1));
    expect_stmt_close();
    return finish(std::move(n));
  }

  // ---- expressions, loosest binding first -------------------------------

  // Guards the recursive entry points so "((((...", "not not not ..." and
  // "- - - ..." cannot exhaust the stack.
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > 4 * p.limits_.max_nesting) p.fail_here("expression is nested too deep");
    }
    ~DepthGuard() { --p.depth_; }
  };

  NodePtr parse_expression() {
    DepthGuard guard(*this);
    NodePtr value = parse_or();
    if (!is_name("if")) return value;
    auto n = make(NodeKind::kTernary, next().pos);
    NodePtr condition = parse_or();
    NodePtr otherwise;
    if (is_name("else")) {
      next();
      otherwise = parse_expression();
    }
    n->kids.push_back(std::move(condition));
    n->kids.push_back(std::move(value));
    n->kids.push_back(std::move(otherwise));
    return finish(std::move(n));
  }

  NodePtr binary(std::string op, std::size_t pos, NodePtr a, NodePtr b) {
    auto n = make(NodeKind::kBinary, pos);
    n->text = std::move(op);
    n->kids.push_back(std::move(a));
    n->kids.push_back(std::move(b));
    return finish(std::move(n));
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (is_name("or")) {
      const std::size_t pos = next().pos;
      left = binary("or", pos, std::move(left), parse_and());
    }
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (is_name("and")) {
      const std::size_t pos = next().pos;
      left = binary("and", pos, std::move(left), parse_not());
    }
    return left;
  }

  NodePtr parse_not() {
    if (!is_name("not")) return parse_compare();
    DepthGuard guard(*this);
    auto n = make(NodeKind::kUnary, next().pos);
    n->text = "not";
    n->kids.push_back(parse_not());
    return finish(std::move(n));
  }

  NodePtr parse_compare() {
    NodePtr left = parse_add();
    while (true) {
      std::string op;
      if (peek().kind == Tok::kOp && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                      peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = peek().text;
      } else if (is_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        op = "not in";
        next();
      } else {
        return left;
      }
      const std::size_t pos = next().pos;
      left = binary(op, pos, std::move(left), parse_add());
    }
  }

  NodePtr parse_add() {
    NodePtr left = parse_mul();
    while (is_op("+") || is_op("-") || is_op("~")) {
      const Token& t = next();
      std::string op = t.text;
      left = binary(op, t.pos, std::move(left), parse_mul());
    }
    return left;
  }

  NodePtr parse_mul() {
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      std::string op = t.text;
      left = binary(op, t.pos, std::move(left), parse_pow());
    }
    return left;
  }

  NodePtr parse_pow() {
    NodePtr left = parse_test();
    while (is_op("**")) {
      const std::size_t pos = next().pos;
      left = binary("**", pos, std::move(left), parse_test());
    }
    return left;
  }

  NodePtr parse_test() {
    NodePtr operand = parse_filter();
    while (is_name("is")) {
      auto n = make(NodeKind::kTest, next().pos);
      if (is_name("not")) {
        next();
        n->flag = true;
      }
      n->text = expect_name("a test name after 'is'");
      n->kids.push_back(std::move(operand));
      if (is_op("(")) parse_arguments(*n);
      operand = finish(std::move(n));
    }
    return operand;
  }

  NodePtr parse_filter() {
    NodePtr operand = parse_unary();
    while (is_op("|")) {
      auto n = make(NodeKind::kFilter, next().pos);
      n->text = expect_name("a filter name after '|'");
      n->kids.push_back(std::move(operand));
      if (is_op("(")) parse_arguments(*n);
      operand = finish(std::move(n));
    }
    return operand;
  }

  NodePtr parse_unary() {
    if (!is_op("-") && !is_op("+")) return parse_postfix(parse_primary());
    DepthGuard guard(*this);
    auto n = make(NodeKind::kUnary, peek().pos);
    n->text = next().text;
    n->kids.push_back(parse_unary());
    return finish(std::move(n));
  }

  // Appends "(args)" to a call, filter or test node: positional arguments
  // first, then name=value ones (their names in node.names).
  void parse_arguments(Node& node) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == Tok::kName && is_op("=", 1)) {
        node.names.push_back(next().text);
        next();
        node.kids.push_back(parse_expression());
      } else {
        if (!node.names.empty()) fail_here("a positional argument cannot follow a keyword argument");
        node.kids.push_back(parse_expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    next();
  }

  NodePtr parse_postfix(NodePtr operand) {
    while (true) {
      if (is_op(".")) {
        auto n = make(NodeKind::kAttr, next().pos);
        if (peek().kind == Tok::kInt) {  // items.0 is items[0]
          n->kind = NodeKind::kIndex;
          auto index = make(NodeKind::kLiteral, peek().pos);
          index->literal_kind = LiteralKind::kInt;
          index->literal_int = next().int_value;
          n->kids.push_back(std::move(operand));
          n->kids.push_back(std::move(index));
        } else {
          n->text = expect_name("an attribute name after '.'");
          n->kids.push_back(std::move(operand));
        }
        operand = finish(std::move(n));
      } else if (is_op("[")) {
        operand = parse_subscript(std::move(operand));
      } else if (is_op("(")) {
        auto n = make(NodeKind::kCall, operand->pos);  // errors point at what is called
        n->kids.push_back(std::move(operand));
        parse_arguments(*n);
        operand = finish(std::move(n));
      } else {
        return operand;
      }
    }
  }

  NodePtr parse_subscript(NodePtr operand) {
    const std::size_t pos = next().pos;  // [
    NodePtr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (is_op(":")) {
        if (++colons > 2) fail_here("a slice has at most two ':'");
        next();
      } else {
        if (parts[colons]) fail_here("expected ':' or ']'");
        parts[colons] = parse_expression();
      }
    }
    next();
    if (colons == 0 && !parts[0]) fail(src_, pos, "empty subscript []");
    auto n = make(colons == 0 ? NodeKind::kIndex : NodeKind::kSlice, pos);
    n->kids.push_back(std::move(operand));
    n->kids.push_back(std::move(parts[0]));
    if (colons > 0) {
      n->kids.push_back(std::move(parts[1]));
      n->kids.push_back(std::move(parts[2]));
    }
    return finish(std::move(n));
  }

  NodePtr literal(std::size_t pos, LiteralKind kind) {
    auto n = make(NodeKind::kLiteral, pos);
    n->literal_kind = kind;
    return n;
  }

  NodePtr parse_primary() {
    const Token& t = peek();
    switch (t.kind) {
      case Tok::kName: {
        next();
        if (t.text == "none" || t.text == "None") return literal(t.pos, LiteralKind::kNone);
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          auto n = literal(t.pos, LiteralKind::kBool);
          n->literal_bool = t.text[0] == 't' || t.text[0] == 'T';
          return n;
        }
        auto n = make(NodeKind::kName, t.pos);
        n->text = t.text;
        return n;
      }
      case Tok::kString: {
        auto n = literal(t.pos, LiteralKind::kString);
        while (peek().kind == Tok::kString) n->text += next().text;  // "a" "b" is "ab"
        return n;
      }
      case Tok::kInt: {
        auto n = literal(t.pos, LiteralKind::kInt);
        n->literal_int = next().int_value;
        return n;
      }
      case Tok::kFloat: {
        auto n = literal(t.pos, LiteralKind::kFloat);
        n->literal_float = next().float_value;
        return n;
      }
      case Tok::kOp:
        if (t.text == "(") return parse_parenthesized();
        if (t.text == "[") return parse_sequence(NodeKind::kList, "]");
        if (t.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail_here("expected a value");
  }

  // "(x)" is x; "(x, y)" and "()" are tuples.
  NodePtr parse_parenthesized() {
    const std::size_t pos = next().pos;
    if (is_op(")")) {
      next();
      return make(NodeKind::kTuple, pos);
    }
    NodePtr first = parse_expression();
    if (is_op(")")) {
      next();
      return first;
    }
    auto n = make(NodeKind::kTuple, pos);
    n->kids.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (is_op(")")) break;
      n->kids.push_back(parse_expression());
    }
    expect_op(")");
    return finish(std::move(n));
  }

  NodePtr parse_sequence(NodeKind kind, std::string_view close) {
    auto n = make(kind, next().pos);
    while (!is_op(close)) {
      n->kids.push_back(parse_expression());
      if (!is_op(close)) expect_op(",");
    }
    next();
    return finish(std::move(n));
  }

  NodePtr parse_dict() {
    auto n = make(NodeKind::kDict, next().pos);
    while (!is_op("}")) {
      n->kids.push_back(parse_expression());
      expect_op(":");
      n->kids.push_back(parse_expression());
      if (!is_op("}")) expect_op(",");
    }
    next();
    return finish(std::move(n));
  }

  std::string_view src_;
  std::vector<Token> tokens_;
  const Limits& limits_;
  std::size_t at_ = 0;
  int depth_ = 0;
};

}  // namespace

std::shared_ptr<const Program> parse_template(std::string_view source, const Limits& limits) {
  if (source.size() > limits.max_template_bytes) {
    throw Error(ErrorKind::kInvalidInput, "chat template is " + std::to_string(source.size()) +
                                              " bytes, over the limit of " + std::to_string(limits.max_template_bytes));
  }
  auto program = std::make_shared<Program>();
  program->source = std::string(source);
  std::string_view text = program->source;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);  // Jinja's keep_trailing_newline=False
  Parser parser(program->source, Lexer(text).run(), limits);
  program->body = parser.parse_program();
  return program;
}

}  // namespace fedge::inference::jinja
