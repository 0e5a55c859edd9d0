// What a node of LoRA rank r does in a federation of heterogeneous ranks:
// take its part of the global (HetLoRA: truncation; FlexLoRA: the best rank-r
// factors of the dense products) and shape its update; and under shared-A
// personalization, join the global A with its own B and send only its
// update's A. The math is aggregation/lora_ranks.h and lora_shared_a.h
// (through federation/lora_ranks.h); this header names it for the node's
// users (the simulator), which reach federation/ only through the node.
#pragma once

#include <cstdint>

#include "fedge/common/param_vector.h"
#include "fedge/federation/lora_ranks.h"

namespace fedge::node {

using federation::flexlora_factors;
using federation::keep_rank;
using federation::lora_layout;
using federation::lora_products;
using federation::LoraLayout;
using federation::parse_rank_aggregation;
using federation::RankAggregation;

using federation::is_lora_a_only;
using federation::join_lora_parts;
using federation::lora_a_layout;
using federation::lora_a_part;
using federation::lora_b_part;
using federation::lora_b_size;
using federation::shared_a_step;
using federation::SharedAStep;

// The LoRA rank a node trains under HetLoRA ([train] lora_rank = `configured`,
// 0: none) against the global it is given: 0 when that is the global's own
// rank. Throws Error(kInvalidInput) naming the settings when the node cannot
// train it: a global that is not a LoRA adapter, a rank above the global's,
// or one below it in a plain round (`secure` false: plain rounds take each
// node's rank from the coordinator's device profiles, which a node does not
// see; a secure round carries the rank in the sum).
std::uint32_t hetlora_training_rank(const ParamVector& global, int configured, bool secure);

}  // namespace fedge::node
