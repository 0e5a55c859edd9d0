// Planning a round: which nodes take part (selection) and what they are told
// (the round plan: hyper-parameters, deadlines, update encoding, SecAgg+
// parameters with a fresh neighbour graph per attempt). Pure functions of the
// configuration, the membership and the round id; no clock but the one passed.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/coordinator_config.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/update_codec.h"

namespace fedge::federation {

// The nodes of attempt `attempt` of round `round`: a share `fraction` (at
// least min_nodes, at most max_nodes) of the selectable nodes, drawn from the
// config's seed, sorted. Empty when fewer than `needed` are selectable.
std::vector<protocol::NodeId> select_nodes(const FederationConfig& config, const Membership& members,
                                           std::uint64_t round, std::uint32_t attempt, std::int64_t now_ms,
                                           std::uint32_t needed);

struct PlannedRound {
  protocol::RoundPlan plan;                  // what every selected node receives
  UpdateEncoding encoding;                   // how updates are encoded and the sum decoded
  std::optional<aggregation::SecAggParams> secagg;  // secure rounds
};

// The plan of a round over `selected` (non-empty) starting from global
// `version` of `update_length` floats. `secret` derives the neighbour graph
// seed; `strategy_mu` is the strategy's FedProx mu (used when the config's is
// 0). `rank_slots`: HetLoRA's maximum rank R (UpdateEncoding::rank_slots;
// 0 = homogeneous). Throws Error when no secure-aggregation parameters or
// quantisation fit.
PlannedRound plan_round(const FederationConfig& config, const Membership& members, const privacy::Key32& secret,
                        std::uint64_t round, std::uint32_t attempt, std::uint64_t version,
                        std::uint64_t update_length, const std::vector<protocol::NodeId>& selected,
                        double strategy_mu, std::uint32_t rank_slots = 0);

}  // namespace fedge::federation
