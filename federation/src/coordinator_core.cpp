#include "fedge/federation/coordinator_core.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "config_error.h"
#include "fedge/common/error.h"
#include "fedge/common/param_vector.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/round_planner.h"
#include "fedge/federation/round_result.h"
#include "fedge/privacy/crypto.h"

namespace fedge::federation {

namespace agg = fedge::aggregation;
using detail::bad_config;
using protocol::Envelope;
using protocol::ErrorCode;
using protocol::NodeId;

namespace {

std::uint64_t layout_numel(const std::vector<protocol::TensorLayout>& layout) {
  std::uint64_t total = 0;
  std::set<std::string> names;
  for (const auto& t : layout) {
    if (!names.insert(t.name).second) bad_config("resume layout names tensor '" + t.name + "' twice");
    std::uint64_t n = 1;
    for (auto d : t.shape) n *= d;
    total += n;
  }
  return total;
}

// HetLoRA's view of the global: its LoRA pairs at the maximum rank.
std::optional<agg::LoraLayout> hetlora_layout(const FederationConfig& cfg,
                                              const std::vector<protocol::TensorLayout>& layout) {
  if (cfg.rank_aggregation != agg::RankAggregation::kHetLora) return std::nullopt;
  ParamLayout params;
  for (const auto& t : layout) params.add(t.name, std::vector<std::int64_t>(t.shape.begin(), t.shape.end()));
  try {
    agg::LoraLayout lora = agg::lora_layout(params);
    if (static_cast<std::uint32_t>(lora.rank) > kMaxRankSlots)
      bad_config("rank_aggregation = hetlora: the global's LoRA rank " + std::to_string(lora.rank) + " is above " +
                 std::to_string(kMaxRankSlots));
    for (const auto& [profile, rank] : cfg.profile_ranks)
      if (rank > static_cast<std::uint32_t>(lora.rank))
        bad_config("profile_ranks: device profile '" + profile + "' has LoRA rank " + std::to_string(rank) +
                   ", above the global's " + std::to_string(lora.rank));
    return lora;
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kInvalidInput) throw;
    if (std::string_view(e.what()).starts_with("federation config")) throw;
    bad_config(std::string("rank_aggregation = hetlora needs a LoRA adapter as the global: ") + e.what());
  }
}

protocol::Payload<std::uint8_t> model_bytes(const std::vector<float>& values) {
  static_assert(sizeof(float) == 4);
  std::vector<std::uint8_t> bytes(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian host
  return protocol::Payload<std::uint8_t>::own(std::move(bytes));
}

// The round's DP record in its metrics, so the coordinator's log and store say
// what was charged: sampling (0 = fixed-size selection, not Poisson), q, the
// noise multiplier and the composed epsilon.
void add_dp_metrics(std::map<std::string, double>& metrics, const DpRecord& dp) {
  metrics["dp_poisson_sampling"] = 0;
  metrics["dp_sampling_rate"] = dp.sampling_rate;
  metrics["dp_noise_multiplier"] = dp.noise_multiplier;
  metrics["epsilon"] = dp.epsilon;
}

}  // namespace

// The running round.
struct RunningRound {
  RoundStages stages;
};

struct CoordinatorCore::State {
  FederationConfig cfg;
  std::unique_ptr<agg::Strategy> strategy;
  privacy::Key32 secret{};
  privacy::ChaChaRng noise_rng;
  PrivacyLedger ledger;
  Membership members;
  NodeMetrics node_metrics;
  std::uint64_t round_id = 1;
  std::uint32_t attempt = 1;
  bool started_once = false;  // a round has started in this process
  std::uint64_t version = 0;
  std::vector<float> global;
  std::vector<protocol::TensorLayout> layout;
  std::optional<agg::LoraLayout> hetlora;  // rank_aggregation = hetlora: the global's LoRA pairs
  protocol::Payload<std::uint8_t> global_bytes;
  std::optional<RunningRound> round;
  std::int64_t next_start = std::numeric_limits<std::int64_t>::min();
  bool finished = false;
  bool finished_announced = false;

  State(FederationConfig c, const privacy::Key32& key)
      : cfg(std::move(c)),
        secret(key),
        noise_rng(privacy::derive_key(key, "central-dp-noise")),
        members(cfg.liveness_timeout_ms) {}

  // Live nodes needed before the next round may start.
  std::uint32_t nodes_needed() const {
    return started_once ? cfg.min_nodes : std::max(cfg.min_nodes, cfg.startup_nodes);
  }

  // ---------- sending ----------
  void refuse(CoordinatorActions& a, const Envelope& env, ErrorCode code, const std::string& why) {
    if (round && env.round == round->stages.round()) round->stages.count_error_sent();
    a.events.push_back(MessageRefused{env.sender, protocol::body_name(env.body), env.round, code, why});
    // The node matches a refusal to the round and attempt it refers to.
    a.send.push_back(coordinator_message(env.sender, env.round, env.attempt,
                                         protocol::ErrorReply{code, why, static_cast<std::uint16_t>(env.body.index())}));
  }
  void send_model(CoordinatorActions& a, NodeId node) {
    protocol::GlobalModel m{version, protocol::ModelFormat::kFlatF32, global_bytes, layout};
    a.send.push_back(coordinator_message(node, 0, 0, std::move(m)));
    members.mark_sent(node, version);
  }

  // ---------- messages ----------
  void on_register(CoordinatorActions& a, std::int64_t now, const Envelope& env,
                   const std::optional<protocol::Key32>& key) {
    const auto& reg = std::get<protocol::Register>(env.body);
    if (auto refusal = members.check_register(env.sender, reg, key)) return refuse(a, env, refusal->code, refusal->why);
    const bool known = members.enrol(reg, now);
    a.sender_verified = reg.node_id;
    a.events.push_back(NodeRegistered{reg, known});
    a.send.push_back(coordinator_message(reg.node_id, 0, 0,
                                         protocol::RegisterAck{reg.node_id, cfg.heartbeat_interval_ms, version}));
    if (cfg.send_global_to_all) send_model(a, reg.node_id);
  }

  void on_heartbeat(CoordinatorActions& a, std::int64_t now, const Envelope& env) {
    members.touch(env.sender, now);
    const auto& hb = std::get<protocol::Heartbeat>(env.body);
    // A node that lost the current model (restart without Register) gets it
    // again; without send_global_to_all it gets the model when selected.
    if (cfg.send_global_to_all && hb.global_version != version && members.at(env.sender).sent_version != version) send_model(a, env.sender);
  }

  void on_round_message(CoordinatorActions& a, std::int64_t now, const Envelope& env) {
    if (!round)
      return refuse(a, env, env.round == round_id ? ErrorCode::kWrongStage : ErrorCode::kWrongRound,
                    "no round is running (round " + std::to_string(round_id) + " is next)");
    if (auto refusal = round->stages.receive(env)) return refuse(a, env, refusal->code, refusal->why);
    members.touch(env.sender, now);
    if (round->stages.stage_complete()) advance(a, now);
  }

  // ---------- stages ----------
  // Closes the current stage (deadline or everyone answered) and opens the
  // next, or ends the round.
  void advance(CoordinatorActions& a, std::int64_t now) {
    RoundStages& r = round->stages;
    try {
      StageStep step = r.advance(now);
      for (auto& out : step.send) a.send.push_back(std::move(out));
      if (!step.done) return;
      RoundOutcome result =
          step.secure_sum
              ? secure_round_result(r, *step.secure_sum, members, cfg.dp, noise_rng, *strategy, global,
                                    hetlora ? &*hetlora : nullptr)
              : plain_round_result(r, cfg, members, noise_rng, *strategy, global, hetlora ? &*hetlora : nullptr);
      complete(a, now, std::move(result));
    } catch (const Error& e) {
      fail(a, now, e.what());
    }
  }

  // ---------- round start ----------
  void start_round(CoordinatorActions& a, std::int64_t now) {
    std::vector<NodeId> selected = select_nodes(cfg, members, round_id, attempt, now, nodes_needed());
    if (selected.empty()) return;
    started_once = true;
    std::optional<RoundStages> stages;
    try {
      PlannedRound planned = plan_round(cfg, members, secret, round_id, attempt, version, global.size(), selected,
                                        strategy->proximal_mu(),
                                        hetlora ? static_cast<std::uint32_t>(hetlora->rank) : 0);
      stages.emplace(round_id, attempt, std::move(planned), now, cfg.secagg_threads, cfg.secagg_roster);
    } catch (const Error& e) {
      a.events.push_back(RoundFailed{round_id, attempt, std::string("cannot plan the round: ") + e.what(), {}, false});
      ++attempt;
      next_start = now + cfg.retry_delay_ms;
      return;
    }
    const protocol::RoundPlan& p = stages->plan();
    for (NodeId id : selected) {
      if (members.at(id).sent_version != version) send_model(a, id);
      a.send.push_back(coordinator_message(id, round_id, attempt, p));
    }
    a.events.push_back(RoundStarted{round_id, attempt, p});
    round = RunningRound{std::move(*stages)};
  }

  // ---------- round end ----------
  void complete(CoordinatorActions& a, std::int64_t now, RoundOutcome result) {
    RoundStages& r = round->stages;
    std::optional<DpRecord> dp;
    if (cfg.dp.mode != protocol::DpMode::kNone) {
      const double sigma = charged_noise_multiplier(cfg.dp, r.encoding(), result.survivors.size());
      dp = ledger.charge(r.round(), sigma, cfg.dp.delta);
      add_dp_metrics(result.metrics, *dp);
    }
    result.metrics.merge(node_metrics.take_means());
    global = std::move(result.next_global);
    ++version;
    global_bytes = model_bytes(global);
    a.events.push_back(RoundCompleted{r.round(), r.attempt(), version, global, std::move(result.survivors),
                                      std::move(result.metrics), dp, r.take_stats(), strategy->state()});
    round.reset();
    if (cfg.send_global_to_all)
      for (NodeId id : members.live(now)) send_model(a, id);
    ++round_id;
    attempt = 1;
    next_start = now + cfg.round_gap_ms;
    if (round_id > cfg.rounds) finish(a);
  }

  void fail(CoordinatorActions& a, std::int64_t now, const std::string& why) {
    RoundStages& r = round->stages;
    r.close_for_failure();
    a.events.push_back(RoundFailed{r.round(), r.attempt(), why, r.take_stats(), true});
    round.reset();
    ++attempt;
    next_start = now + cfg.retry_delay_ms;
  }

  void finish(CoordinatorActions& a) {
    finished = true;
    if (!finished_announced) a.events.push_back(FederationFinished{round_id - 1});
    finished_announced = true;
  }

  // ---------- ticks ----------
  void tick(CoordinatorActions& a, std::int64_t now) {
    for (NodeId id : members.expire(now)) a.events.push_back(NodeLost{id});
    // A stage that waits only on nodes gone silent closes now, not at its deadline.
    if (round) {
      const auto alive = [this](NodeId id) { return members.at(id).alive; };
      if (now >= round->stages.deadline_ms() || round->stages.waits_only_on_lost(alive)) advance(a, now);
    }
    if (!round && !finished && now >= next_start) start_round(a, now);
  }
};

CoordinatorCore::CoordinatorCore(FederationConfig config, ResumeState resume) {
  validate(config);
  if (resume.next_round == 0) bad_config("resume.next_round must be >= 1");
  if (resume.global.empty()) bad_config("resume.global is empty: the federation needs initial parameters");
  if (layout_numel(resume.layout) != resume.global.size())
    bad_config("resume.layout describes " + std::to_string(layout_numel(resume.layout)) + " values but global has " +
               std::to_string(resume.global.size()));
  for (float v : resume.global)
    if (!std::isfinite(v)) bad_config("resume.global holds a non-finite value");
  const privacy::Key32 key = config.secret_seed ? *config.secret_seed : privacy::random_key();
  s_ = std::make_unique<State>(std::move(config), key);
  s_->strategy = agg::make_strategy(s_->cfg.strategy, s_->cfg.strategy_params, s_->cfg.secure);
  for (const auto& [name, values] : resume.strategy_state) {
    if (values.size() != resume.global.size())
      bad_config("resume.strategy_state '" + name + "' has " + std::to_string(values.size()) +
                 " values but global has " + std::to_string(resume.global.size()));
  }
  try {
    s_->strategy->restore(resume.strategy_state);
  } catch (const Error& e) {
    bad_config(std::string("resume.strategy_state: ") + e.what());
  }
  s_->round_id = resume.next_round;
  s_->version = resume.global_version;
  s_->global = std::move(resume.global);
  s_->layout = std::move(resume.layout);
  s_->hetlora = hetlora_layout(s_->cfg, s_->layout);
  s_->global_bytes = model_bytes(s_->global);
  if (!resume.dp_history.empty()) {
    const double delta =
        s_->cfg.dp.mode != protocol::DpMode::kNone ? s_->cfg.dp.delta : resume.dp_history.back().delta;
    s_->ledger.replay(resume.dp_history, delta);
  }
  for (const auto& [id, key] : resume.key_bindings)
    if (!s_->members.restore_binding(id, key))
      bad_config("resume.key_bindings: node " + std::to_string(id) +
                 " is id 0, or its key is bound to another node id too (one key is one node)");
  s_->finished = s_->round_id > s_->cfg.rounds;
}

CoordinatorCore::~CoordinatorCore() = default;
CoordinatorCore::CoordinatorCore(CoordinatorCore&&) noexcept = default;
CoordinatorCore& CoordinatorCore::operator=(CoordinatorCore&&) noexcept = default;

CoordinatorActions CoordinatorCore::on_message(std::int64_t now_ms, const Envelope& env,
                                               const std::optional<protocol::Key32>& authenticated_key) {
  CoordinatorActions a;
  State& s = *s_;
  if (env.version != protocol::kProtocolVersion) {
    s.refuse(a, env, ErrorCode::kBadVersion, "run the same fedge release on both ends");
    return a;
  }
  if (std::holds_alternative<protocol::Register>(env.body)) {
    s.on_register(a, now_ms, env, authenticated_key);
    return a;
  }
  if (const auto* e = std::get_if<protocol::ErrorReply>(&env.body)) {
    a.events.push_back(NodeReportedError{env.sender, e->code, e->message});
    return a;  // never answer an error with an error
  }
  if (!s.members.contains(env.sender)) {
    s.refuse(a, env, ErrorCode::kUnknownSender, "node " + std::to_string(env.sender) + " has not registered");
    return a;
  }
  if (authenticated_key && *authenticated_key != s.members.at(env.sender).reg.public_key) {
    s.refuse(a, env, ErrorCode::kNotAllowed, "this connection's CURVE key is not the key node " +
                                                 std::to_string(env.sender) + " registered with");
    return a;
  }
  a.sender_verified = env.sender;
  if (std::holds_alternative<protocol::Heartbeat>(env.body)) {
    s.on_heartbeat(a, now_ms, env);
  } else if (const auto* m = std::get_if<protocol::Metrics>(&env.body)) {
    s.members.touch(env.sender, now_ms);
    s.node_metrics.add(*m);
  } else if (is_round_message(env.body)) {
    s.on_round_message(a, now_ms, env);
  } else {
    s.refuse(a, env, ErrorCode::kNotAllowed,
             std::string(protocol::body_name(env.body)) + " is not a message a node sends to the coordinator");
  }
  return a;
}

CoordinatorActions CoordinatorCore::on_tick(std::int64_t now_ms) {
  CoordinatorActions a;
  s_->tick(a, now_ms);
  return a;
}

std::optional<std::int64_t> CoordinatorCore::next_deadline_ms() const {
  const State& s = *s_;
  std::optional<std::int64_t> t = s.members.next_expiry_ms();
  auto consider = [&](std::int64_t v) { t = t ? std::min(*t, v) : v; };
  if (s.round) {
    consider(s.round->stages.deadline_ms());
  } else if (!s.finished && s.members.ready_count() >= s.nodes_needed()) {
    consider(s.next_start == std::numeric_limits<std::int64_t>::min() ? 0 : s.next_start);
  }
  return t;
}

bool CoordinatorCore::finished() const { return s_->finished; }
std::uint64_t CoordinatorCore::current_round() const { return s_->round ? s_->round->stages.round() : s_->round_id; }
std::uint32_t CoordinatorCore::current_attempt() const {
  return s_->round ? s_->round->stages.attempt() : s_->attempt;
}
RoundStage CoordinatorCore::stage() const { return s_->round ? s_->round->stages.stage() : RoundStage::kIdle; }
const protocol::RoundPlan* CoordinatorCore::current_plan() const {
  return s_->round ? &s_->round->stages.plan() : nullptr;
}
const RoundStats* CoordinatorCore::current_stats() const { return s_->round ? &s_->round->stages.stats() : nullptr; }
std::uint64_t CoordinatorCore::global_version() const { return s_->version; }
const std::vector<float>& CoordinatorCore::global() const { return s_->global; }
const std::vector<protocol::TensorLayout>& CoordinatorCore::layout() const { return s_->layout; }
std::vector<protocol::NodeId> CoordinatorCore::live_nodes(std::int64_t now_ms) const {
  return s_->members.live(now_ms);
}
std::vector<protocol::NodeId> CoordinatorCore::registered_nodes() const { return s_->members.ids(); }
double CoordinatorCore::epsilon() const { return s_->ledger.epsilon(); }
const FederationConfig& CoordinatorCore::config() const { return s_->cfg; }

}  // namespace fedge::federation
