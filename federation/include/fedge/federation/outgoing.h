// What the coordinator's units hand back instead of doing I/O: a message for
// a node, or the reason a node's message is refused (the core turns it into
// an ErrorReply).
#pragma once

#include <string>

#include "fedge/protocol/messages.h"

namespace fedge::federation {

struct Outgoing {
  protocol::NodeId to = 0;
  protocol::Envelope envelope;  // bulk payloads own their storage
};

struct Refusal {
  protocol::ErrorCode code = protocol::ErrorCode::kUnknown;
  std::string why;
};

// A coordinator message for `node` in `round` (0 outside rounds) and its attempt.
Outgoing coordinator_message(protocol::NodeId node, std::uint64_t round, std::uint32_t attempt, protocol::Body body);

}  // namespace fedge::federation
