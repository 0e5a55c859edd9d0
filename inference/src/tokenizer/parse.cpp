// tokenizer.json -> TokenizerData. Every rejection names the source and the
// JSON field at fault, and says what is supported instead.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "fedge/common/error.h"
#include "tokenizer_impl.h"
#include "utf8.h"

namespace fedge::inference::tok {

namespace {

using json = nlohmann::json;

// GPT-2's pre-tokenizer pattern, which ByteLevel applies when use_regex is on.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Parser {
 public:
  Parser(const std::string& source, TokenizerData& out) : source_(source), out_(out) {}
  void run(std::string_view text);

 private:
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(ErrorKind::kInvalidInput, source_ + ": " + field + " " + what);
  }
  [[noreturn]] void unsupported(const std::string& field, const std::string& type,
                                const std::string& supported) const {
    fail(field, "'" + type + "' is not supported (supported: " + supported + ")");
  }
  const json* opt(const json& obj, const char* key) const;
  const json& req(const json& obj, const char* key, const std::string& field) const;
  std::string str(const json& obj, const char* key, const std::string& field) const;
  bool boolean(const json& obj, const char* key, const std::string& field, bool dflt) const;
  std::int64_t integer(const json& v, const std::string& field, std::int64_t lo, std::int64_t hi) const;
  TokenId token_id(const json& v, const std::string& field) const {
    return static_cast<TokenId>(integer(v, field, 0, kMaxTokenId - 1));
  }
  std::string type_of(const json& obj, const std::string& field) const;
  std::string pattern(const json& obj, const std::string& field, bool& is_regex) const;
  std::shared_ptr<Regex> compile(const json& obj, const std::string& field) const;

  void model(const json& m);
  void vocab(const json& v);
  void merges(const json& v);
  void added_tokens(const json& v);
  void normalizer(const json& n, const std::string& field);
  void pre_tokenizer(const json& p, const std::string& field);
  void post_processor(const json& p, const std::string& field);
  void template_processing(const json& p, const std::string& field);
  void decoder(const json& d, const std::string& field);
  PrependScheme prepend_scheme(const json& obj, const std::string& field) const;
  void finish();

  const std::string& source_;
  TokenizerData& out_;
  TokenId max_id_ = -1;
};

const json* Parser::opt(const json& obj, const char* key) const {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& Parser::req(const json& obj, const char* key, const std::string& field) const {
  const json* v = opt(obj, key);
  if (v == nullptr) fail(field + "." + key, "is missing");
  return *v;
}

std::string Parser::str(const json& obj, const char* key, const std::string& field) const {
  const json& v = req(obj, key, field);
  if (!v.is_string()) fail(field + "." + key, "must be a string, not " + std::string(v.type_name()));
  return v.get<std::string>();
}

bool Parser::boolean(const json& obj, const char* key, const std::string& field, bool dflt) const {
  const json* v = opt(obj, key);
  if (v == nullptr) return dflt;
  if (!v->is_boolean()) fail(field + "." + key, "must be true or false, not " + std::string(v->type_name()));
  return v->get<bool>();
}

std::int64_t Parser::integer(const json& v, const std::string& field, std::int64_t lo, std::int64_t hi) const {
  if (!v.is_number_integer()) fail(field, "must be an integer, not " + std::string(v.type_name()));
  // Unsigned values above INT64_MAX would wrap; compare them as unsigned first.
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    fail(field, "= " + v.dump() + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  const std::int64_t x = v.get<std::int64_t>();
  if (x < lo || x > hi)
    fail(field, "= " + std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::string Parser::type_of(const json& obj, const std::string& field) const {
  if (!obj.is_object()) fail(field, "must be an object or null, not " + std::string(obj.type_name()));
  return str(obj, "type", field);
}

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}.
std::string Parser::pattern(const json& obj, const std::string& field, bool& is_regex) const {
  const json& p = req(obj, "pattern", field);
  if (!p.is_object()) fail(field + ".pattern", "must be {\"String\": ...} or {\"Regex\": ...}");
  if (const json* s = opt(p, "String")) {
    if (!s->is_string()) fail(field + ".pattern.String", "must be a string");
    is_regex = false;
    return s->get<std::string>();
  }
  if (const json* r = opt(p, "Regex")) {
    if (!r->is_string()) fail(field + ".pattern.Regex", "must be a string");
    is_regex = true;
    return r->get<std::string>();
  }
  fail(field + ".pattern", "must be {\"String\": ...} or {\"Regex\": ...}");
}

// Literal patterns become escaped regexes so that one matcher serves both.
std::shared_ptr<Regex> Parser::compile(const json& obj, const std::string& field) const {
  bool is_regex = false;
  std::string p = pattern(obj, field, is_regex);
  if (p.empty()) fail(field + ".pattern", "must not be empty");
  if (!is_regex) {
    std::string esc;
    for (char c : p) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x80 && !std::isalnum(u)) esc += '\\';
      esc += c;
    }
    p = esc;
  }
  return std::make_shared<Regex>(p, source_ + ": " + field + ".pattern");
}

void Parser::run(std::string_view text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kInvalidInput,
                source_ + ": not valid JSON (truncated or corrupt file?): " + e.what());
  }
  if (!root.is_object()) fail("top level", "must be a JSON object, not " + std::string(root.type_name()));
  const json* m = opt(root, "model");
  if (m == nullptr) fail("model", "is missing: a tokenizer.json needs a model section");
  model(*m);
  if (const json* a = opt(root, "added_tokens")) added_tokens(*a);
  if (const json* n = opt(root, "normalizer")) normalizer(*n, "normalizer");
  if (const json* p = opt(root, "pre_tokenizer")) pre_tokenizer(*p, "pre_tokenizer");
  if (const json* d = opt(root, "decoder")) {
    out_.has_decoder = true;
    decoder(*d, "decoder");
  }
  if (const json* p = opt(root, "post_processor")) post_processor(*p, "post_processor");
  finish();
}

void Parser::model(const json& m) {
  if (!m.is_object()) fail("model", "must be an object, not " + std::string(m.type_name()));
  if (const json* t = opt(m, "type")) {
    if (!t->is_string()) fail("model.type", "must be a string");
    if (t->get<std::string>() != "BPE") unsupported("model.type", t->get<std::string>(), "BPE");
  }
  vocab(req(m, "vocab", "model"));
  merges(req(m, "merges", "model"));
  auto& b = out_.model;
  b.byte_fallback = boolean(m, "byte_fallback", "model", false);
  b.fuse_unk = boolean(m, "fuse_unk", "model", false);
  b.ignore_merges = boolean(m, "ignore_merges", "model", false);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* v = opt(m, key);
    if (v != nullptr && !(v->is_string() && v->get<std::string>().empty()))
      fail(std::string("model.") + key, "is not supported (must be null or empty)");
  }
  if (const json* u = opt(m, "unk_token")) {
    if (!u->is_string()) fail("model.unk_token", "must be a string or null");
    auto it = b.vocab.find(u->get<std::string>());
    if (it == b.vocab.end()) fail("model.unk_token", "'" + u->get<std::string>() + "' is not in model.vocab");
    b.unk = it->second;
  }
}

void Parser::vocab(const json& v) {
  if (!v.is_object()) fail("model.vocab", "must be an object of token -> id, not " + std::string(v.type_name()));
  if (v.size() > kMaxVocabEntries)
    fail("model.vocab", "has " + std::to_string(v.size()) + " entries, more than the limit " +
                            std::to_string(kMaxVocabEntries));
  auto& vocab = out_.model.vocab;
  vocab.reserve(v.size());
  std::unordered_map<TokenId, const std::string*> by_id;
  by_id.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    const TokenId id = token_id(it.value(), "model.vocab['" + it.key() + "']");
    auto [pos, fresh] = by_id.emplace(id, &it.key());
    if (!fresh)
      fail("model.vocab", "gives id " + std::to_string(id) + " to both '" + *pos->second + "' and '" +
                              it.key() + "'");
    vocab.emplace(it.key(), id);
    max_id_ = std::max(max_id_, id);
  }
}

void Parser::merges(const json& v) {
  if (!v.is_array()) fail("model.merges", "must be an array, not " + std::string(v.type_name()));
  if (v.size() > kMaxMerges) fail("model.merges", "has more than " + std::to_string(kMaxMerges) + " entries");
  auto& b = out_.model;
  b.merges.reserve(std::min<std::size_t>(v.size(), std::size_t{1} << 20));  // grows past this only as entries check out
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    const json& e = v[i];
    if (e.is_string()) {
      // The older format: "left right", exactly one separating space.
      const std::string s = e.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(field, "'" + s + "' must be two tokens separated by one space");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      fail(field, "must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    auto lookup = [&](const std::string& tok, const char* what) {
      auto it = b.vocab.find(tok);
      if (it == b.vocab.end()) fail(field, std::string("refers to ") + what + " token '" + tok + "' that is not in model.vocab");
      return it->second;
    };
    const TokenId l = lookup(left, "left"), r = lookup(right, "right"), m = lookup(left + right, "merged");
    // A repeated pair keeps its first (best) rank, as HF does.
    b.merges.insert(pair_key(l, r), BpeModel::Merge{static_cast<int>(i), m});
  }
}

void Parser::added_tokens(const json& v) {
  if (!v.is_array()) fail("added_tokens", "must be an array, not " + std::string(v.type_name()));
  if (v.size() > kMaxVocabEntries) fail("added_tokens", "has too many entries");
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    const json& e = v[i];
    if (!e.is_object()) fail(field, "must be an object");
    AddedToken t;
    t.id = token_id(req(e, "id", field), field + ".id");
    t.content = str(e, "content", field);
    if (t.content.empty()) fail(field + ".content", "must not be empty");
    if (first_invalid_utf8(t.content) != std::string::npos) fail(field + ".content", "is not valid UTF-8");
    t.special = boolean(e, "special", field, false);
    t.lstrip = boolean(e, "lstrip", field, false);
    t.rstrip = boolean(e, "rstrip", field, false);
    t.single_word = boolean(e, "single_word", field, false);
    t.normalized = boolean(e, "normalized", field, !t.special);
    max_id_ = std::max(max_id_, t.id);
    out_.added.push_back(std::move(t));
  }
}

void Parser::normalizer(const json& n, const std::string& field) {
  const std::string type = type_of(n, field);
  if (type == "Sequence") {
    const json& list = req(n, "normalizers", field);
    if (!list.is_array()) fail(field + ".normalizers", "must be an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      if (!list[i].is_null()) normalizer(list[i], field + ".normalizers[" + std::to_string(i) + "]");
  } else if (type == "Prepend") {
    out_.normalizers.push_back({NormalizerStep::Kind::kPrepend, str(n, "prepend", field), {}, {}, false, false});
  } else if (type == "Replace") {
    NormalizerStep s{NormalizerStep::Kind::kReplace, {}, str(n, "content", field), {}, false, false};
    bool is_regex = false;
    s.text = pattern(n, field, is_regex);
    if (is_regex) s.regex = compile(n, field);
    else if (s.text.empty()) fail(field + ".pattern", "must not be empty");
    out_.normalizers.push_back(std::move(s));
  } else if (type == "Strip") {
    out_.normalizers.push_back({NormalizerStep::Kind::kStrip, {}, {}, {},
                                boolean(n, "strip_left", field, true), boolean(n, "strip_right", field, true)});
  } else if (type == "NFC" || type == "NFKC" || type == "NFD" || type == "NFKD") {
    // Unicode normalisation changes only text that is not already in that
    // form; model prompts almost always are, so we pass text through as is.
    spdlog::debug("{}: {} normalizer '{}' is not applied (text is used as given)", source_, field, type);
  } else {
    unsupported(field + ".type", type, "Sequence, Prepend, Replace, Strip, NFC/NFKC/NFD/NFKD (ignored)");
  }
}

PrependScheme Parser::prepend_scheme(const json& obj, const std::string& field) const {
  if (const json* p = opt(obj, "prepend_scheme")) {
    if (!p->is_string()) fail(field + ".prepend_scheme", "must be a string");
    const std::string s = p->get<std::string>();
    if (s == "first") return PrependScheme::kFirst;
    if (s == "always") return PrependScheme::kAlways;
    if (s == "never") return PrependScheme::kNever;
    unsupported(field + ".prepend_scheme", s, "first, always, never");
  }
  // Files older than prepend_scheme carry add_prefix_space instead.
  return boolean(obj, "add_prefix_space", field, true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

void Parser::pre_tokenizer(const json& p, const std::string& field) {
  const std::string type = type_of(p, field);
  using K = PreTokenizerStep::Kind;
  auto after_byte_level = [&] {
    if (out_.byte_level) fail(field, "'" + type + "' after a ByteLevel pre-tokenizer is not supported");
  };
  PreTokenizerStep s;
  if (type == "Sequence") {
    const json& list = req(p, "pretokenizers", field);
    if (!list.is_array()) fail(field + ".pretokenizers", "must be an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      if (!list[i].is_null()) pre_tokenizer(list[i], field + ".pretokenizers[" + std::to_string(i) + "]");
    return;
  } else if (type == "Split") {
    after_byte_level();
    s.kind = K::kSplit;
    s.regex = compile(p, field);
    s.invert = boolean(p, "invert", field, false);
    const std::string b = str(p, "behavior", field);
    if (b == "Removed") s.behavior = SplitBehavior::kRemoved;
    else if (b == "Isolated") s.behavior = SplitBehavior::kIsolated;
    else if (b == "MergedWithPrevious") s.behavior = SplitBehavior::kMergedWithPrevious;
    else if (b == "MergedWithNext") s.behavior = SplitBehavior::kMergedWithNext;
    else if (b == "Contiguous") s.behavior = SplitBehavior::kContiguous;
    else unsupported(field + ".behavior", b, "Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
  } else if (type == "Digits" || type == "WhitespaceSplit" || type == "Whitespace") {
    // These are Splits with fixed patterns.
    after_byte_level();
    s.kind = K::kSplit;
    std::string pat = R"(\s+)";
    s.behavior = SplitBehavior::kRemoved;
    if (type == "Digits") {
      pat = boolean(p, "individual_digits", field, false) ? R"(\p{N})" : R"(\p{N}+)";
      s.behavior = SplitBehavior::kIsolated;
    } else if (type == "Whitespace") {
      pat = R"(\w+|[^\w\s]+)";
      s.invert = true;
    }
    s.regex = std::make_shared<Regex>(pat, source_ + ": " + field);
  } else if (type == "ByteLevel") {
    s.kind = K::kByteLevel;
    s.add_prefix_space = boolean(p, "add_prefix_space", field, true);
    if (boolean(p, "use_regex", field, true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, source_ + ": " + field);
    out_.byte_level = true;
  } else if (type == "Metaspace") {
    after_byte_level();
    s.kind = K::kMetaspace;
    if (opt(p, "replacement") != nullptr) s.replacement = str(p, "replacement", field);
    if (s.replacement.empty() || utf8_step(s.replacement, 0).len != s.replacement.size())
      fail(field + ".replacement", "must be a single character");
    s.prepend = prepend_scheme(p, field);
    s.split = boolean(p, "split", field, true);
  } else {
    unsupported(field + ".type", type, "ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence");
  }
  out_.pre_tokenizers.push_back(std::move(s));
}

void Parser::decoder(const json& d, const std::string& field) {
  const std::string type = type_of(d, field);
  using K = DecoderStep::Kind;
  DecoderStep s;
  if (type == "Sequence") {
    const json& list = req(d, "decoders", field);
    if (!list.is_array()) fail(field + ".decoders", "must be an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      if (!list[i].is_null()) decoder(list[i], field + ".decoders[" + std::to_string(i) + "]");
    return;
  } else if (type == "ByteLevel") {
    s.kind = K::kByteLevel;
  } else if (type == "ByteFallback") {
    s.kind = K::kByteFallback;
  } else if (type == "Fuse") {
    s.kind = K::kFuse;
  } else if (type == "Replace") {
    s.kind = K::kReplace;
    bool is_regex = false;
    s.pattern = pattern(d, field, is_regex);
    if (is_regex || s.pattern.empty()) fail(field + ".pattern", "must be a non-empty {\"String\": ...} in a decoder");
    s.content = str(d, "content", field);
  } else if (type == "Strip") {
    s.kind = K::kStrip;
    s.pattern = str(d, "content", field);
    if (s.pattern.empty()) fail(field + ".content", "must be a character");
    s.start = static_cast<int>(integer(req(d, "start", field), field + ".start", 0, 1 << 20));
    s.stop = static_cast<int>(integer(req(d, "stop", field), field + ".stop", 0, 1 << 20));
  } else if (type == "Metaspace") {
    s.kind = K::kMetaspace;
    s.pattern = opt(d, "replacement") != nullptr ? str(d, "replacement", field) : "\xE2\x96\x81";
    if (s.pattern.empty()) fail(field + ".replacement", "must be a single character");
    s.prepend = prepend_scheme(d, field);
  } else {
    unsupported(field + ".type", type, "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence");
  }
  out_.decoders.push_back(std::move(s));
}

void Parser::post_processor(const json& p, const std::string& field) {
  const std::string type = type_of(p, field);
  if (type == "ByteLevel") return;  // only adjusts offsets, which we do not report
  if (type == "Sequence") {
    const json& list = req(p, "processors", field);
    if (!list.is_array()) fail(field + ".processors", "must be an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      if (!list[i].is_null()) post_processor(list[i], field + ".processors[" + std::to_string(i) + "]");
    return;
  }
  if (type == "TemplateProcessing") return template_processing(p, field);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const json& e = req(p, key, field);
      if (!e.is_array() || e.size() != 2 || !e[0].is_string())
        fail(field + "." + key, "must be [\"token\", id]");
      const TokenId id = token_id(e[1], field + "." + key + "[1]");
      (std::string(key) == "cls" ? out_.prefix : out_.suffix).push_back(id);
    }
    return;
  }
  unsupported(field + ".type", type, "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
}

// Only the "single" template matters for us (we encode one sequence at a
// time): specials before $A become the prefix, those after it the suffix.
void Parser::template_processing(const json& p, const std::string& field) {
  const json& single = req(p, "single", field);
  if (!single.is_array()) fail(field + ".single", "must be an array");
  const json* specials = opt(p, "special_tokens");
  if (specials != nullptr && !specials->is_object()) fail(field + ".special_tokens", "must be an object");
  bool after = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const std::string f = field + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (!item.is_object()) fail(f, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    if (opt(item, "Sequence") != nullptr) {
      after = true;
      continue;
    }
    const json& st = req(item, "SpecialToken", f);
    const std::string name = str(st, "id", f + ".SpecialToken");
    if (specials == nullptr || !specials->contains(name))
      fail(f, "names special token '" + name + "' that " + field + ".special_tokens does not define");
    const json& ids = req((*specials)[name], "ids", field + ".special_tokens['" + name + "']");
    if (!ids.is_array()) fail(field + ".special_tokens['" + name + "'].ids", "must be an array");
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const TokenId id = token_id(ids[k], field + ".special_tokens['" + name + "'].ids[" + std::to_string(k) + "]");
      (after ? out_.suffix : out_.prefix).push_back(id);
    }
  }
}

void Parser::finish() {
  const TokenId n = max_id_ + 1;
  auto check = [&](const std::vector<TokenId>& ids, const char* what) {
    for (TokenId id : ids)
      if (id >= n) fail("post_processor", std::string(what) + " id " + std::to_string(id) + " is not a token of this vocabulary");
  };
  check(out_.prefix, "special");
  check(out_.suffix, "special");
  auto& b = out_.model;
  const auto& map = byte_level_map();
  for (int c = 0; c < 128; ++c) {
    auto it = b.vocab.find(std::string(1, static_cast<char>(c)));
    b.ascii_symbol[c] = it != b.vocab.end() ? it->second : -1;
  }
  for (int c = 0; c < 256; ++c) {
    auto it = b.vocab.find(map.byte_to_utf8[c]);
    b.byte_symbol[c] = it != b.vocab.end() ? it->second : -1;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", c);
    auto fb = b.vocab.find(std::string_view(name));
    b.fallback_byte[c] = b.byte_fallback && fb != b.vocab.end() ? fb->second : -1;
  }
  b.split_at_metaspace = !out_.byte_level && !b.ignore_merges && b.vocab.count("\xE2\x96\x81") > 0;
  for (const auto& [tok, id] : b.vocab) {
    if (!b.split_at_metaspace) break;
    // "▁" preceded by a byte that does not end another "▁".
    for (std::size_t p = tok.find("\xE2\x96\x81", 1); p != std::string::npos; p = tok.find("\xE2\x96\x81", p + 3))
      if (p < 3 || tok.compare(p - 3, 3, "\xE2\x96\x81") != 0) b.split_at_metaspace = false;
  }
  out_.build_tables();
  out_.guess_special_ids();
}

}  // namespace

void parse_tokenizer_json(std::string_view text, const std::string& source, TokenizerData& out) {
  Parser(source, out).run(text);
}

}  // namespace fedge::inference::tok
