#include "fedge/federation/scaffold.h"

#include <string>

#include "fedge/common/error.h"

namespace fedge::federation {

ParamLayout scaffold_layout(const ParamLayout& adapter) {
  ParamLayout out = adapter;
  for (const auto& e : adapter.entries()) out.add(std::string(kScaffoldControlPrefix) + e.name, e.shape);
  return out;
}

bool is_scaffold_layout(const ParamLayout& layout) {
  const auto& e = layout.entries();
  if (e.empty() || e.size() % 2 != 0) return false;
  const std::size_t half = e.size() / 2;
  for (std::size_t i = 0; i < half; ++i) {
    if (e[half + i].name != std::string(kScaffoldControlPrefix) + e[i].name || e[half + i].shape != e[i].shape)
      return false;
  }
  return true;
}

ParamLayout scaffold_adapter_layout(const ParamLayout& layout) {
  if (!is_scaffold_layout(layout))
    throw Error(ErrorKind::kInvalidInput, "the global is not SCAFFOLD's [x ; c]: its second half must repeat the "
                                          "first's entries, named \"scaffold.c/<entry>\"");
  ParamLayout out;
  const auto& e = layout.entries();
  for (std::size_t i = 0; i < e.size() / 2; ++i) out.add(e[i].name, e[i].shape);
  return out;
}

ParamVector scaffold_adapter(const ParamVector& global) {
  ParamLayout x = scaffold_adapter_layout(global.layout());
  const auto values = global.values().first(x.size());
  return {std::move(x), std::vector<float>(values.begin(), values.end())};
}

ParamVector with_zero_control(const ParamVector& adapter) {
  std::vector<float> values(adapter.values().begin(), adapter.values().end());
  values.resize(2 * values.size(), 0.0F);
  return {scaffold_layout(adapter.layout()), std::move(values)};
}

}  // namespace fedge::federation
