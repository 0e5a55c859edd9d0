// A compiled PCRE2 pattern (UTF + Unicode properties, JIT where available) for
// the pre-tokenizer's Split and ByteLevel regexes. Private to fedge_tokenizer.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::inference::tok {

struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
};

class Regex {
 public:
  // Throws Error(kInvalidInput) naming `field` when the pattern does not compile.
  Regex(std::string pattern, const std::string& field);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }

  // Match state for one caller (PCRE2 match data is not shareable between
  // threads), reused across all the pieces of one encode call.
  class Matcher {
   public:
    explicit Matcher(const Regex& re);
    ~Matcher();
    Matcher(const Matcher&) = delete;
    Matcher& operator=(const Matcher&) = delete;
    // Appends every non-overlapping match in `subject` (valid UTF-8) to `out`.
    void find_all(std::string_view subject, std::vector<Span>& out);

   private:
    const Regex& re_;
    void* match_data_;
  };

 private:
  std::string pattern_;
  void* code_ = nullptr;
  bool jit_ = false;
};

}  // namespace fedge::inference::tok
