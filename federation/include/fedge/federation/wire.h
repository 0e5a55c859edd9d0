// The one place where the round's wire messages (protocol/messages.h: what
// travels, with Envelope's round and sender around it) meet the secure
// aggregation state machines (aggregation/secagg.h: what computes). Each
// message that crosses between them is converted here, once per direction:
// to_wire() where it is made, from_wire() where it is read. The round client
// and the coordinator core call nothing else to cross the boundary.
//
// from_wire() of a message a node sends takes the client id the coordinator
// derived from the authenticated sender and throws Error(kProtocol) when the
// message claims another: a node cannot speak for a peer.
#pragma once

#include <cstdint>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/update_codec.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation::wire {

namespace agg = fedge::aggregation;

// ---- settings a round plan carries ----
protocol::MaskPrg to_wire(privacy::PrgKind kind);
privacy::PrgKind from_wire(protocol::MaskPrg prg);

// What both sides encode and decode updates with, as the plan fixes it.
UpdateEncoding update_encoding(const protocol::RoundPlan& plan);
// The plan's secure-aggregation block: the SecAgg parameters plus the
// encoding's quantiser and the distributed-DP noise bound.
protocol::SecAggParams to_wire(const agg::SecAggParams& params, const UpdateEncoding& encoding,
                               std::uint64_t noise_bound);
agg::SecAggParams from_wire(const protocol::SecAggParams& params);

// ---- node -> coordinator ----
protocol::AdvertiseKeys to_wire(const agg::AdvertiseKeys& message);
agg::AdvertiseKeys from_wire(const protocol::AdvertiseKeys& message, std::uint64_t round, agg::ClientId sender);
protocol::ShareKeys to_wire(agg::ShareKeys message);
agg::ShareKeys from_wire(const protocol::ShareKeys& message, std::uint64_t round, agg::ClientId sender);
protocol::MaskedInput to_wire(agg::MaskedInput message);
agg::MaskedInput from_wire(const protocol::MaskedInput& message, std::uint64_t round, agg::ClientId sender);
protocol::UnmaskResponse to_wire(const agg::UnmaskResponse& message);
agg::UnmaskResponse from_wire(const protocol::UnmaskResponse& message, std::uint64_t round, agg::ClientId sender);

// ---- coordinator -> node ----
protocol::KeysBroadcast to_wire(const agg::KeysBroadcast& message);
agg::KeysBroadcast from_wire(const protocol::KeysBroadcast& message, std::uint64_t round);
protocol::SharesDelivery to_wire(agg::SharesDelivery message);
agg::SharesDelivery from_wire(const protocol::SharesDelivery& message, std::uint64_t round);
// The wire form also lists the dropped client ids (1..num_clients not surviving).
protocol::UnmaskRequest to_wire(const agg::UnmaskRequest& message, std::uint32_t num_clients);
agg::UnmaskRequest from_wire(const protocol::UnmaskRequest& message, std::uint64_t round);

}  // namespace fedge::federation::wire
