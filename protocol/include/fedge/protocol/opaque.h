// Reading and writing an OpaquePart (messages.h) as its schema struct. This is
// the one header outside protocol/src that sees Cap'n Proto: it is for the layer
// that owns the C++ form of the opaque parts (federation/src/wire.cpp) and for
// protocol's own tests. scripts/check-layers.sh keeps everyone else out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include <capnp/message.h>
#include <kj/array.h>

#include "fedge.capnp.h"
#include "fedge/protocol/messages.h"

namespace fedge::protocol {

// The one segment of `message` as a part that keeps the builder alive (no
// copy); empty when the message spilled into more segments.
OpaquePart single_segment(std::shared_ptr<capnp::MallocMessageBuilder> message);

// A copy of `reader` as a part, its structs at the sizes they have there.
// `words_hint`: room for the copy (the whole received message is always
// enough); a copy that does not fit is gathered in a second copy.
template <class Reader>
OpaquePart part_of(Reader reader, std::size_t words_hint) {
  auto message = std::make_shared<capnp::MallocMessageBuilder>(static_cast<unsigned>(
      std::min<std::size_t>(words_hint + 1, std::numeric_limits<unsigned>::max())));
  message->setRoot(reader);
  if (OpaquePart part = single_segment(message); !part.empty()) return part;
  return part_of(reader, reader.totalSize().wordCount + 1);
}

// Builds a part of schema struct `Schema`: fill(Schema::Builder) sets its
// fields. `words_hint`: about the words it takes (bulk data included), so that
// it is written in one segment, without a second copy.
template <class Schema, class Fill>
OpaquePart make_part(Fill&& fill, std::size_t words_hint = 1024) {
  auto message = std::make_shared<capnp::MallocMessageBuilder>(static_cast<unsigned>(
      std::min<std::size_t>(words_hint + 8, std::numeric_limits<unsigned>::max())));
  auto root = message->initRoot<Schema>();
  fill(root);
  if (OpaquePart part = single_segment(message); !part.empty()) return part;
  return part_of(root.asReader(), root.asReader().totalSize().wordCount + 1);
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
