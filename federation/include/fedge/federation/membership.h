// Who belongs to the federation: the registered nodes, their keys and example
// counts, when each was last heard from, and which global version each was
// sent. Also the means of the scalar metrics nodes report between two rounds.
// Sans-I/O: the coordinator core feeds it messages and clock readings.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fedge/federation/outgoing.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

// What a Register may carry: the coordinator's store keeps the name and the
// device profile in length-limited text columns (too small to smuggle an
// update into) and the example count as a signed 64-bit integer.
inline constexpr std::size_t kMaxNodeNameBytes = 256;
inline constexpr std::size_t kMaxProfileBytes = 16 * 1024;
inline constexpr std::uint64_t kMaxExamples = (std::uint64_t{1} << 63) - 1;

struct NodeInfo {
  protocol::Register reg;
  std::int64_t last_seen = 0;
  bool alive = true;
  std::optional<std::uint64_t> sent_version;  // GlobalModel version sent since the last Register
};

class Membership {
 public:
  explicit Membership(std::uint32_t liveness_timeout_ms) : liveness_timeout_ms_(liveness_timeout_ms) {}

  // Why a Register from `sender` (with the CURVE key the transport
  // authenticated, if any) must be refused: a field outside the limits above,
  // an id that is not the sender's, a key that is not the connection's, or
  // (with CURVE) an id bound to another key or a key bound to another id: one
  // key is one node, so one allow-listed key cannot fill a round with
  // identities, nor take over another node's id. nullopt when it may join.
  std::optional<Refusal> check_register(protocol::NodeId sender, const protocol::Register& reg,
                                        const std::optional<protocol::Key32>& key) const;
  // Adds or refreshes a node checked by check_register, binding its id and
  // key; true when it was known.
  bool enrol(const protocol::Register& reg, std::int64_t now_ms);
  // Binds `id` to `key` before the node registers in this process: the
  // bindings a restarted coordinator kept (ResumeState::key_bindings), so a
  // restart frees no key and no id. False, binding nothing, for id 0, a key
  // already bound to another id or an id already bound to another key.
  bool restore_binding(protocol::NodeId id, const protocol::Key32& key);

  bool contains(protocol::NodeId id) const { return nodes_.count(id) != 0; }
  const NodeInfo& at(protocol::NodeId id) const { return nodes_.at(id); }
  void mark_sent(protocol::NodeId id, std::uint64_t version) { nodes_.at(id).sent_version = version; }
  void touch(protocol::NodeId id, std::int64_t now_ms);  // heard from: alive again

  std::vector<protocol::NodeId> live(std::int64_t now_ms) const;
  // Live nodes with training data: the ones a round may select.
  std::vector<protocol::NodeId> selectable(std::int64_t now_ms) const;
  // Marks nodes silent past the liveness timeout dead and returns them.
  std::vector<protocol::NodeId> expire(std::int64_t now_ms);
  // When expire() next has work; nullopt without live nodes. O(log n).
  std::optional<std::int64_t> next_expiry_ms() const;
  // Nodes not yet expired that have training data (whether a round could
  // start). O(1).
  std::size_t ready_count() const { return ready_; }
  std::vector<protocol::NodeId> ids() const;
  std::size_t size() const { return nodes_.size(); }

 private:
  bool is_live(const NodeInfo& n, std::int64_t now_ms) const;
  // Keep the index and the count below in step with one node's alive,
  // last_seen and example count: unindex before changing them, index after.
  void unindex(protocol::NodeId id, const NodeInfo& n);
  void index(protocol::NodeId id, const NodeInfo& n);

  std::uint32_t liveness_timeout_ms_;
  std::map<protocol::NodeId, NodeInfo> nodes_;
  // The nodes not yet expired, by last heard-from time: the coordinator asks
  // for the next expiry after every message it handles, which with 10,000
  // registered nodes must not walk them all.
  std::set<std::pair<std::int64_t, protocol::NodeId>> alive_by_last_seen_;
  std::size_t ready_ = 0;  // nodes in alive_by_last_seen_ with training data
  // The binding of ids and keys (with CURVE, checked both ways): from enrol()
  // and restore_binding().
  std::map<protocol::Key32, protocol::NodeId> node_of_key_;
  std::map<protocol::NodeId, protocol::Key32> key_of_node_;
};

// Means of the scalar metrics nodes send between two round results. Bounded:
// names are short enough for the store's 128-byte column with the "node/"
// prefix, and no node can add more than a fixed number of names.
class NodeMetrics {
 public:
  static constexpr std::size_t kMaxName = 100;
  static constexpr std::size_t kMaxNames = 64;

  void add(const protocol::Metrics& metrics);  // skips non-finite, empty, long or surplus names
  // "node/<name>" -> mean since the last call; clears.
  std::map<std::string, double> take_means();

 private:
  std::map<std::string, std::pair<double, std::uint64_t>> sums_;  // name -> (sum, count)
};

}  // namespace fedge::federation
