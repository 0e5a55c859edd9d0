// The encode pipeline, in Hugging Face's order: split out added tokens, then per
// remaining segment normalize, pre-tokenize into pieces, and BPE each piece.
#include "encode.h"

#include <algorithm>
#include <cctype>

#include "fedge/common/error.h"
#include "utf8.h"

namespace fedge::inference::tok {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Approximates "alphanumeric" for single_word tokens: ASCII letters, digits,
// underscore, and any non-ASCII byte (letters of other scripts).
bool is_word_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || std::isalnum(u) || c == '_';
}

struct Part {
  std::size_t b, e;
  bool delim;
};

// Folds regex matches into pieces following a SplitDelimiterBehavior, the way
// Hugging Face's NormalizedString::split does.
std::vector<Part> apply_behavior(const std::vector<Part>& parts, SplitBehavior behavior) {
  std::vector<Part> acc;
  bool prev = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Part& p : parts)
        if (!p.delim) acc.push_back(p);
      return acc;
    case SplitBehavior::kIsolated:
      return parts;
    case SplitBehavior::kMergedWithPrevious:
      for (const Part& p : parts) {
        if (p.delim && !prev && !acc.empty()) acc.back().e = p.e;
        else acc.push_back(p);
        prev = p.delim;
      }
      return acc;
    case SplitBehavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->delim && !prev && !acc.empty()) acc.back().b = it->b;
        else acc.push_back(*it);
        prev = it->delim;
      }
      std::reverse(acc.begin(), acc.end());
      return acc;
    case SplitBehavior::kContiguous:
      for (const Part& p : parts) {
        if (p.delim == prev && !acc.empty()) acc.back().e = p.e;
        else acc.push_back(p);
        prev = p.delim;
      }
      return acc;
  }
  return acc;
}

}  // namespace

void AddedTrie::insert(std::string_view s, int token) {
  int node = 0;
  first_byte[static_cast<unsigned char>(s[0])] = true;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    int next = child(node, c);
    if (next < 0) {
      next = static_cast<int>(nodes.size());
      nodes[node].kids.emplace_back(c, next);
      nodes.emplace_back();
    }
    node = next;
  }
  nodes[node].token = token;
}

int AddedTrie::child(int node, unsigned char c) const {
  for (const auto& [k, n] : nodes[node].kids)
    if (k == c) return n;
  return -1;
}

Encoder::Encoder(const TokenizerData& d) : d_(d) {
  for (const auto& s : d.normalizers) norm_matchers_.push_back(s.regex ? std::make_unique<Regex::Matcher>(*s.regex) : nullptr);
  for (const auto& s : d.pre_tokenizers) pre_matchers_.push_back(s.regex ? std::make_unique<Regex::Matcher>(*s.regex) : nullptr);
}

Encoder::~Encoder() = default;

void Encoder::run(std::string_view text, std::vector<TokenId>& out) {
  if (const auto bad = first_invalid_utf8(text); bad != std::string_view::npos)
    throw Error(ErrorKind::kInvalidInput, "tokenizer: the text to encode is not valid UTF-8 (first bad byte at offset " +
                                              std::to_string(bad) + ")");
  std::size_t seg_begin = 0;
  for (const AddedMatch& m : find_added(text)) {
    if (m.b > seg_begin) encode_segment(text.substr(seg_begin, m.b - seg_begin), seg_begin == 0, out);
    out.push_back(m.id);
    seg_begin = m.e;
  }
  if (seg_begin < text.size()) encode_segment(text.substr(seg_begin), seg_begin == 0, out);
}

// Leftmost-longest matching of added tokens (what HF's Aho-Corasick does),
// with lstrip/rstrip widening a match over neighbouring whitespace.
std::vector<Encoder::AddedMatch> Encoder::find_added(std::string_view text) const {
  std::vector<AddedMatch> found;
  const AddedTrie& trie = d_.added_trie;
  if (d_.added.empty()) return found;
  for (std::size_t pos = 0; pos < text.size(); ++pos) {
    if (!trie.first_byte[static_cast<unsigned char>(text[pos])]) continue;
    int node = 0, best = -1;
    std::size_t best_end = 0;
    for (std::size_t j = pos; j < text.size(); ++j) {
      node = trie.child(node, static_cast<unsigned char>(text[j]));
      if (node < 0) break;
      const int t = trie.nodes[node].token;
      if (t < 0) continue;
      const AddedToken& tok = d_.added[t];
      if (tok.single_word && ((pos > 0 && is_word_byte(text[pos - 1])) ||
                              (j + 1 < text.size() && is_word_byte(text[j + 1]))))
        continue;
      best = t;
      best_end = j + 1;
    }
    if (best < 0) continue;
    found.push_back({pos, best_end, d_.added[best].id, best});
    pos = best_end - 1;
  }
  std::size_t prev_end = 0;
  std::vector<AddedMatch> out;
  for (AddedMatch m : found) {
    if (m.b < prev_end) continue;  // swallowed by the previous token's rstrip
    const AddedToken& tok = d_.added[m.index];
    if (tok.lstrip)
      while (m.b > prev_end && is_space(text[m.b - 1])) --m.b;
    if (tok.rstrip)
      while (m.e < text.size() && is_space(text[m.e])) ++m.e;
    prev_end = m.e;
    out.push_back(m);
  }
  return out;
}

std::string Encoder::normalize(std::string_view seg) {
  std::string s(seg);
  for (std::size_t i = 0; i < d_.normalizers.size(); ++i) {
    const NormalizerStep& n = d_.normalizers[i];
    switch (n.kind) {
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, n.text);
        break;
      case NormalizerStep::Kind::kReplace:
        if (!n.regex) {
          replace_all(s, n.text, n.content);
        } else {
          spans_.clear();
          norm_matchers_[i]->find_all(s, spans_);
          std::string r;
          std::size_t pos = 0;
          for (const Span& sp : spans_) {
            r.append(s, pos, sp.begin - pos);
            r.append(n.content);
            pos = sp.end;
          }
          r.append(s, pos, std::string::npos);
          s.swap(r);
        }
        break;
      case NormalizerStep::Kind::kStrip: {
        std::size_t b = 0, e = s.size();
        if (n.left)
          while (b < e && is_space(s[b])) ++b;
        if (n.right)
          while (e > b && is_space(s[e - 1])) --e;
        s = s.substr(b, e - b);
        break;
      }
    }
  }
  return s;
}

std::string_view Encoder::keep(std::string s) {
  arena_.push_back(std::move(s));
  return arena_.back();
}

void Encoder::split(std::size_t step, std::vector<Piece>& pieces) {
  const PreTokenizerStep& p = d_.pre_tokenizers[step];
  next_.clear();
  std::vector<Part> parts;
  for (const Piece& piece : pieces) {
    spans_.clear();
    pre_matchers_[step]->find_all(piece.text, spans_);
    if (p.behavior == SplitBehavior::kIsolated && !p.invert) {
      // The common case (GPT-2, Llama-3, Qwen2 patterns): matches and the
      // gaps between them each become a piece.
      bool first = piece.at_start;
      std::size_t pos = 0;
      for (const Span& sp : spans_) {
        if (sp.begin > pos) next_.push_back({piece.text.substr(pos, sp.begin - pos), first});
        if (sp.begin > pos) first = false;
        next_.push_back({piece.text.substr(sp.begin, sp.end - sp.begin), first});
        first = false;
        pos = sp.end;
      }
      if (pos < piece.text.size()) next_.push_back({piece.text.substr(pos), first});
      continue;
    }
    parts.clear();
    std::size_t pos = 0;
    for (const Span& sp : spans_) {
      if (sp.begin > pos) parts.push_back({pos, sp.begin, false});
      parts.push_back({sp.begin, sp.end, true});
      pos = sp.end;
    }
    if (pos < piece.text.size()) parts.push_back({pos, piece.text.size(), false});
    if (p.invert)
      for (Part& part : parts) part.delim = !part.delim;
    bool first = piece.at_start;
    for (const Part& part : apply_behavior(parts, p.behavior)) {
      if (part.e <= part.b) continue;
      next_.push_back({piece.text.substr(part.b, part.e - part.b), first});
      first = false;
    }
  }
  pieces.swap(next_);
}

void Encoder::metaspace(const PreTokenizerStep& p, std::vector<Piece>& pieces) {
  next_.clear();
  for (const Piece& piece : pieces) {
    std::string text(piece.text);
    replace_all(text, " ", p.replacement);
    const bool prepend = p.prepend == PrependScheme::kAlways || (p.prepend == PrependScheme::kFirst && piece.at_start);
    if (prepend && text.compare(0, p.replacement.size(), p.replacement) != 0) text.insert(0, p.replacement);
    const std::string_view t = keep(std::move(text));
    if (!p.split) {
      next_.push_back({t, piece.at_start});
      continue;
    }
    // MergedWithNext on the replacement: each "▁" starts a new piece.
    bool first = piece.at_start;
    std::size_t begin = 0;
    for (std::size_t hit = t.find(p.replacement, 1); hit != std::string_view::npos;
         hit = t.find(p.replacement, hit + p.replacement.size())) {
      next_.push_back({t.substr(begin, hit - begin), first});
      first = false;
      begin = hit;
    }
    next_.push_back({t.substr(begin), first});
  }
  pieces.swap(next_);
}

void Encoder::encode_segment(std::string_view seg, bool at_start, std::vector<TokenId>& out) {
  arena_.clear();
  pieces_.clear();
  pieces_.push_back({d_.normalizers.empty() ? seg : keep(normalize(seg)), at_start});
  for (std::size_t i = 0; i < d_.pre_tokenizers.size(); ++i) {
    const PreTokenizerStep& p = d_.pre_tokenizers[i];
    switch (p.kind) {
      case PreTokenizerStep::Kind::kSplit:
        split(i, pieces_);
        break;
      case PreTokenizerStep::Kind::kByteLevel:
        if (p.add_prefix_space)
          for (Piece& piece : pieces_)
            if (piece.text.empty() || piece.text[0] != ' ') {
              std::string t;
              t.reserve(piece.text.size() + 1);
              t.push_back(' ');
              t.append(piece.text);
              piece.text = keep(std::move(t));
            }
        if (p.regex) split(i, pieces_);
        break;
      case PreTokenizerStep::Kind::kMetaspace:
        metaspace(p, pieces_);
        break;
    }
  }
  for (const Piece& piece : pieces_) d_.model.encode_piece(piece.text, d_.byte_level, out);
}

}  // namespace fedge::inference::tok
