// Heterogeneous LoRA ranks (HetLoRA, FlexLoRA): the flat-adapter math of
// aggregation/lora_ranks.h, named in federation/ for the node's side (node/
// reaches aggregation/ only through federation/). docs/FEDERATION.md,
// "Heterogeneous ranks".
#pragma once

#include "fedge/aggregation/lora_ranks.h"

namespace fedge::federation {

using aggregation::flexlora_factors;
using aggregation::keep_rank;
using aggregation::lora_layout;
using aggregation::lora_products;
using aggregation::LoraLayout;
using aggregation::parse_rank_aggregation;
using aggregation::RankAggregation;

}  // namespace fedge::federation
