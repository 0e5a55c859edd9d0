// How big each message may be (issue 16, finding 8): per message type, from
// what the receiver expects of the round, so that a heartbeat cannot take the
// 512 MiB a model may, and a masked input of the wrong length is refused
// before it is copied. The drivers pass the caps to protocol::decode through
// Expectations::size_caps for every message they receive.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fedge/protocol/codec.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

// Room for everything but a message's variable-length content: the segment
// table, the envelope's fields and the body's pointers and scalars.
inline constexpr std::size_t kEnvelopeBytes = 512;
// A generous bound on one list element of each SecAgg+ kind, so a new
// optional field (a signature) does not need a new cap.
inline constexpr std::size_t kPeerKeysBytes = 256;   // id, two keys, signature
inline constexpr std::size_t kSignatureEntryBytes = 96;  // a survivor-set signature: sender, pointer, 64 bytes (malicious mode)
inline constexpr std::size_t kShareEntryBytes = 24;  // an encrypted share's ids, pointer and padding, beside its box
inline constexpr std::size_t kSmallMessageBytes = 4096;   // what a node never sends
inline constexpr std::size_t kLayoutBytes = 1 << 20;      // a model's tensor names and shapes

// What a coordinator accepts from nodes. `plan` is the running attempt's plan
// (nullptr when idle: SecAgg+ and update messages are then capped as if for
// the largest round the limits allow, and refused by the core anyway);
// `update_length` is the global model's float count. Messages only the
// coordinator sends, and serving messages, are capped at kSmallMessageBytes.
protocol::SizeCaps coordinator_size_caps(const protocol::RoundPlan* plan, std::uint64_t update_length,
                                         const protocol::Limits& limits);

// What a node accepts from its coordinator: SecAgg+ messages by the plan's
// degree and node count (nullptr: the largest the limits allow), the global
// model by `update_length` (0: the node does not know it yet; only the
// limits apply), and the node-only messages at kSmallMessageBytes.
protocol::SizeCaps node_size_caps(const protocol::RoundPlan* plan, std::uint64_t update_length,
                                  const protocol::Limits& limits);

// The largest of `caps` (0 when any type is uncapped): what a socket's
// ZMQ_MAXMSGSIZE can be set to, so ZeroMQ drops a bigger message before it
// is read into memory.
std::size_t largest_cap(const protocol::SizeCaps& caps);

}  // namespace fedge::federation
