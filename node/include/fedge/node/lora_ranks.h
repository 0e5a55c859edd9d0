// What a node of LoRA rank r does in a federation of heterogeneous ranks:
// take its part of the global (HetLoRA: truncation; FlexLoRA: the best rank-r
// factors of the dense products) and shape its update. The math is
// aggregation/lora_ranks.h (through federation/lora_ranks.h); this header names
// it for the node's users (the simulator), which reach federation/ only
// through the node.
#pragma once

#include "fedge/federation/lora_ranks.h"

namespace fedge::node {

using federation::flexlora_factors;
using federation::keep_rank;
using federation::lora_layout;
using federation::lora_products;
using federation::LoraLayout;
using federation::parse_rank_aggregation;
using federation::RankAggregation;

}  // namespace fedge::node
