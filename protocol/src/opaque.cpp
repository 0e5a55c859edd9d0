#include "fedge/protocol/opaque.h"

#include <cstring>

namespace fedge::protocol {

OpaquePart single_segment(std::shared_ptr<capnp::MallocMessageBuilder> message) {
  auto segments = message->getSegmentsForOutput();
  if (segments.size() != 1) return {};
  const auto* begin = reinterpret_cast<const std::uint64_t*>(segments[0].begin());
  return {Payload<std::uint64_t>::shared({begin, segments[0].size()}, std::move(message))};
}

bool operator==(const OpaquePart& a, const OpaquePart& b) {
  if (a.empty() || b.empty()) return a.empty() == b.empty();
  if (a.words == b.words) return true;
  // The same struct may be laid out differently (copied, or written field by
  // field): compare the canonical forms.
  try {
    PartReader ra(a), rb(b);
    const auto ca = ra.root<capnp::AnyStruct>().canonicalize();
    const auto cb = rb.root<capnp::AnyStruct>().canonicalize();
    return ca.size() == cb.size() && std::memcmp(ca.begin(), cb.begin(), ca.size() * sizeof(capnp::word)) == 0;
  } catch (const kj::Exception&) {
    return false;  // a malformed part (made by hand) equals only its own words
  }
}

}  // namespace fedge::protocol
