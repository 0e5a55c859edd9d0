// The node-host wire: what a simulation coordinator process and its node-host
// processes say to each other when one simulation spreads over several
// processes or machines (docs/SIMULATOR.md, "Across machines").
//
// The virtual nodes' own traffic is the real federation protocol: each
// Delivery carries one encoded protocol::Envelope, untouched. Around it, this
// wire carries the simulation's control: which block of nodes a host runs,
// lock-step windows of simulated time, completed rounds and metrics rows.
//
// Every message is one Cap'n Proto message (sims/schema/host.capnp) in one
// ZeroMQ frame. decode_host_message() checks version, sizes and ranges and
// throws protocol::DecodeError naming the field; malformed bytes never crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "fedge/protocol/codec.h"
#include "fedge/sims/metrics.h"

namespace fedge::sims {

inline constexpr std::uint32_t kHostWireVersion = 1;

// A protocol message in flight between the coordinator and a virtual node:
// the encoded Envelope and the simulated time (ms) it arrives. `seq` orders
// messages of one sender that arrive in the same millisecond.
struct Delivery {
  std::int64_t at_ms = 0;
  std::uint32_t node = 0;  // node index 0..nodes-1 (sender or receiver)
  std::uint64_t seq = 0;
  protocol::Bytes envelope;
};

// A round the coordinator completed: hosts record their nodes' rows for it.
struct RoundDone {
  std::uint32_t round = 0;          // 1-based count of completed rounds
  std::int64_t at_ms = 0;           // simulated time of completion
  std::vector<std::uint32_t> survivors;  // node indices whose update is in the sum
  std::vector<float> global;        // the new global adapter (flat)
  bool evaluate = false;            // measure held-out quality for this round
  bool last = false;                // the level's last round (accuracy too)
};

// host -> coordinator: first message after connecting.
struct HostHello {
  std::string host_name;  // for logs and errors
};

// coordinator -> host: the scenario to run and the host's block of nodes.
struct HostAssign {
  std::string scenario_toml;     // the scenario file's text
  std::string scenario_source;   // its file name, for messages
  std::vector<std::int32_t> levels;  // the levels the run covers (after --levels)
  std::uint32_t first_node = 0;  // the block is [first_node, end_node)
  std::uint32_t end_node = 0;
  std::int32_t threads = 0;      // libtorch threads on the host (0: default)
  // Which seed index of the scenario to run (for_seed_index). A run of several
  // seeds sends a new HostAssign per seed instead of Shutdown; the host rebuilds
  // its block (the split changes with the seed) and answers HostReady again.
  std::uint32_t seed_index = 0;
};

// host -> coordinator: the block is loaded (data split, base model).
struct HostReady {
  std::string base_digest;   // hex digest of the base model's parameters
  std::string split_digest;  // hex digest of the block's records (the data split)
};

// coordinator -> host: start a level (4 or 5: federated; 6: local only).
struct StartLevel {
  std::int32_t level = 0;
};

// coordinator -> host: process every event with time < until_ms.
struct WindowOrder {
  std::int32_t level = 0;
  std::int64_t until_ms = 0;
  std::vector<Delivery> deliveries;  // coordinator -> this host's nodes
  std::vector<RoundDone> completed;  // completed in the previous window
  bool finish = false;               // the level is over: count the deliveries, report rows, process nothing
};

// host -> coordinator: answer to StartLevel (level 6: its rows) and WindowOrder.
struct WindowReport {
  std::int32_t level = 0;
  std::vector<Delivery> messages;          // this host's nodes -> coordinator
  std::optional<std::int64_t> next_event_ms;  // earliest pending event, if any
  std::vector<MetricsRow> rows;
};

// coordinator -> host: the run is over (or failed: `reason` says why).
struct Shutdown {
  std::string reason;
};

// Either side: the run cannot go on; `message` says what failed and where.
struct HostError {
  std::string message;
};

// coordinator -> host: a liveness probe (sent when a peer's connection drops,
// to find out whether it was a node host). Hosts ignore it.
struct Ping {};

using HostMessage =
    std::variant<HostHello, HostAssign, HostReady, StartLevel, WindowOrder, WindowReport, Shutdown, HostError, Ping>;

struct HostWireLimits {
  std::size_t max_message_bytes = std::size_t{2} << 30;  // a window may carry every node's masked input
  std::size_t max_list_length = std::size_t{1} << 22;    // deliveries, rows, survivors, levels
  std::size_t max_vector_length = std::size_t{1} << 28;  // floats of a global adapter
  std::size_t max_text_bytes = std::size_t{1} << 20;     // scenario text, names, errors
  std::size_t max_envelope_bytes = std::size_t{512} << 20;  // one Delivery (protocol::Limits default)
  std::uint32_t max_nodes = 1u << 24;                    // node indices, ranges
  std::uint32_t max_seeds = kMaxSeeds;                   // seed indices are below this
};

protocol::Bytes encode_host_message(const HostMessage& message);
// Throws protocol::DecodeError (kind kProtocol) naming the field at fault.
HostMessage decode_host_message(const protocol::Bytes& bytes, const HostWireLimits& limits = {});

// For logs and errors: "WindowOrder", "HostError", ...
const char* host_message_name(const HostMessage& message);

}  // namespace fedge::sims
