// SCAFFOLD's federated vector (Karimireddy et al. 2020; docs/FEDERATION.md,
// "Strategies"): [x ; c], the adapter x followed by the server control
// variate c in the same shapes, each entry of c named "scaffold.c/<entry>".
// The one definition of that layout, for the coordinator (which makes its
// initial global so), the node (which tells a SCAFFOLD global by it) and the
// simulator. Pure functions on layouts.
#pragma once

#include <string_view>

#include "fedge/common/param_vector.h"

namespace fedge::federation {

inline constexpr std::string_view kScaffoldControlPrefix = "scaffold.c/";

// The adapter's entries, then a "scaffold.c/" twin of each.
ParamLayout scaffold_layout(const ParamLayout& adapter);
// Whether `layout` is scaffold_layout() of its own first half.
bool is_scaffold_layout(const ParamLayout& layout);
// The first half of a SCAFFOLD layout: the adapter's. Throws
// Error(kInvalidInput) when `layout` is not one.
ParamLayout scaffold_adapter_layout(const ParamLayout& layout);

// x, the adapter half of a global [x ; c]. Throws like scaffold_adapter_layout.
ParamVector scaffold_adapter(const ParamVector& global);
// [x ; 0]: an adapter as SCAFFOLD's global, its control variate zero.
ParamVector with_zero_control(const ParamVector& adapter);

}  // namespace fedge::federation
