// Shared-A personalization on a real node (FedSA-LoRA, Guo et al. 2024;
// docs/FEDERATION.md, "Personalization on the node"). The coordinator
// federates only the adapter's A matrices ([federation] personalization =
// "shared-a"); this node keeps its B matrices, which never leave it. Each round
// it trains A and B from the global A joined with its own B, sends only the
// update's A, and keeps start's B plus the update's B. Its own adapter, the
// latest global A with its B, is what it serves in the local slot.
//
// The math is aggregation/lora_shared_a.h (through node/lora_ranks.h); this
// class holds the node's B between rounds and checks that what the
// coordinator sends is an A-only global for this node's model. The simulator
// runs the same steps per virtual node (sims/src/node_block.cpp).
// Not thread-safe: the node runtime uses it on its network thread only.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/node/local_trainer.h"  // inference::ModelConfig, through training/ (DESIGN.md's arrows)

namespace fedge::node {

class SharedALora {
 public:
  SharedALora(inference::ModelConfig model, double lora_alpha);

  // Takes the B matrices of an adapter this node made before (its saved
  // state_dir/personal), so a restarted node keeps its B. They are used once
  // a global of the same rank and targets arrives (else the node starts its B
  // again from zero, with a warning).
  void restore(const ParamVector& own_adapter);

  // The node's adapter for a global of A matrices: that A joined with this
  // node's B (zero, as PEFT initialises B, before its first round). Throws
  // Error(kInvalidInput) naming the settings at fault when `global_a` is not
  // the A-only global of a LoRA adapter for this model (a coordinator that
  // federates whole adapters, or one made for another model).
  ParamVector node_adapter(const ParamVector& global_a);
  // The global alone as a whole adapter: its A with zero B. It changes no
  // output of the base (B = 0); the node saves and serves it in the global
  // slot so that a PEFT tool reading state_dir/global still finds an adapter.
  ParamVector global_adapter(const ParamVector& global_a);

  // After a local round from `start` (node_adapter of the round's global)
  // with `update` = local - start in start's layout: keeps start's B plus the
  // update's B as this node's B and returns the update's A laid out as
  // `global_layout` (the round's global), the only thing the node sends.
  // Throws Error(kInvalidInput), keeping the old B, when start is not a node
  // adapter of the current global, update's length is wrong or
  // global_layout is not its A matrices.
  std::vector<float> finish_round(const ParamVector& start, std::span<const float> update,
                                  const ParamLayout& global_layout);

  // This node's B (empty before a global arrived), in pair order.
  const std::vector<float>& own_b() const { return own_b_; }

 private:
  // The global's A matrices in this node's adapter order, checked against
  // the model; sets adapter_layout_ (the B matrices follow from the model's
  // shapes) and, when it changes, starts B again (or takes the restored one).
  ParamVector a_of(const ParamVector& global_a);
  // The whole adapter: the global's A with this node's B, or with zero B.
  ParamVector joined(const ParamVector& global_a, bool with_own_b);

  inference::ModelConfig model_;
  double lora_alpha_;
  std::optional<ParamLayout> adapter_layout_;  // of the latest global
  std::vector<float> own_b_;                   // in adapter_layout_'s pair order
  std::optional<ParamVector> restored_;        // an adapter restore() took, until its B is used
};

}  // namespace fedge::node
