#include "fedge/node/shared_a.h"

#include <algorithm>
#include <string>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/node/local_trainer.h"
#include "fedge/node/lora_ranks.h"

namespace fedge::node {

SharedALora::SharedALora(inference::ModelConfig model, double lora_alpha)
    : model_(std::move(model)), lora_alpha_(lora_alpha) {}

void SharedALora::restore(const ParamVector& own_adapter) { restored_ = own_adapter; }

ParamVector SharedALora::a_of(const ParamVector& global_a) {
  if (!is_lora_a_only(global_a.layout()))
    throw Error(ErrorKind::kInvalidInput,
                "the coordinator sends whole adapters, but this node's [personalization] kind is \"shared-a\", which "
                "sends A matrices only: set [federation] personalization = \"shared-a\" on the coordinator, or "
                "another kind on this node");
  ParamLayout layout;
  ParamVector a;
  try {
    // Rank and targets come from the A matrices; the B shapes from the model.
    layout = inference::LoraAdapter::create(model_, lora_config_from_layout(global_a.layout(), lora_alpha_), 0)
                 .layout();
    a = global_a.remapped(lora_a_layout(layout));  // every A, no other, each of its shape
  } catch (const Error& e) {
    throw Error(ErrorKind::kInvalidInput,
                std::string("the coordinator's global (A matrices, shared-a) does not fit this node's model: ") +
                    e.what());
  }
  if (adapter_layout_ != layout) {
    if (adapter_layout_) spdlog::warn("shared-a: the global's rank or targets changed; this node's B starts from zero");
    adapter_layout_ = std::move(layout);
    own_b_.assign(lora_b_size(lora_layout(*adapter_layout_)), 0.0f);
  }
  if (restored_) {
    try {
      own_b_ = lora_b_part(lora_layout(*adapter_layout_), restored_->remapped(*adapter_layout_).values());
      spdlog::info("shared-a: this node's B restored from its saved adapter");
    } catch (const Error& e) {
      spdlog::warn("shared-a: the saved adapter does not fit the global ({}); this node's B starts from zero",
                   e.what());
    }
    restored_.reset();
  }
  return a;
}

ParamVector SharedALora::joined(const ParamVector& global_a, bool with_own_b) {
  const ParamVector a = a_of(global_a);
  const LoraLayout pairs = lora_layout(*adapter_layout_);
  const std::vector<float> b = with_own_b ? own_b_ : std::vector<float>(lora_b_size(pairs), 0.0f);
  return {*adapter_layout_, join_lora_parts(pairs, a.values(), b)};
}

ParamVector SharedALora::node_adapter(const ParamVector& global_a) { return joined(global_a, true); }

ParamVector SharedALora::global_adapter(const ParamVector& global_a) { return joined(global_a, false); }

std::vector<float> SharedALora::finish_round(const ParamVector& start, std::span<const float> update,
                                             const ParamLayout& global_layout) {
  if (!adapter_layout_ || start.layout() != *adapter_layout_)
    throw Error(ErrorKind::kInvalidInput, "shared-a: the round's start is not this node's adapter for the global");
  SharedAStep step = shared_a_step(lora_layout(start.layout()), start.values(), update);
  // The A part is in the adapter's pair order; the coordinator's may differ.
  ParamVector a_update(lora_a_layout(start.layout()), std::move(step.a_update));
  auto sent = a_update.remapped(global_layout);
  own_b_ = std::move(step.b);
  return {sent.values().begin(), sent.values().end()};
}

}  // namespace fedge::node
