// What a federation runs with: the coordinator core's settings, checked as a
// whole by validate(). The coordinator's TOML parser and the simulator's
// scenario fill it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "fedge/aggregation/lora_ranks.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/federation/update_codec.h"
#include "fedge/privacy/crypto.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

// The operator's roster of long-term Ed25519 keys (node id -> public key),
// distributed to every node with the allow-list (docs/SECURE_AGGREGATION.md).
using SigningRoster = std::map<protocol::NodeId, privacy::Key32>;

struct DpConfig {
  protocol::DpMode mode = protocol::DpMode::kNone;  // central: coordinator noises the sum;
                                                    // distributed: nodes add Skellam (secure only)
  double clip_norm = 1.0;         // L2 bound of each node's update
  double noise_multiplier = 1.0;  // sigma: noise stddev = sigma * clip_norm on the sum
  double delta = 1e-5;            // for the epsilon reported each round
};

// Every field has a default; the lead's TOML parser fills what a file sets.
struct FederationConfig {
  std::uint64_t rounds = 3;          // completed rounds after which finished() is true
  std::uint32_t min_nodes = 3;       // live nodes needed to start a round (>= 3 when secure)
  std::uint32_t max_nodes = 0;       // most nodes selected per round; 0 = no limit
  // The first round after (re)start waits for this many live nodes, so nodes
  // that start together all take part in it; later rounds need min_nodes. 0 = min_nodes.
  std::uint32_t startup_nodes = 0;
  double fraction = 1.0;             // share of live nodes selected, in (0, 1]; at least min_nodes
  // Every live node gets each new global (at registration, after each round, on
  // a heartbeat that shows an old version), so it serves with the latest
  // adapter. false: a node gets the global only when a round selects it (with
  // its plan): cross-device federations, where most registered devices sit out
  // most rounds and should neither download nor hold the model meanwhile.
  bool send_global_to_all = true;
  std::uint32_t heartbeat_interval_ms = 1000;  // told to nodes in RegisterAck
  std::uint32_t liveness_timeout_ms = 5000;    // silent this long = dead, never selected
  // Per-stage budgets, each counted from the end of the previous stage. Secure:
  // AdvertiseKeys due train_ms + advertise_keys_ms after the plan (covers
  // training), then share_keys_ms, masked_input_ms, unmask_ms. Plain: the
  // PlainUpdate is due train_ms + masked_input_ms after the plan.
  protocol::Deadlines deadlines{60000, 5000, 5000, 10000, 5000};
  protocol::HyperParams hyper{10, 1e-3F, 8, 0.0F};  // fedprox_mu is taken from the strategy when 0
  bool secure = true;                // secure aggregation (SecAgg+) or plain float updates
  double expected_dropout = 0.1;     // for choose_secagg_params
  double corrupt_fraction = 0.1;     // for choose_secagg_params
  double failure_probability = 1e-6; // for choose_secagg_params
  std::uint32_t secagg_degree = 0;   // explicit degree k and threshold t; 0 = chosen
  std::uint32_t secagg_threshold = 0;
  std::uint32_t min_survivors = 0;   // plain rounds: fewest updates to aggregate; 0 = 1
  // Caps on self-reported example counts: a node's count above max_examples
  // counts as max_examples, and no node weighs more than max_weight_share of a
  // round (so one node cannot push every other weight towards 0).
  WeightCaps weight_caps;
  double clip_range = 1.0;           // elementwise update bound = quantiser range
  std::uint32_t quant_bits = 0;      // 0 = the most that cannot overflow (choose_quant_bits)
  double loss_cap = 64.0;            // train losses clamped to [0, loss_cap] in the secure sum
  std::string strategy = "fedavg";   // aggregation::make_strategy name
  aggregation::StrategyParams strategy_params;
  // Heterogeneous LoRA ranks (docs/FEDERATION.md, "Heterogeneous ranks").
  // kHetLora: the global is a LoRA adapter of the maximum rank R (its layout's
  // A/B pairs); secure vectors carry R rank-wise weights (update_codec.h),
  // plain rounds read each node's rank from profile_ranks by its registered
  // device profile (absent: R), and the mean is taken rank-wise. FlexLoRA's
  // global is the dense product B A, averaged as any vector: kFlexLora and
  // kNone change nothing here. HetLoRA needs a strategy that works on sums.
  aggregation::RankAggregation rank_aggregation = aggregation::RankAggregation::kNone;
  std::map<std::string, std::uint32_t> profile_ranks;
  DpConfig dp;
  std::uint64_t seed = 0;            // selection order
  // Key behind graph seeds and central DP noise; unset = fresh OS randomness
  // (production). Simulators and tests set it for reproducible runs.
  std::optional<privacy::Key32> secret_seed;
  std::uint32_t round_gap_ms = 0;    // pause after a completed round
  std::uint32_t retry_delay_ms = 1000;  // pause after a failed attempt (lets stale messages drain)
  int secagg_threads = 1;            // OpenMP threads for mask removal
  // The mask generator of every secure round. AES-256-CTR unmasks about 3x
  // faster but needs AES instructions here and on every node (a node without
  // them sits the round out); ChaCha20 runs anywhere.
  privacy::PrgKind secagg_prg = kFederationPrg;
  // semi-honest (default) or malicious: signed keys, consistency round,
  // committed graph seed (docs/SECURE_AGGREGATION.md). Secure rounds only.
  aggregation::SecAggMode secagg_mode = aggregation::SecAggMode::kSemiHonest;
  // Malicious mode, optional: the same roster the nodes hold; with it the
  // coordinator refuses bad signatures itself instead of forwarding them.
  SigningRoster secagg_roster;
};

// Throws Error(kInvalidInput) naming the field (and, for a robust strategy with
// secure = true, why it cannot work).
void validate(const FederationConfig& config);

}  // namespace fedge::federation
