// Reading and writing an OpaquePart (messages.h) as its schema struct. This is
// the one header outside protocol/src that sees Cap'n Proto: it is for the layer
// that owns the C++ form of the opaque parts (federation/src/wire.cpp) and for
// protocol's own tests. scripts/check-layers.sh keeps everyone else out.
#pragma once

#include <cstdint>
#include <limits>
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
// it); a part built by hand in a test may still be malformed, so a
// kj::Exception is possible (bounds are always checked).
class PartReader {
 public:
  explicit PartReader(const OpaquePart& part)
      : segment_(reinterpret_cast<const capnp::word*>(part.words.data()), part.words.size()),
        reader_(kj::arrayPtr(&segment_, 1), options()) {}
  template <class Schema>
  typename Schema::Reader root() {
    return reader_.getRoot<Schema>();
  }

 private:
  // No traversal limit of its own: a decoded part was already walked whole
  // within the receiver's limit (Limits::traversal_words) when it was copied
  // out, and a list of zero-sized elements costs a word per element to walk
  // while taking none to store, so a limit derived from the part's size would
  // refuse what decode() accepted (found by fuzz_protocol).
  static capnp::ReaderOptions options() {
    capnp::ReaderOptions o;
    o.traversalLimitInWords = std::numeric_limits<std::uint64_t>::max();
    return o;
  }
  kj::ArrayPtr<const capnp::word> segment_;
  capnp::SegmentArrayMessageReader reader_;
};

}  // namespace fedge::protocol
