// fedge's one error type. Every failure that reaches a user names what is at
// fault (file, field, peer) and, where it can, what to do about it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace fedge {

// What kind of failure, so that callers (and the CLI's exit code) can react
// without parsing messages.
enum class ErrorKind {
  kInvalidInput,   // bad flag, bad config, malformed file or message: the user's to fix
  kNotFound,       // a file, tensor, key or peer that is not there
  kIo,             // the operating system refused (read, write, mmap, socket)
  kProtocol,       // a peer broke the protocol (wrong round, size, order)
  kPrivacy,        // a privacy or secure-aggregation guarantee would not hold
  kRuntime,        // anything else that went wrong while doing real work
  kUnimplemented,  // a feature that is named but not built yet
};

std::string_view error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message)
      : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

// Process exit code for an error: 2 for what the user must fix (bad usage or
// input, missing files), 1 for failures while running.
int exit_code_for(ErrorKind kind);

}  // namespace fedge
