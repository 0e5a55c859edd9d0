// Reading and writing an OpaquePart (messages.h) as its schema struct. This is
// the one header outside protocol/src that sees Cap'n Proto: it is for the layer
// that owns the C++ form of the opaque parts (federation/src/wire.cpp) and for
// protocol's own tests. scripts/check-layers.sh keeps everyone else out.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <capnp/message.h>
#include <kj/array.h>

#include "fedge.capnp.h"
#include "fedge/protocol/messages.h"

namespace fedge::protocol {

// The canonical words of `reader` as a part (one copy of the struct).
template <class Reader>
OpaquePart part_of(Reader reader) {
  auto words = std::make_shared<kj::Array<capnp::word>>(capnp::canonicalize(reader));
  const auto* begin = reinterpret_cast<const std::uint64_t*>(words->begin());
  return {Payload<std::uint64_t>::shared({begin, words->size()}, words)};
}

// Builds a part of schema struct `Schema`: fill(Schema::Builder) sets its fields.
template <class Schema, class Fill>
OpaquePart make_part(Fill&& fill) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<Schema>();
  fill(root);
  return part_of(root.asReader());
}

// A part opened as its schema struct; `part` must outlive it. Reading a field
// of a part that decode() produced cannot fail on structure (decode checked
// it); a part built by hand in a test may still be malformed, so readers are
// made with limits and a kj::Exception is possible.
class PartReader {
 public:
  explicit PartReader(const OpaquePart& part)
      : segment_(reinterpret_cast<const capnp::word*>(part.words.data()), part.words.size()),
        reader_(kj::arrayPtr(&segment_, 1), options(part.words.size())) {}
  template <class Schema>
  typename Schema::Reader root() {
    return reader_.getRoot<Schema>();
  }

 private:
  static capnp::ReaderOptions options(std::size_t words) {
    capnp::ReaderOptions o;
    o.traversalLimitInWords = 2 * words + 1024;  // each field is read once; the margin covers headers
    return o;
  }
  kj::ArrayPtr<const capnp::word> segment_;
  capnp::SegmentArrayMessageReader reader_;
};

}  // namespace fedge::protocol
