#include "fedge/federation/round_result.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "config_error.h"
#include "fedge/common/error.h"
#include "fedge/privacy/dp.h"
#include "fedge/privacy/rdp.h"

namespace fedge::federation {

namespace agg = fedge::aggregation;
using protocol::NodeId;

namespace {

std::map<std::string, double> participation(const RoundStages& r, std::size_t survivors) {
  const auto selected = r.plan().selected.size();
  return {{"selected", static_cast<double>(selected)},
          {"participants", static_cast<double>(survivors)},
          {"dropped", static_cast<double>(selected - survivors)}};
}

double public_weight(const RoundStages& r, const Membership& members, const std::vector<NodeId>& survivors) {
  double w = 0;
  for (NodeId id : survivors) w += node_weight(members.at(id).reg.capabilities.num_examples, r.encoding().example_scale);
  return w;
}

std::vector<float> step_from_sum(agg::Strategy& strategy, const std::vector<float>& global,
                                 const std::vector<float>& weighted_sum, double total) {
  if (!(total > 0) || !std::isfinite(total))
    throw Error(ErrorKind::kPrivacy, "the survivors' total weight is " + std::to_string(total));
  return strategy.aggregate_sum(global, weighted_sum, total);
}

// A node's LoRA rank as the config makes it public: by its registered device profile.
int node_rank(const FederationConfig& cfg, const Membership& members, NodeId id, int max_rank) {
  const auto it = cfg.profile_ranks.find(members.at(id).reg.capabilities.device_profile);
  return it == cfg.profile_ranks.end() ? max_rank : static_cast<int>(it->second);
}

// HetLoRA over plain updates: the weighted sum of the updates (each cut to its
// node's rank, so no node writes past it), the rank-wise weights, central DP
// noise on the sum when configured, then the strategy on the rank-wise sum.
std::vector<float> hetlora_plain_step(const RoundStages& r, const FederationConfig& cfg, const Membership& members,
                                      const agg::LoraLayout& lora, const std::vector<NodeId>& survivors,
                                      const std::vector<agg::ClientUpdate>& ups, privacy::ChaChaRng& noise_rng,
                                      agg::Strategy& strategy, const std::vector<float>& global) {
  const bool dp = cfg.dp.mode != protocol::DpMode::kNone;
  std::vector<float> sum(global.size(), 0.0F);
  std::vector<int> ranks;
  std::vector<double> weights;
  for (std::size_t n = 0; n < ups.size(); ++n) {
    ranks.push_back(node_rank(cfg, members, survivors[n], lora.rank));
    // Plain FedAvg's weights (examples), or the secure path's under DP.
    weights.push_back(dp ? node_weight(static_cast<std::uint64_t>(ups[n].num_examples), r.encoding().example_scale)
                         : ups[n].num_examples);
    const auto mine = agg::keep_rank(lora, ups[n].update, ranks.back());
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += static_cast<float>(weights.back() * mine[i]);
  }
  double total = 0;
  for (double w : weights) total += w;
  if (dp) {
    if (cfg.dp.mode == protocol::DpMode::kCentral)
      privacy::add_gaussian_noise(sum, cfg.dp.noise_multiplier * cfg.dp.clip_norm, noise_rng);
    total = public_weight(r, members, survivors);
  }
  const auto rank_weights = agg::rank_weight_sums(lora.rank, ranks, weights);
  return step_from_sum(strategy, global, agg::rankwise_sum(lora, sum, rank_weights, total), total);
}

}  // namespace

RoundOutcome secure_round_result(const RoundStages& r, const agg::SecAggResult& res, const Membership& members,
                                const DpConfig& dp, privacy::ChaChaRng& noise_rng, agg::Strategy& strategy,
                                const std::vector<float>& global, const agg::LoraLayout* hetlora) {
  DecodedSum ds = decode_secure_sum(r.encoding(), res.sum);
  RoundOutcome out;
  for (auto c : res.included) out.survivors.push_back(r.node_of(c));
  double total = ds.total_weight;
  if (dp.mode != protocol::DpMode::kNone) {
    // Fixed denominator (the survivors' public weights): the noisy weight
    // coordinate could be near zero or negative at small n.
    if (dp.mode == protocol::DpMode::kCentral)
      privacy::add_gaussian_noise(ds.weighted_sum, dp.noise_multiplier * dp.clip_norm, noise_rng);
    total = public_weight(r, members, out.survivors);
  }
  out.metrics = participation(r, out.survivors.size());
  out.metrics["total_examples"] = total * static_cast<double>(r.encoding().example_scale);
  if (std::isfinite(ds.mean_train_loss)) out.metrics["train_loss"] = ds.mean_train_loss;
  out.metrics["weight_sum"] = ds.total_weight;
  if (hetlora) ds.weighted_sum = agg::rankwise_sum(*hetlora, ds.weighted_sum, ds.rank_weights, total);
  strategy.set_round_participants(out.survivors.size());  // the sum alone does not say (SCAFFOLD's |S|)
  out.next_global = step_from_sum(strategy, global, ds.weighted_sum, total);
  return out;
}

RoundOutcome plain_round_result(const RoundStages& r, const FederationConfig& cfg, const Membership& members,
                               privacy::ChaChaRng& noise_rng, agg::Strategy& strategy,
                               const std::vector<float>& global, const agg::LoraLayout* hetlora) {
  const DpConfig& dp = cfg.dp;
  const auto& plain = r.plain_updates();
  const std::size_t need = std::max<std::uint32_t>(cfg.min_survivors, 1);
  if (plain.size() < need)
    throw Error(ErrorKind::kPrivacy, std::to_string(plain.size()) + " of " + std::to_string(r.plan().selected.size()) +
                                         " nodes sent updates; " + std::to_string(need) + " needed");
  RoundOutcome out;
  // A count is self-reported: it counts for no more than the node registered
  // with (what the plan's scale was computed from) and the weight caps allow.
  std::vector<std::uint64_t> counts;
  for (const auto& [id, e] : plain) {
    out.survivors.push_back(id);
    counts.push_back(std::min({e.num_examples, members.at(id).reg.capabilities.num_examples,
                               cfg.weight_caps.max_examples}));
  }
  const std::uint64_t scale = capped_example_scale(counts, cfg.weight_caps);
  std::vector<agg::ClientUpdate> ups;
  double examples = 0, loss = 0;
  for (const auto& [id, e] : plain) {
    const auto weight = static_cast<double>(std::min(counts[ups.size()], scale));
    ups.push_back({e.update, weight, e.train_loss});
    examples += weight;
    loss += weight * e.train_loss;
  }
  out.metrics = participation(r, out.survivors.size());
  out.metrics["total_examples"] = examples;
  out.metrics["train_loss"] = loss / examples;
  strategy.set_round_participants(out.survivors.size());
  if (hetlora) {
    out.next_global = hetlora_plain_step(r, cfg, members, *hetlora, out.survivors, ups, noise_rng, strategy, global);
    return out;
  }
  if (dp.mode == protocol::DpMode::kNone) {
    out.next_global = strategy.aggregate(global, ups);
    return out;
  }
  // Central DP: the same weighted sum as the secure path, then noise.
  std::vector<float> sum(global.size(), 0.0F);
  for (std::size_t n = 0; n < ups.size(); ++n) {
    const double w = node_weight(counts[n], r.encoding().example_scale);
    for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += static_cast<float>(w * ups[n].update[i]);
  }
  privacy::add_gaussian_noise(sum, dp.noise_multiplier * dp.clip_norm, noise_rng);
  out.next_global = step_from_sum(strategy, global, sum, public_weight(r, members, out.survivors));
  return out;
}

void PrivacyLedger::replay(const std::vector<DpRecord>& history, double delta) {
  for (const auto& rec : history) {
    if (!(rec.noise_multiplier > 0) || rec.sampling_rate < 0 || rec.sampling_rate > 1)
      detail::bad_config("resume.dp_history round " + std::to_string(rec.round) +
                         " has an invalid sigma or sampling rate");
    accountant_.step(rec.sampling_rate, rec.noise_multiplier, rec.steps);
  }
  if (!history.empty()) epsilon_ = accountant_.spent(delta).epsilon;
}

double charged_noise_multiplier(const DpConfig& dp, const UpdateEncoding& enc, std::size_t survivors) {
  if (dp.mode == protocol::DpMode::kDistributed) return distributed_noise_multiplier(enc, survivors);
  return dp.noise_multiplier;
}

DpRecord PrivacyLedger::charge(std::uint64_t round, double noise_multiplier, double delta) {
  accountant_.step(kDpSamplingRate, noise_multiplier, 1);
  epsilon_ = accountant_.spent(delta).epsilon;
  return DpRecord{round, noise_multiplier, kDpSamplingRate, 1, epsilon_, delta};
}

}  // namespace fedge::federation
