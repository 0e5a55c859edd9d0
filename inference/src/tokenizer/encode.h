// One encode call's working state (regex match data, scratch buffers) over a
// shared, read-only TokenizerData. Private to fedge_tokenizer.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer_impl.h"

namespace fedge::inference::tok {

class Encoder {
 public:
  explicit Encoder(const TokenizerData& d);
  ~Encoder();
  // Appends the ids of `text` (no BOS/EOS); throws Error(kInvalidInput) for
  // text that is not valid UTF-8.
  void run(std::string_view text, std::vector<TokenId>& out);

 private:
  struct AddedMatch {
    std::size_t b, e;
    TokenId id;
    int index;
  };
  // A view into the segment's text or into arena_ (for rewritten pieces), so
  // splitting never copies.
  struct Piece {
    std::string_view text;
    bool at_start;  // begins at offset 0 of the input (Metaspace "first")
  };
  std::string_view keep(std::string s);
  std::vector<AddedMatch> find_added(std::string_view text) const;
  void encode_segment(std::string_view seg, bool at_start, std::vector<TokenId>& out);
  std::string normalize(std::string_view seg);
  void split(std::size_t step, std::vector<Piece>& pieces);
  void metaspace(const PreTokenizerStep& p, std::vector<Piece>& pieces);

  const TokenizerData& d_;
  std::vector<std::unique_ptr<Regex::Matcher>> norm_matchers_;
  std::vector<std::unique_ptr<Regex::Matcher>> pre_matchers_;
  std::vector<Span> spans_;
  std::deque<std::string> arena_;  // deque: elements never move
  std::vector<Piece> pieces_, next_;
};

}  // namespace fedge::inference::tok
