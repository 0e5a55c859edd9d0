// SCAFFOLD on a real node (Karimireddy et al. 2020; docs/FEDERATION.md,
// "Strategies"). A coordinator running strategy = "scaffold" sends the global
// [x ; c] (federation/scaffold.h names the layout; a node tells SCAFFOLD by
// it, with nothing in its own config). The node keeps its control variate c_i:
// it trains from x with every raw gradient corrected by c - c_i, sends
// [y_i - x ; c_i+ - c_i] (c_i+ the round's mean raw gradient), and takes c_i+
// as its c_i only once its update is in a completed round's sum (the secure
// round's unmask request lists it among the survivors, and the next global
// arrives), so the server's c stays the mean of the nodes' c_i. c_i is kept in
// a file, so it survives a restart. The simulator runs the same steps per
// virtual node (sims/src/node_block.cpp).
// Not thread-safe: the node runtime uses it on its network thread only.
#pragma once

#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/federation/scaffold.h"

namespace fedge::node {

using federation::is_scaffold_layout;
using federation::scaffold_adapter;
using federation::scaffold_adapter_layout;
using federation::scaffold_layout;

class ScaffoldControl {
 public:
  // `file`: where c_i is kept (a safetensors file in the adapter's layout);
  // read now if it exists (one that cannot be read is reported and ignored).
  explicit ScaffoldControl(std::filesystem::path file);

  // c - c_i for a round from `global`, in x's layout (c_i is zero before the
  // node's first counted round, and when the kept one does not fit the global).
  // Forgets any c_i+ of an earlier round still waiting.
  ParamVector gradient_offset(const ParamVector& global);
  // After the round's training: the update to send, [update ; mean_gradient - c_i]
  // in the global's layout (`update` = y_i - x and `mean_gradient` = c_i+,
  // both in x's layout), and c_i+ waits for the round's outcome. Throws
  // Error(kInvalidInput) on lengths that do not fit, keeping c_i.
  std::vector<float> finish_round(const ParamVector& global, std::span<const float> update,
                                  std::span<const float> mean_gradient);
  // The secure round's unmask request listed this node: its update is in the
  // sum if the round completes.
  void on_update_in_sum() { pending_in_sum_ = true; }
  // A new global arrived: a waiting c_i+ whose update was in the sum becomes
  // c_i (and is written to the file); one that was not is dropped.
  void on_global_installed();

  // c_i (empty: zero), in the layout of the last global's x.
  const std::vector<float>& control() const { return control_; }

 private:
  std::filesystem::path file_;
  std::optional<ParamLayout> layout_;  // x's layout of the last global seen
  std::vector<float> control_;         // c_i in layout_ (empty: zero)
  std::optional<ParamVector> loaded_;  // read from the file, until a global says its layout
  std::vector<float> pending_;         // c_i+ of the round in progress
  bool pending_in_sum_ = false;
};

}  // namespace fedge::node
