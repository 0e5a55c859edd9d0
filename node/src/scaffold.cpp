#include "fedge/node/scaffold.h"

#include <string>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"

namespace fedge::node {

namespace fs = std::filesystem;

ScaffoldControl::ScaffoldControl(fs::path file) : file_(std::move(file)) {
  if (!fs::exists(file_)) return;
  try {
    loaded_ = ParamVector::load(file_);
    spdlog::info("SCAFFOLD: this node's control variate read from {}", file_.string());
  } catch (const Error& e) {
    spdlog::warn("SCAFFOLD: {} not used ({}); this node's control variate starts from zero", file_.string(), e.what());
  }
}

ParamVector ScaffoldControl::gradient_offset(const ParamVector& global) {
  ParamLayout x = scaffold_adapter_layout(global.layout());
  if (layout_ != x) {
    if (layout_) spdlog::warn("SCAFFOLD: the global's adapter layout changed; this node's control variate starts from zero");
    layout_ = x;
    control_.clear();
    if (loaded_) {
      try {
        const ParamVector kept = loaded_->remapped(*layout_);
        control_.assign(kept.values().begin(), kept.values().end());
      } catch (const Error& e) {
        spdlog::warn("SCAFFOLD: {} does not fit the global ({}); this node's control variate starts from zero",
                     file_.string(), e.what());
      }
      loaded_.reset();
    }
  }
  pending_.clear();
  pending_in_sum_ = false;
  const auto c = global.values().subspan(x.size());
  std::vector<float> offset(c.begin(), c.end());
  for (std::size_t i = 0; i < control_.size(); ++i) offset[i] -= control_[i];
  return {std::move(x), std::move(offset)};
}

std::vector<float> ScaffoldControl::finish_round(const ParamVector& global, std::span<const float> update,
                                                 std::span<const float> mean_gradient) {
  const ParamLayout x = scaffold_adapter_layout(global.layout());
  if (layout_ != x)
    throw Error(ErrorKind::kInvalidInput, "SCAFFOLD: the round's global is not the one its training started from");
  if (update.size() != x.size() || mean_gradient.size() != x.size())
    throw Error(ErrorKind::kInvalidInput, "SCAFFOLD: the update has " + std::to_string(update.size()) +
                                              " floats and the mean gradient " + std::to_string(mean_gradient.size()) +
                                              ", expected " + std::to_string(x.size()) + " each");
  std::vector<float> out(update.begin(), update.end());
  out.insert(out.end(), mean_gradient.begin(), mean_gradient.end());
  for (std::size_t i = 0; i < control_.size(); ++i) out[x.size() + i] -= control_[i];
  pending_.assign(mean_gradient.begin(), mean_gradient.end());
  pending_in_sum_ = false;
  return out;
}

void ScaffoldControl::on_global_installed() {
  if (!pending_.empty() && pending_in_sum_ && layout_) {
    control_ = std::move(pending_);
    // Written aside, then renamed: a crash leaves the old c_i or the new one.
    const fs::path tmp = file_.string() + ".tmp";
    ParamVector(*layout_, control_).save(tmp);
    fs::rename(tmp, file_);
  }
  pending_.clear();
  pending_in_sum_ = false;
}

}  // namespace fedge::node
