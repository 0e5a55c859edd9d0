#include "fedge/protocol/decode_path.h"

#include <cctype>
#include <exception>

namespace fedge::protocol {

std::string DecodePath::where() const {
  std::string s;
  for (const auto& p : path_) {
    if (!s.empty() && p.front() != '[') s += '.';
    s += p;
  }
  return s.empty() ? root_ : s;
}

void DecodePath::record_failure() {
  if (failed_at_.empty()) failed_at_ = where();
}

void DecodePath::fail(ErrorCode code, const std::string& what) const {
  throw DecodeError(code, wire_ + ": " + where() + ": " + what);
}

void DecodePath::fail_from_capnp(const std::string& description) const {
  const std::string& at = failed_at_.empty() ? root_ : failed_at_;
  std::string lower = description;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool limit = lower.find("limit") != std::string::npos;  // traversal or nesting limit
  throw DecodeError(limit ? ErrorCode::kTooLarge : ErrorCode::kMalformed,
                    wire_ + ": " + at + ": " + (limit ? "over a decoding limit (" : "malformed message (") +
                        description + ")");
}

FieldGuard::FieldGuard(DecodePath& path, std::string name) : path_(path), uncaught_(std::uncaught_exceptions()) {
  path_.push(std::move(name));
}

FieldGuard::~FieldGuard() {
  if (std::uncaught_exceptions() > uncaught_) path_.record_failure();
  path_.pop();
}

std::string index_name(std::size_t i) {
  std::string s = std::to_string(i);  // appended, not "[" + ... + "]": GCC 12 warns falsely on that (-Wrestrict)
  s.insert(s.begin(), '[');
  s += ']';
  return s;
}

}  // namespace fedge::protocol
