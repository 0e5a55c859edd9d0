#include "fedge/federation/coordinator_config.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "config_error.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/privacy/prg.h"

namespace fedge::federation {

using detail::bad_config;

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Degree and threshold set by hand must keep the margin choose_secagg_params
// keeps: at least kMinSurvivors, and more than (k+1)(1+corrupt)/2 share
// holders, so the server and the corrupt nodes together never gather both
// share kinds of an honest node. Rounds with fewer nodes clamp both (k to
// n-1, t to k+1), which keeps the margin (min_threshold grows with k).
void validate_secagg_by_hand(const FederationConfig& c) {
  if ((c.secagg_degree == 0) != (c.secagg_threshold == 0))
    bad_config("secagg_degree and secagg_threshold are set together (or both 0 to choose them)");
  if (c.secagg_degree == 0) return;
  if (c.secagg_degree % 2)
    bad_config("secagg_degree must be even (SecAgg+ graphs; a round with fewer nodes uses the complete graph n-1)");
  // With corrupt_fraction < 1 (checked before) the least threshold never
  // exceeds the degree + 1 share holders.
  const std::uint32_t holders = c.secagg_degree + 1;
  const std::uint32_t least = aggregation::min_threshold(c.secagg_degree, c.corrupt_fraction);
  if (c.secagg_threshold > holders)
    bad_config("secagg_threshold " + std::to_string(c.secagg_threshold) + " exceeds the " + std::to_string(holders) +
               " share holders of secagg_degree " + std::to_string(c.secagg_degree) + " (degree + 1)");
  if (c.secagg_threshold < least)
    bad_config("secagg_threshold " + std::to_string(c.secagg_threshold) + " is below " + std::to_string(least) +
               ", the least that keeps secure aggregation private with secagg_degree " +
               std::to_string(c.secagg_degree) + " and corrupt_fraction " + number(c.corrupt_fraction) +
               " (at least 3 survivors, and more than (degree+1)(1+corrupt_fraction)/2 share holders); raise "
               "secagg_threshold or set both to 0 to choose them");
}

}  // namespace

void validate(const FederationConfig& c) {
  if (c.rounds == 0) bad_config("rounds must be >= 1");
  if (c.min_nodes == 0) bad_config("min_nodes must be >= 1");
  if (c.secure && c.min_nodes < 3) bad_config("min_nodes must be >= 3 with secure aggregation (SecAgg needs 3 clients)");
  if (c.max_nodes != 0 && c.max_nodes < c.min_nodes) bad_config("max_nodes is below min_nodes");
  if (!(c.fraction > 0 && c.fraction <= 1)) bad_config("fraction must be in (0, 1]");
  if (c.heartbeat_interval_ms == 0) bad_config("heartbeat_interval_ms must be > 0");
  if (c.liveness_timeout_ms <= c.heartbeat_interval_ms)
    bad_config("liveness_timeout_ms must exceed heartbeat_interval_ms (else live nodes look dead)");
  if (!(c.clip_range > 0) || !std::isfinite(c.clip_range)) bad_config("clip_range must be a finite number > 0");
  if (!std::isfinite(c.loss_cap) || c.loss_cap < 0) bad_config("loss_cap must be finite and >= 0");
  if (c.weight_caps.max_examples == 0) bad_config("max_examples must be >= 1");
  if (!(c.weight_caps.max_share > 0 && c.weight_caps.max_share <= 1))
    bad_config("max_weight_share must be in (0, 1] (1 = weights by examples alone)");
  if (c.quant_bits != 0 && (c.quant_bits < 2 || c.quant_bits > 32)) bad_config("quant_bits must be 0 or 2..32");
  if (c.secure && !privacy::prg_supported(c.secagg_prg))
    bad_config(std::string("secagg prg ") + privacy::prg_name(c.secagg_prg) +
               " needs AES instructions this machine lacks (the coordinator removes masks); use chacha20");
  if (!(c.expected_dropout >= 0 && c.expected_dropout < 1)) bad_config("expected_dropout must be in [0, 1)");
  if (!(c.corrupt_fraction >= 0 && c.corrupt_fraction < 1)) bad_config("corrupt_fraction must be in [0, 1)");
  validate_secagg_by_hand(c);
  if (c.secagg_mode == aggregation::SecAggMode::kMalicious && !c.secure)
    bad_config("secagg.mode = \"malicious\" needs secure = true (it hardens secure aggregation)");
  if (!c.secagg_roster.empty() && c.secagg_mode != aggregation::SecAggMode::kMalicious)
    bad_config("a secagg roster is used only with secagg.mode = \"malicious\"");
  if (c.dp.mode != protocol::DpMode::kNone) {
    if (!(c.dp.clip_norm > 0) || !std::isfinite(c.dp.clip_norm)) bad_config("dp.clip_norm must be > 0");
    if (!(c.dp.noise_multiplier > 0) || !std::isfinite(c.dp.noise_multiplier))
      bad_config("dp.noise_multiplier must be > 0 when DP is on");
    if (!(c.dp.delta > 0 && c.dp.delta < 1)) bad_config("dp.delta must be in (0, 1)");
    if (c.dp.mode == protocol::DpMode::kDistributed && !c.secure)
      bad_config("distributed DP needs secure = true (nodes noise inside the secure sum); use central DP");
  }
  // make_strategy explains unknown names and robust strategies under secure aggregation.
  bool individual = false;
  try {
    individual = aggregation::make_strategy(c.strategy, c.strategy_params, c.secure)->needs_individual_updates();
  } catch (const Error& e) {
    bad_config(std::string("strategy: ") + e.what());
  }
  if (c.rank_aggregation == aggregation::RankAggregation::kHetLora && individual)
    bad_config("strategy: '" + c.strategy + "' needs each update on its own; HetLoRA's rank-wise mean works on "
               "sums (use fedavg, fedprox or a server optimiser)");
  for (const auto& [profile, rank] : c.profile_ranks)
    if (rank == 0 || rank > kMaxRankSlots)
      bad_config("profile_ranks: device profile '" + profile + "' has LoRA rank " + std::to_string(rank) +
                 " (must be 1.." + std::to_string(kMaxRankSlots) + ")");
}

}  // namespace fedge::federation
