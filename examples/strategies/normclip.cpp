// An aggregation strategy as a plug-in, in one file: norm-bounded averaging
// (Sun et al. 2019, "Can You Really Backdoor Federated Learning?"). Each
// node's update is scaled down to an L2 norm of at most `max_norm` before the
// example-weighted mean, so no single node can move the global adapter far.
//
// Build it in with the CMake option FEDGE_STRATEGY_PLUGINS (a list of .cpp
// files; this one is in the default list) and name it in a config:
//   [federation] strategy = "normclip"   strategy_params = { max_norm = 0.5 }
// or in a scenario's [training] strategy. It needs each update on its own, so
// it runs with secure aggregation off (make_strategy refuses it otherwise).
#include <cmath>
#include <memory>

#include "fedge/aggregation/strategy.h"
#include "fedge/common/error.h"

namespace {

using fedge::aggregation::ClientUpdate;

class NormClip : public fedge::aggregation::Strategy {
 public:
  explicit NormClip(double max_norm) : max_norm_(max_norm) {
    if (!(max_norm > 0) || !std::isfinite(max_norm))
      throw fedge::Error(fedge::ErrorKind::kInvalidInput, "normclip: max_norm must be a positive number");
  }
  std::string name() const override { return "normclip"; }
  bool needs_individual_updates() const override { return true; }

  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    // Clip copies, then let the library's weighted mean check and average them.
    std::vector<std::vector<float>> clipped;
    std::vector<ClientUpdate> scaled;
    clipped.reserve(updates.size());
    for (const ClientUpdate& u : updates) {
      double norm2 = 0;
      for (float v : u.update) norm2 += double(v) * v;
      const double norm = std::sqrt(norm2);
      const double scale = norm > max_norm_ ? max_norm_ / norm : 1.0;
      clipped.emplace_back(u.update.begin(), u.update.end());
      for (float& v : clipped.back()) v = static_cast<float>(v * scale);
      scaled.push_back({clipped.back(), u.num_examples});
    }
    return apply(global, fedge::aggregation::weighted_mean_update(global, scaled));
  }

  std::vector<float> aggregate_sum(std::span<const float>, std::span<const float>, double) override {
    throw fedge::Error(fedge::ErrorKind::kInvalidInput,
                       "normclip clips each node's update and cannot run on a securely aggregated sum");
  }

 private:
  double max_norm_;
};

const fedge::aggregation::StrategyRegistration kNormClip{
    "normclip",
    {{"max_norm"},
     [](const fedge::aggregation::StrategyParams& p) {
       auto it = p.find("max_norm");
       return std::make_unique<NormClip>(it == p.end() ? 1.0 : it->second);
     },
     "norm-bounded FedAvg, a plug-in (examples/strategies/normclip.cpp)"}};

}  // namespace
