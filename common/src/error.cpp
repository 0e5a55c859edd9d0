#include "fedge/common/error.h"

namespace fedge {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput: return "invalid input";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kIo: return "I/O error";
    case ErrorKind::kProtocol: return "protocol error";
    case ErrorKind::kPrivacy: return "privacy error";
    case ErrorKind::kRuntime: return "runtime error";
    case ErrorKind::kUnimplemented: return "not implemented";
  }
  return "error";
}

int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
    case ErrorKind::kNotFound:
    case ErrorKind::kUnimplemented:
      return 2;
    default:
      return 1;
  }
}

}  // namespace fedge
