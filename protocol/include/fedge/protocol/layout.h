// The wire's tensor layout (GlobalModel::layout) <-> fedge::ParamLayout.
#pragma once

#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/protocol/messages.h"

namespace fedge::protocol {

std::vector<TensorLayout> to_wire_layout(const ParamLayout& layout);
// Throws Error(kInvalidInput) for duplicate names (ParamLayout::add).
ParamLayout to_param_layout(const std::vector<TensorLayout>& layout);

}  // namespace fedge::protocol
