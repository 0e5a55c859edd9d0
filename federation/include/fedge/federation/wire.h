// The one place where the round's secure-aggregation messages are converted.
// Their one C++ form is aggregation's (aggregation/secagg.h: what computes);
// protocol carries them as opaque parts of the Envelope (protocol/messages.h:
// OpaquePart, with Envelope's round and sender around them), in the schema
// form of protocol/schema/fedge.capnp. Each message is converted here, once per
// direction: to_wire() where it is made, from_wire() where it is read. The
// round client and the coordinator core call nothing else to cross the boundary.
//
// from_wire() checks every field a peer controls (sizes, ranges, the plan it
// belongs to) before copying it and throws Error(kProtocol) naming the message
// and field. from_wire() of a message a node sends takes the client id the
// coordinator derived from the authenticated sender and refuses a message that
// claims another: a node cannot speak for a peer.
#pragma once

#include <cstdint>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/update_codec.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation::wire {

namespace agg = fedge::aggregation;

// ---- a secure plan's settings (RoundPlan::secagg) ----

// The SecAgg+ parameters and what both sides encode updates with: the
// quantiser and the distributed-DP noise bound of the capacity check.
struct SecureSettings {
  agg::SecAggParams params;
  std::uint32_t quant_bits = 0;
  double clip_range = 0;
  std::uint64_t noise_bound = 0;
};
protocol::OpaquePart to_wire(const SecureSettings& settings);
// Reads a secure plan's settings and checks them against the plan (numClients
// is the number of selected nodes, threshold and degree in range, ...).
SecureSettings secure_settings(const protocol::RoundPlan& plan);
// What both sides encode and decode updates with, as the plan fixes it.
UpdateEncoding update_encoding(const protocol::RoundPlan& plan);

// Malicious mode: the bytes every signature of a round attempt covers besides
// its message (aggregation::ClientAuth::context): the round, the attempt and
// the selected node ids, which fix the node identity behind each client id.
std::vector<std::uint8_t> signing_context(std::uint64_t round, std::uint32_t attempt,
                                          const std::vector<protocol::NodeId>& selected);

// ---- node -> coordinator ----
protocol::AdvertiseKeysBody to_wire(const agg::AdvertiseKeys& message);
agg::AdvertiseKeys from_wire(const protocol::AdvertiseKeysBody& body, std::uint64_t round, agg::ClientId sender);
protocol::ShareKeysBody to_wire(const agg::ShareKeys& message);
agg::ShareKeys from_wire(const protocol::ShareKeysBody& body, std::uint64_t round, agg::ClientId sender);
protocol::MaskedInputBody to_wire(const agg::MaskedInput& message);
// `vector_length`: the plan's d; the masked vector must have exactly d elements.
agg::MaskedInput from_wire(const protocol::MaskedInputBody& body, std::uint64_t round, agg::ClientId sender,
                           std::uint64_t vector_length);
protocol::UnmaskResponseBody to_wire(const agg::UnmaskResponse& message);
agg::UnmaskResponse from_wire(const protocol::UnmaskResponseBody& body, std::uint64_t round, agg::ClientId sender);
protocol::SurvivorSignatureBody to_wire(const agg::SurvivorSignature& message);
agg::SurvivorSignature from_wire(const protocol::SurvivorSignatureBody& body, std::uint64_t round,
                                 agg::ClientId sender);

// ---- coordinator -> node ----
protocol::KeysBroadcastBody to_wire(const agg::KeysBroadcast& message);
agg::KeysBroadcast from_wire(const protocol::KeysBroadcastBody& body, std::uint64_t round);
protocol::SharesDeliveryBody to_wire(const agg::SharesDelivery& message);
agg::SharesDelivery from_wire(const protocol::SharesDeliveryBody& body, std::uint64_t round);
// The wire form also lists the dropped client ids (1..num_clients not surviving).
protocol::UnmaskRequestBody to_wire(const agg::UnmaskRequest& message, std::uint32_t num_clients);
agg::UnmaskRequest from_wire(const protocol::UnmaskRequestBody& body, std::uint64_t round);
// Malicious mode: the survivor set to sign (sorted, unique ids).
protocol::ConsistencyCheckBody to_wire(const agg::ConsistencyCheck& message);
agg::ConsistencyCheck from_wire(const protocol::ConsistencyCheckBody& body, std::uint64_t round);

}  // namespace fedge::federation::wire
