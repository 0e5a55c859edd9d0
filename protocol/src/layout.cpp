#include "fedge/protocol/layout.h"

namespace fedge::protocol {

std::vector<TensorLayout> to_wire_layout(const ParamLayout& layout) {
  std::vector<TensorLayout> out;
  for (const auto& e : layout.entries()) out.push_back({e.name, std::vector<std::uint64_t>(e.shape.begin(), e.shape.end())});
  return out;
}

ParamLayout to_param_layout(const std::vector<TensorLayout>& layout) {
  ParamLayout out;
  for (const auto& t : layout) out.add(t.name, std::vector<std::int64_t>(t.shape.begin(), t.shape.end()));
  return out;
}

}  // namespace fedge::protocol
