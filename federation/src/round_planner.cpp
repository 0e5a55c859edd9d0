#include "fedge/federation/round_planner.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "fedge/common/rng.h"
#include "fedge/federation/wire.h"
#include "fedge/privacy/quantize.h"

namespace fedge::federation {

namespace agg = fedge::aggregation;
using protocol::NodeId;

std::vector<NodeId> select_nodes(const FederationConfig& cfg, const Membership& members, std::uint64_t round,
                                 std::uint32_t attempt, std::int64_t now_ms, std::uint32_t needed) {
  std::vector<NodeId> pool = members.selectable(now_ms);
  if (pool.size() < needed) return {};
  auto count = static_cast<std::size_t>(std::ceil(cfg.fraction * static_cast<double>(pool.size())));
  count = std::max<std::size_t>(count, cfg.min_nodes);
  if (cfg.max_nodes) count = std::min<std::size_t>(count, cfg.max_nodes);
  count = std::min(count, pool.size());
  Rng rng(cfg.seed, "select/" + std::to_string(round) + "/" + std::to_string(attempt));
  for (std::size_t i = 0; i < count; ++i) std::swap(pool[i], pool[i + rng.below(pool.size() - i)]);
  pool.resize(count);
  std::sort(pool.begin(), pool.end());
  return pool;
}

namespace {

// SecAgg+ parameters for n nodes (the config's degree and threshold, or the
// smallest graph that meets the dropout and corruption targets), and the
// quantiser that cannot overflow the ring with n inputs plus DP noise.
void plan_secure(const FederationConfig& cfg, const privacy::Key32& secret, std::uint64_t round,
                 std::uint32_t attempt, PlannedRound& out) {
  const auto n = static_cast<std::uint32_t>(out.plan.selected.size());
  const std::uint64_t d = out.encoding.vector_length();
  const privacy::Key32 graph_seed =
      privacy::derive_key(secret, "graph-seed/" + std::to_string(round) + "/" + std::to_string(attempt));
  agg::SecAggParams sp;
  if (cfg.secagg_degree) {
    // Clamping to a smaller round keeps validate(config)'s margin:
    // min_threshold only shrinks with the degree, and k+1 always meets it.
    sp.num_clients = n;
    sp.degree = std::min(cfg.secagg_degree, n - 1);
    sp.threshold = std::min(cfg.secagg_threshold, sp.degree + 1);
    sp.vector_length = d;
    sp.graph_seed = graph_seed;
  } else {
    sp = agg::choose_secagg_params(n, d, cfg.expected_dropout, cfg.corrupt_fraction, cfg.failure_probability,
                                   graph_seed);
  }
  sp.prg = cfg.secagg_prg;  // choose_secagg_params leaves its own default
  sp.mode = cfg.secagg_mode;
  if (sp.mode == agg::SecAggMode::kMalicious) sp.graph_seed_commitment = agg::commit_graph_seed(graph_seed);
  // Distributed noise is split over the fewest survivors the round may finish
  // with (the nodes read the same threshold from the plan: wire::update_encoding).
  out.encoding.min_survivors = sp.threshold;
  std::uint64_t noise_bound = 0;
  if (cfg.quant_bits) {
    out.encoding.quant_bits = cfg.quant_bits;
    noise_bound = skellam_noise_bound(out.encoding);
    privacy::Quantizer(cfg.clip_range, cfg.quant_bits).check_capacity(n, noise_bound);
  } else {
    noise_bound = choose_quant_bits(out.encoding, n);
  }
  agg::validate(sp);
  out.plan.secagg = wire::to_wire(wire::SecureSettings{sp, out.encoding.quant_bits, out.encoding.clip_range, noise_bound});
  out.secagg = sp;
}

}  // namespace

PlannedRound plan_round(const FederationConfig& cfg, const Membership& members, const privacy::Key32& secret,
                        std::uint64_t round, std::uint32_t attempt, std::uint64_t version,
                        std::uint64_t update_length, const std::vector<NodeId>& selected, double strategy_mu,
                        std::uint32_t rank_slots) {
  const bool dp = cfg.dp.mode != protocol::DpMode::kNone;
  PlannedRound out;
  protocol::RoundPlan& p = out.plan;
  p.global_version = version;
  p.hyper = cfg.hyper;
  if (p.hyper.fedprox_mu == 0) p.hyper.fedprox_mu = static_cast<float>(strategy_mu);
  p.deadlines = cfg.deadlines;
  p.secure = cfg.secure;
  p.dp = {cfg.dp.mode, dp ? cfg.dp.clip_norm : 0.0, dp ? cfg.dp.noise_multiplier : 0.0};
  p.selected = selected;
  p.update_length = update_length;
  // Weights are capped examples over the scale, so they lie in [0, 1] and no
  // selected node's share of the weight exceeds the configured cap.
  std::vector<std::uint64_t> counts;
  for (NodeId id : selected) counts.push_back(members.at(id).reg.capabilities.num_examples);
  const std::uint64_t scale = capped_example_scale(counts, cfg.weight_caps);
  p.example_scale = scale;
  p.loss_cap = cfg.loss_cap;
  out.encoding = {update_length, cfg.clip_range,      0, scale, cfg.loss_cap, cfg.dp.mode, p.dp.clip_norm,
                  p.dp.noise_multiplier, static_cast<std::uint32_t>(selected.size())};
  out.encoding.rank_slots = cfg.secure ? rank_slots : 0;  // plain rounds read ranks from profile_ranks
  if (cfg.secure) plan_secure(cfg, secret, round, attempt, out);
  validate(out.encoding, cfg.secure);
  return out;
}

}  // namespace fedge::federation
