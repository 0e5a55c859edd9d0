// Heterogeneous LoRA ranks (HetLoRA, FlexLoRA) and shared-A personalization
// (FedSA-LoRA): the flat-adapter math of aggregation/lora_ranks.h and
// aggregation/lora_shared_a.h, named in federation/ for the node's side (node/
// reaches aggregation/ only through federation/). docs/FEDERATION.md,
// "Heterogeneous ranks"; docs/SIMULATOR.md, "Personalization".
#pragma once

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/aggregation/lora_shared_a.h"

namespace fedge::federation {

using aggregation::flexlora_factors;
using aggregation::keep_rank;
using aggregation::lora_layout;
using aggregation::lora_products;
using aggregation::LoraLayout;
using aggregation::parse_rank_aggregation;
using aggregation::RankAggregation;

using aggregation::is_lora_a_only;
using aggregation::join_lora_parts;
using aggregation::lora_a_layout;
using aggregation::lora_a_part;
using aggregation::lora_b_part;
using aggregation::lora_b_size;
using aggregation::shared_a_step;
using aggregation::SharedAStep;

}  // namespace fedge::federation
