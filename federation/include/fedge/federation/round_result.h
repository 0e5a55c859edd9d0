// The end of a round: from what the survivors contributed (the exact secure
// sum, or plain updates) to the next global model, with central DP noise when
// configured, the round's metrics, and the privacy accounting (PrivacyLedger).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/federation/coordinator_config.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/round_stages.h"
#include "fedge/federation/update_codec.h"
#include "fedge/privacy/prg.h"
#include "fedge/privacy/rdp.h"

namespace fedge::federation {

struct RoundOutcome {
  std::vector<float> next_global;
  std::vector<protocol::NodeId> survivors;  // whose updates are in it
  // selected, participants, dropped, total_examples, train_loss (when
  // known), weight_sum (secure rounds).
  std::map<std::string, double> metrics;
};

// Everything below throws Error(kPrivacy) when the round cannot produce a
// model (too few plain updates, no positive total weight).
//
// Secure rounds: decodes the ring sum (update_codec.h). Under DP the
// denominator is the survivors' public weight, not the noisy weight coordinate.
// With `hetlora` (the global's LoRA pairs) the mean is rank-wise: each rank
// index over the weight of the nodes that have it (the sum's rank-wise
// weights; aggregation::rankwise_sum).
RoundOutcome secure_round_result(const RoundStages& round, const aggregation::SecAggResult& sum,
                                const Membership& members, const DpConfig& dp, privacy::ChaChaRng& noise_rng,
                                aggregation::Strategy& strategy, const std::vector<float>& global,
                                const aggregation::LoraLayout* hetlora = nullptr);
// Plain rounds: the strategy over the (clipped) updates, or, under central
// DP, the same weighted sum as a secure round plus noise. A node's example
// count is what its update reports, at most what it registered with, and the
// config's weight caps hold over the survivors (min_survivors, weight_caps and
// dp are read from `config`). With `hetlora`, each node's rank comes from
// config.profile_ranks by its registered device profile (absent: the maximum)
// and the mean is rank-wise, as in the secure path.
RoundOutcome plain_round_result(const RoundStages& round, const FederationConfig& config, const Membership& members,
                               privacy::ChaChaRng& noise_rng, aggregation::Strategy& strategy,
                               const std::vector<float>& global, const aggregation::LoraLayout* hetlora = nullptr);

// One row of the DP accountant: the mechanism used in a round and the
// accountant's cumulative (epsilon, delta) after it. RDP composition is not
// additive, so epsilon is the composed total, not the round's share; a
// restarted coordinator rebuilds its accountant by replaying
// (noise_multiplier, sampling_rate, steps) of the rows.
struct DpRecord {
  std::uint64_t round = 0;  // filled in by the store
  double noise_multiplier = 0;
  double sampling_rate = 0;
  std::uint64_t steps = 0;
  double epsilon = 0;
  double delta = 0;
  bool operator==(const DpRecord&) const = default;
};

// The sampling rate every DP round is charged at. Selection is a fixed-size
// draw of live nodes (select_nodes), seen by the coordinator and by every
// selected node (the plan lists them), and a round too small to run is
// retried: none of that is the secret Poisson sampling that privacy
// amplification by subsampling assumes, so none is claimed.
inline constexpr double kDpSamplingRate = 1.0;

// The noise multiplier a DP round is charged with, given its survivors (whose
// inputs are in the sum): central DP, the configured sigma (the coordinator
// adds all of it); distributed DP, the noise those survivors really added
// (distributed_noise_multiplier), never the configured target.
double charged_noise_multiplier(const DpConfig& dp, const UpdateEncoding& enc, std::size_t survivors);

// The federation's RDP accountant. Each DP round charges one step of the
// Gaussian mechanism at q = kDpSamplingRate; epsilon is the composed total at
// delta.
class PrivacyLedger {
 public:
  // Replays the rows of a restarted coordinator as recorded. Throws
  // Error(kInvalidInput) for a row with no noise or a sampling rate outside [0, 1].
  void replay(const std::vector<DpRecord>& history, double delta);
  // Charges one round with the noise multiplier its survivors really carry
  // (charged_noise_multiplier) at q = kDpSamplingRate.
  DpRecord charge(std::uint64_t round, double noise_multiplier, double delta);
  double epsilon() const { return epsilon_; }

 private:
  privacy::RdpAccountant accountant_;
  double epsilon_ = 0;
};

}  // namespace fedge::federation
