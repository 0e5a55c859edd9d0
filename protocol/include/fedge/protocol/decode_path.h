// Where a decoder is inside a message, so that each refusal names the field
// ("roundPlan.selected", "windowOrder.deliveries[3].envelope") rather than
// "bad pointer". Shared by the federation protocol's decoder and the
// simulator's node-host wire.
//
// A FieldGuard names one level for its scope. When an exception leaves a
// guard, the path it was thrown from is recorded, because the kj::Exception
// handler at the decoder's boundary only runs after the stack has unwound.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "fedge/protocol/codec.h"

namespace fedge::protocol {

class DecodePath {
 public:
  // `wire` prefixes every message ("protocol", "host"); `root` names the
  // message itself when no field is being read ("envelope", "message").
  DecodePath(std::string wire, std::string root) : wire_(std::move(wire)), root_(std::move(root)) {}

  void push(std::string name) { path_.push_back(std::move(name)); }
  void pop() { path_.pop_back(); }
  // "a.b[3].c": names joined by dots, [i] entries attached to their list.
  std::string where() const;
  void record_failure();

  [[noreturn]] void fail(ErrorCode code, const std::string& what) const;
  // For the kj::Exception handler at the boundary: a DecodeError at the field
  // the exception left, kTooLarge for Cap'n Proto's traversal and nesting
  // limits, kMalformed for anything else.
  [[noreturn]] void fail_from_capnp(const std::string& description) const;

 private:
  std::string wire_, root_;
  std::vector<std::string> path_;
  std::string failed_at_;
};

class FieldGuard {
 public:
  FieldGuard(DecodePath& path, std::string name);
  ~FieldGuard();
  FieldGuard(const FieldGuard&) = delete;
  FieldGuard& operator=(const FieldGuard&) = delete;

 private:
  DecodePath& path_;
  int uncaught_;
};

// "[i]", a list entry's name in a path.
std::string index_name(std::size_t i);

}  // namespace fedge::protocol
