// Shared-A personalization (FedSA-LoRA, Guo et al. 2024): a federation
// aggregates only LoRA's A matrices; each node's B matrices stay on the node
// and never travel (docs/SIMULATOR.md, "Personalization"). A learns what the
// sites have in common, B what is each site's own.
//
// Pure math on flat adapters laid out as inference::LoraAdapter::layout()
// does (per layer and target, A then B, each row-major; lora_ranks.h reads
// the pairs). The federated vector is every A concatenated in the adapter's
// pair order: what a node sends (masked and quantised under SecAgg+) and the
// coordinator holds. Thread-compatible; no function keeps state.
#pragma once

#include <span>
#include <vector>

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/common/param_vector.h"

namespace fedge::aggregation {

// The A entries of an adapter's layout (names and shapes kept): the layout of
// the federated vector. Throws like lora_layout() for a layout that is not
// LoRA A/B pairs.
ParamLayout lora_a_layout(const ParamLayout& adapter);

// Whether `layout` holds LoRA A matrices and nothing else (at least one entry,
// every name ending in "lora_A.weight"): the global of a shared-A federation,
// as opposed to a whole adapter.
bool is_lora_a_only(const ParamLayout& layout);

// Floats of every A together, and of every B together.
std::size_t lora_a_size(const LoraLayout& layout);
std::size_t lora_b_size(const LoraLayout& layout);

// Every A of a flat adapter, concatenated in pair order (lora_a_size floats).
// Throws Error(kInvalidInput) when `adapter` is not layout.size floats.
std::vector<float> lora_a_part(const LoraLayout& layout, std::span<const float> adapter);
// Every B of a flat adapter, concatenated in pair order (lora_b_size floats).
std::vector<float> lora_b_part(const LoraLayout& layout, std::span<const float> adapter);
// The flat adapter with these A and B parts: the inverse of the two above
// (join(a_part(x), b_part(x)) == x, and the parts of a join are its inputs).
// Throws Error(kInvalidInput) naming the part whose length is wrong.
std::vector<float> join_lora_parts(const LoraLayout& layout, std::span<const float> a, std::span<const float> b);

// One node's local round under shared-A, from the adapter it started from
// (the global A joined with its own B) and its update (local - start):
// `a_update` is the A part of the update, the only thing the node sends; `b`
// is start's B plus the update's B, the node's B from now on.
struct SharedAStep {
  std::vector<float> a_update;
  std::vector<float> b;
};
// Throws Error(kInvalidInput) when start or update is not layout.size floats.
SharedAStep shared_a_step(const LoraLayout& layout, std::span<const float> start, std::span<const float> update);

}  // namespace fedge::aggregation
