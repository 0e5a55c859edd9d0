#include "fedge/federation/membership.h"

#include <algorithm>
#include <cmath>

namespace fedge::federation {

using protocol::ErrorCode;
using protocol::NodeId;

std::optional<Refusal> Membership::check_register(NodeId sender, const protocol::Register& reg,
                                                  const std::optional<protocol::Key32>& key) const {
  if (reg.name.size() > kMaxNodeNameBytes)
    return Refusal{ErrorCode::kTooLarge, "register.name is " + std::to_string(reg.name.size()) + " bytes, limit " +
                                             std::to_string(kMaxNodeNameBytes)};
  if (reg.capabilities.device_profile.size() > kMaxProfileBytes)
    return Refusal{ErrorCode::kTooLarge, "register.capabilities.deviceProfile is " +
                                             std::to_string(reg.capabilities.device_profile.size()) + " bytes, limit " +
                                             std::to_string(kMaxProfileBytes)};
  if (reg.capabilities.num_examples > kMaxExamples)
    return Refusal{ErrorCode::kMalformed, "register.capabilities.numExamples must be below 2^63"};
  if (reg.node_id != sender || reg.node_id == protocol::kCoordinatorId)
    return Refusal{ErrorCode::kNotAllowed, "register.nodeId must equal the sender and be >= 1"};
  if (key && *key != reg.public_key)
    return Refusal{ErrorCode::kNotAllowed,
                   "register.publicKey differs from the CURVE key this connection authenticated; "
                   "register with the key the node connects with"};
  // With CURVE, a node id stays bound to the key it first registered with (or
  // the one the allow-list names), across restarts: one allow-listed node
  // cannot take over another's id, nor hold two.
  if (key) {
    const std::string id = std::to_string(reg.node_id);
    auto bound = key_of_node_.find(reg.node_id);
    if (bound != key_of_node_.end() && bound->second != *key)
      return Refusal{ErrorCode::kNotAllowed,
                     "node id " + id + " is bound to another public key (the one it first registered with, or the one "
                     "the coordinator's allow-list names); connect with that key, or to move node " + id +
                     " to this key name it in the allow-list ('<key> node=" + id + "') and restart the coordinator"};
    auto holder = node_of_key_.find(*key);
    if (holder != node_of_key_.end() && holder->second != reg.node_id)
      return Refusal{ErrorCode::kNotAllowed, "this CURVE key is bound to node " + std::to_string(holder->second) +
                                                 ", so it cannot register node " + id +
                                                 "; one key is one node (give each node its own key)"};
  }
  return std::nullopt;
}

bool Membership::enrol(const protocol::Register& reg, std::int64_t now_ms) {
  const bool known = contains(reg.node_id);
  NodeInfo& n = nodes_[reg.node_id];
  if (known) unindex(reg.node_id, n);  // the example count may change
  n.reg = reg;
  n.alive = false;  // touch() below indexes it again
  node_of_key_[reg.public_key] = reg.node_id;
  key_of_node_[reg.node_id] = reg.public_key;
  n.sent_version.reset();
  touch(reg.node_id, now_ms);
  return known;
}

bool Membership::restore_binding(NodeId id, const protocol::Key32& key) {
  auto holder = node_of_key_.find(key);
  auto bound = key_of_node_.find(id);
  if (id == protocol::kCoordinatorId || (holder != node_of_key_.end() && holder->second != id) ||
      (bound != key_of_node_.end() && bound->second != key))
    return false;
  node_of_key_[key] = id;
  key_of_node_[id] = key;
  return true;
}

void Membership::touch(NodeId id, std::int64_t now_ms) {
  NodeInfo& n = nodes_.at(id);
  unindex(id, n);
  n.last_seen = std::max(n.last_seen, now_ms);
  n.alive = true;
  index(id, n);
}

void Membership::unindex(NodeId id, const NodeInfo& n) {
  if (!n.alive) return;
  alive_by_last_seen_.erase({n.last_seen, id});
  ready_ -= n.reg.capabilities.num_examples > 0;
}

void Membership::index(NodeId id, const NodeInfo& n) {
  if (!n.alive) return;
  alive_by_last_seen_.insert({n.last_seen, id});
  ready_ += n.reg.capabilities.num_examples > 0;
}

bool Membership::is_live(const NodeInfo& n, std::int64_t now_ms) const {
  return n.alive && now_ms - n.last_seen <= static_cast<std::int64_t>(liveness_timeout_ms_);
}

std::vector<NodeId> Membership::live(std::int64_t now_ms) const {
  std::vector<NodeId> out;
  for (const auto& [id, n] : nodes_)
    if (is_live(n, now_ms)) out.push_back(id);
  return out;
}

std::vector<NodeId> Membership::selectable(std::int64_t now_ms) const {
  std::vector<NodeId> out;
  for (const auto& [id, n] : nodes_)
    if (is_live(n, now_ms) && n.reg.capabilities.num_examples > 0) out.push_back(id);
  return out;
}

std::vector<NodeId> Membership::expire(std::int64_t now_ms) {
  std::vector<NodeId> lost;
  // The silent ones are at the front of the index, oldest first.
  while (!alive_by_last_seen_.empty() &&
         now_ms - alive_by_last_seen_.begin()->first > static_cast<std::int64_t>(liveness_timeout_ms_)) {
    const NodeId id = alive_by_last_seen_.begin()->second;
    NodeInfo& n = nodes_.at(id);
    unindex(id, n);
    n.alive = false;
    lost.push_back(id);
  }
  std::sort(lost.begin(), lost.end());  // in id order, as a walk over the nodes gave them
  return lost;
}

std::optional<std::int64_t> Membership::next_expiry_ms() const {
  if (alive_by_last_seen_.empty()) return std::nullopt;
  return alive_by_last_seen_.begin()->first + liveness_timeout_ms_ + 1;
}

std::vector<NodeId> Membership::ids() const {
  std::vector<NodeId> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

void NodeMetrics::add(const protocol::Metrics& metrics) {
  for (const auto& m : metrics.entries) {
    if (!std::isfinite(m.value) || m.name.empty() || m.name.size() > kMaxName) continue;
    if (!sums_.count(m.name) && sums_.size() >= kMaxNames) continue;
    auto& [sum, count] = sums_[m.name];
    sum += m.value;
    ++count;
  }
}

std::map<std::string, double> NodeMetrics::take_means() {
  std::map<std::string, double> out;
  for (const auto& [name, sc] : sums_) out["node/" + name] = sc.first / static_cast<double>(sc.second);
  sums_.clear();
  return out;
}

}  // namespace fedge::federation
