#include "fedge/federation/outgoing.h"

namespace fedge::federation {

Outgoing coordinator_message(protocol::NodeId node, std::uint64_t round, std::uint32_t attempt, protocol::Body body) {
  protocol::Envelope e;
  e.round = round;
  e.attempt = attempt;
  e.sender = protocol::kCoordinatorId;
  e.body = std::move(body);
  return {node, std::move(e)};
}

}  // namespace fedge::federation
