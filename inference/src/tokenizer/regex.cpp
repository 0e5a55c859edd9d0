#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>

#include "fedge/common/error.h"
#include "utf8.h"

namespace fedge::inference::tok {

namespace {
pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }
pcre2_match_data* as_md(void* p) { return static_cast<pcre2_match_data*>(p); }
}  // namespace

Regex::Regex(std::string pattern, const std::string& field) : pattern_(std::move(pattern)) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // UCP makes \s, \w, \d and friends Unicode-aware, as in the Rust regex
  // engines that Hugging Face tokenizers use.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(ErrorKind::kInvalidInput,
                field + ": regex does not compile at offset " + std::to_string(err_off) + ": " +
                    reinterpret_cast<const char*>(msg));
  }
  code_ = code;
  // JIT is an optimisation only: on platforms without it we match interpreted.
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(as_code(code_)); }

Regex::Matcher::Matcher(const Regex& re)
    : re_(re), match_data_(pcre2_match_data_create_from_pattern(as_code(re.code_), nullptr)) {
  if (match_data_ == nullptr) throw Error(ErrorKind::kRuntime, "tokenizer: out of memory for regex match data");
}

Regex::Matcher::~Matcher() { pcre2_match_data_free(as_md(match_data_)); }

void Regex::Matcher::find_all(std::string_view subject, std::vector<Span>& out) {
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  std::size_t start = 0;
  while (start <= subject.size()) {
    // The caller validated the text once; skipping PCRE2's per-call check keeps
    // matching linear in the text length.
    const int rc = re_.jit_ ? pcre2_jit_match(as_code(re_.code_), s, subject.size(), start,
                                              PCRE2_NO_UTF_CHECK, as_md(match_data_), nullptr)
                            : pcre2_match(as_code(re_.code_), s, subject.size(), start,
                                          PCRE2_NO_UTF_CHECK, as_md(match_data_), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error(ErrorKind::kRuntime, "tokenizer: regex '" + re_.pattern_ + "' failed: " +
                                           reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(as_md(match_data_));
    const std::size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.push_back({b, e});
      start = e;
    } else {
      // An empty match: step over one character so the scan always advances.
      if (b >= subject.size()) return;
      start = b + utf8_step(subject, b).len;
    }
  }
}

}  // namespace fedge::inference::tok
