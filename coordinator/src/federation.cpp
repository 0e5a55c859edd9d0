#include "fedge/coordinator/federation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/privacy/crypto.h"
#include "fedge/privacy/dp.h"
#include "fedge/privacy/quantize.h"

namespace fedge::coordinator {

namespace agg = fedge::aggregation;
using protocol::Envelope;
using protocol::ErrorCode;
using protocol::NodeId;

const char* stage_name(RoundStage stage) {
  switch (stage) {
    case RoundStage::kIdle: return "idle";
    case RoundStage::kAdvertiseKeys: return "advertise_keys";
    case RoundStage::kShareKeys: return "share_keys";
    case RoundStage::kMaskedInput: return "masked_input";
    case RoundStage::kUnmask: return "unmask";
    case RoundStage::kPlainUpdate: return "plain_update";
  }
  return "?";
}

namespace {

[[noreturn]] void bad_config(const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, "federation config: " + what);
}

protocol::MaskPrg wire_prg(privacy::PrgKind kind) {
  return kind == privacy::PrgKind::kAes256Ctr ? protocol::MaskPrg::kAes256Ctr : protocol::MaskPrg::kChaCha20;
}

agg::DpKind dp_kind(protocol::DpMode m) {
  switch (m) {
    case protocol::DpMode::kCentral: return agg::DpKind::kCentral;
    case protocol::DpMode::kDistributed: return agg::DpKind::kDistributed;
    default: return agg::DpKind::kNone;
  }
}

// Wire order of the round's stages; a message for an earlier stage is late.
int stage_order(RoundStage s) {
  switch (s) {
    case RoundStage::kAdvertiseKeys: case RoundStage::kPlainUpdate: return 1;
    case RoundStage::kShareKeys: return 2;
    case RoundStage::kMaskedInput: return 3;
    case RoundStage::kUnmask: return 4;
    default: return 0;
  }
}

RoundStage stage_of_body(const protocol::Body& body) {
  if (std::holds_alternative<protocol::AdvertiseKeys>(body)) return RoundStage::kAdvertiseKeys;
  if (std::holds_alternative<protocol::ShareKeys>(body)) return RoundStage::kShareKeys;
  if (std::holds_alternative<protocol::MaskedInput>(body)) return RoundStage::kMaskedInput;
  if (std::holds_alternative<protocol::UnmaskResponse>(body)) return RoundStage::kUnmask;
  if (std::holds_alternative<protocol::PlainUpdate>(body)) return RoundStage::kPlainUpdate;
  return RoundStage::kIdle;
}

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

protocol::Payload<std::uint8_t> model_bytes(const std::vector<float>& values) {
  static_assert(sizeof(float) == 4);
  std::vector<std::uint8_t> bytes(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian host
  return protocol::Payload<std::uint8_t>::own(std::move(bytes));
}

// Node-reported metric names: short enough for the Store's 128-byte limit
// with the "node/" prefix, and few enough that no node can grow our memory.
constexpr std::size_t kMaxMetricName = 100;
constexpr std::size_t kMaxMetricNames = 64;

privacy::Key32 label_key(const privacy::Key32& secret, const std::string& label) {
  return privacy::derive_key(secret, label);
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
  if (c.quant_bits != 0 && (c.quant_bits < 2 || c.quant_bits > 32)) bad_config("quant_bits must be 0 or 2..32");
  if (c.secure && !privacy::prg_supported(c.secagg_prg))
    bad_config(std::string("secagg prg ") + privacy::prg_name(c.secagg_prg) +
               " needs AES instructions this machine lacks (the coordinator removes masks); use chacha20");
  if ((c.secagg_degree == 0) != (c.secagg_threshold == 0))
    bad_config("secagg_degree and secagg_threshold are set together (or both 0 to choose them)");
  if (c.secagg_degree % 2)
    bad_config("secagg_degree must be even (SecAgg+ graphs; a round with fewer nodes uses the complete graph n-1)");
  if (c.secagg_degree && !(2 * c.secagg_threshold > c.secagg_degree + 1 && c.secagg_threshold <= c.secagg_degree + 1))
    bad_config("secagg_threshold must satisfy (degree+1)/2 < threshold <= degree+1");
  if (!(c.expected_dropout >= 0 && c.expected_dropout < 1)) bad_config("expected_dropout must be in [0, 1)");
  if (!(c.corrupt_fraction >= 0 && c.corrupt_fraction < 1)) bad_config("corrupt_fraction must be in [0, 1)");
  if (c.dp.mode != protocol::DpMode::kNone) {
    if (!(c.dp.clip_norm > 0) || !std::isfinite(c.dp.clip_norm)) bad_config("dp.clip_norm must be > 0");
    if (!(c.dp.noise_multiplier > 0) || !std::isfinite(c.dp.noise_multiplier))
      bad_config("dp.noise_multiplier must be > 0 when DP is on");
    if (!(c.dp.delta > 0 && c.dp.delta < 1)) bad_config("dp.delta must be in (0, 1)");
    if (c.dp.mode == protocol::DpMode::kDistributed && !c.secure)
      bad_config("distributed DP needs secure = true (nodes noise inside the secure sum); use central DP");
  }
  // make_strategy explains unknown names and robust strategies under secure aggregation.
  try {
    (void)agg::make_strategy(c.strategy, c.strategy_params, c.secure);
  } catch (const Error& e) {
    bad_config(std::string("strategy: ") + e.what());
  }
}

struct NodeInfo {
  protocol::Register reg;
  std::int64_t last_seen = 0;
  bool alive = true;
  std::optional<std::uint64_t> sent_version;  // GlobalModel version sent since the last Register
};

struct PlainEntry {
  std::vector<float> update;
  std::uint64_t num_examples = 0;
  double train_loss = 0;
};

struct Round {
  std::uint64_t id = 0;
  std::uint32_t attempt = 1;
  protocol::RoundPlan plan;
  agg::UpdateEncoding enc;
  RoundStage stage = RoundStage::kIdle;
  std::int64_t deadline = 0;
  std::unique_ptr<agg::SecAggServer> server;
  std::set<NodeId> expected, received;
  std::map<NodeId, PlainEntry> plain;
  RoundStats stats;
  std::uint32_t registered_at_start = 0;
  std::map<NodeId, std::uint32_t> clients;  // node id -> client id (index in selected + 1)
  std::uint32_t client_of(NodeId node) const {
    auto it = clients.find(node);
    return it == clients.end() ? 0 : it->second;
  }
  NodeId node_of(std::uint32_t client) const { return plan.selected.at(client - 1); }
};

struct CoordinatorCore::State {
  FederationConfig cfg;
  std::unique_ptr<agg::Strategy> strategy;
  privacy::Key32 secret{};
  privacy::ChaChaRng noise_rng;
  privacy::RdpAccountant accountant;
  double epsilon = 0;
  std::uint64_t round_id = 1;
  std::uint32_t attempt = 1;
  bool started_once = false;  // a round has started in this process
  // Live nodes needed before the next round may start.
  std::uint32_t nodes_needed() const {
    return started_once ? cfg.min_nodes : std::max(cfg.min_nodes, cfg.startup_nodes);
  }
  std::uint64_t version = 0;
  std::vector<float> global;
  std::vector<protocol::TensorLayout> layout;
  protocol::Payload<std::uint8_t> global_bytes;
  std::map<NodeId, NodeInfo> nodes;
  std::optional<Round> round;
  std::int64_t next_start = std::numeric_limits<std::int64_t>::min();
  bool finished = false;
  bool finished_announced = false;
  std::map<std::string, std::pair<double, std::uint64_t>> node_metrics;  // name -> (sum, count)

  State(FederationConfig c, const privacy::Key32& key)
      : cfg(std::move(c)), secret(key), noise_rng(label_key(key, "central-dp-noise")) {}

  // ---------- helpers ----------
  Outgoing to(NodeId node, std::uint64_t round_id_of_message, protocol::Body body) const {
    Envelope e;
    e.round = round_id_of_message;
    if (round && round->id == round_id_of_message) e.attempt = round->attempt;
    e.sender = protocol::kCoordinatorId;
    e.body = std::move(body);
    return {node, std::move(e)};
  }
  void refuse(CoordinatorActions& a, const Envelope& env, ErrorCode code, const std::string& why) {
    spdlog::debug("coordinator: refusing {} from node {} (round {}): {}", protocol::body_name(env.body), env.sender,
                  env.round, why);
    if (round && env.round == round->id) ++round->stats.errors_sent;
    protocol::ErrorReply r{code, why, static_cast<std::uint16_t>(env.body.index())};
    Outgoing out = to(env.sender, env.round, std::move(r));
    out.envelope.attempt = env.attempt;  // the node matches a refusal to the attempt it refers to
    a.send.push_back(std::move(out));
  }
  void send_model(CoordinatorActions& a, NodeId node) {
    protocol::GlobalModel m{version, protocol::ModelFormat::kFlatF32, global_bytes, layout};
    a.send.push_back(to(node, 0, std::move(m)));
    nodes.at(node).sent_version = version;
  }
  bool is_live(const NodeInfo& n, std::int64_t now) const {
    return n.alive && now - n.last_seen <= static_cast<std::int64_t>(cfg.liveness_timeout_ms);
  }
  std::vector<NodeId> live(std::int64_t now) const {
    std::vector<NodeId> out;
    for (const auto& [id, n] : nodes)
      if (is_live(n, now)) out.push_back(id);
    return out;
  }
  void touch(NodeId id, std::int64_t now) {
    auto& n = nodes.at(id);
    n.last_seen = std::max(n.last_seen, now);
    n.alive = true;
  }

  // ---------- messages ----------
  void on_register(CoordinatorActions& a, std::int64_t now, const Envelope& env,
                   const std::optional<protocol::Key32>& key) {
    const auto& reg = std::get<protocol::Register>(env.body);
    if (reg.node_id != env.sender || reg.node_id == protocol::kCoordinatorId)
      return refuse(a, env, ErrorCode::kNotAllowed, "register.nodeId must equal the sender and be >= 1");
    if (key && *key != reg.public_key)
      return refuse(a, env, ErrorCode::kNotAllowed,
                    "register.publicKey differs from the CURVE key this connection authenticated; "
                    "register with the key the node connects with");
    auto it = nodes.find(reg.node_id);
    const bool known = it != nodes.end();
    // With CURVE, a node id stays bound to the key it first registered with, so
    // one allow-listed node cannot take over another's id.
    if (known && key && it->second.reg.public_key != reg.public_key)
      return refuse(a, env, ErrorCode::kNotAllowed,
                    "node id " + std::to_string(reg.node_id) +
                        " is registered with another public key; use that key or a new node id");
    NodeInfo& n = nodes[reg.node_id];
    n.reg = reg;
    n.sent_version.reset();
    touch(reg.node_id, now);
    a.events.push_back(NodeRegistered{reg, known});
    a.send.push_back(to(reg.node_id, 0, protocol::RegisterAck{reg.node_id, cfg.heartbeat_interval_ms, version}));
    send_model(a, reg.node_id);
  }

  void on_heartbeat(CoordinatorActions& a, std::int64_t now, const Envelope& env) {
    touch(env.sender, now);
    const auto& hb = std::get<protocol::Heartbeat>(env.body);
    // A node that lost the current model (restart without Register) gets it again.
    auto& n = nodes.at(env.sender);
    if (hb.global_version != version && n.sent_version != version) send_model(a, env.sender);
  }

  void on_metrics(const Envelope& env) {
    for (const auto& m : std::get<protocol::Metrics>(env.body).entries) {
      if (!std::isfinite(m.value) || m.name.empty() || m.name.size() > kMaxMetricName) continue;
      if (!node_metrics.count(m.name) && node_metrics.size() >= kMaxMetricNames) continue;  // bounded memory
      auto& [sum, count] = node_metrics[m.name];
      sum += m.value;
      ++count;
    }
  }

  void on_round_message(CoordinatorActions& a, std::int64_t now, const Envelope& env) {
    const RoundStage got = stage_of_body(env.body);
    if (!round)
      return refuse(a, env, env.round == round_id ? ErrorCode::kWrongStage : ErrorCode::kWrongRound,
                    "no round is running (round " + std::to_string(round_id) + " is next)");
    Round& r = *round;
    if (env.round != r.id)
      return refuse(a, env, ErrorCode::kWrongRound,
                    "round " + std::to_string(env.round) + " is not running; round " + std::to_string(r.id) + " is");
    if (env.attempt != r.attempt)
      return refuse(a, env, ErrorCode::kWrongRound,
                    "attempt " + std::to_string(env.attempt) + " of round " + std::to_string(r.id) +
                        " is over; attempt " + std::to_string(r.attempt) + " runs");
    const std::uint32_t client = r.client_of(env.sender);
    if (client == 0) return refuse(a, env, ErrorCode::kNotAllowed, "this node is not selected for the round");
    if ((got == RoundStage::kPlainUpdate) != (r.stage == RoundStage::kPlainUpdate))
      return refuse(a, env, ErrorCode::kWrongStage,
                    r.plan.secure ? "the round is secure: send secure-aggregation messages, not plainUpdate"
                                  : "the round is not secure: send plainUpdate");
    if (stage_order(got) < stage_order(r.stage))
      return refuse(a, env, ErrorCode::kDeadlineMissed,
                    std::string("stage ") + stage_name(got) + " has closed; the round is at " + stage_name(r.stage));
    if (stage_order(got) > stage_order(r.stage))
      return refuse(a, env, ErrorCode::kWrongStage,
                    std::string("the round is at ") + stage_name(r.stage) + ", not " + stage_name(got));
    if (!r.expected.count(env.sender))
      return refuse(a, env, ErrorCode::kDeadlineMissed, "this node missed an earlier stage and is a dropout");
    if (r.received.count(env.sender))
      return refuse(a, env, ErrorCode::kDuplicate, std::string("a second ") + protocol::body_name(env.body));
    try {
      accept(r, env, client);
    } catch (const Error& e) {
      return refuse(a, env, ErrorCode::kMalformed, e.what());
    }
    touch(env.sender, now);
    r.received.insert(env.sender);
    if (r.received.size() == r.expected.size()) advance(a, now);
  }

  static void check_sender(std::uint32_t claimed, std::uint32_t client) {
    if (claimed != client)
      throw Error(ErrorKind::kProtocol, "sender client id " + std::to_string(claimed) +
                                            " is not this node's client id " + std::to_string(client));
  }

  void accept(Round& r, const Envelope& env, std::uint32_t client) {
    if (const auto* m = std::get_if<protocol::AdvertiseKeys>(&env.body)) {
      r.server->receive(agg::AdvertiseKeys{r.id, client, m->c_public, m->s_public});
    } else if (const auto* m = std::get_if<protocol::ShareKeys>(&env.body)) {
      check_sender(m->sender, client);
      agg::ShareKeys sk{r.id, client, {}};
      for (const auto& s : m->shares) sk.shares.push_back({s.from, s.to, s.box});
      r.server->receive(sk);
    } else if (const auto* m = std::get_if<protocol::MaskedInput>(&env.body)) {
      check_sender(m->sender, client);
      r.server->receive(agg::MaskedInput{r.id, client, m->masked.to_vector()});
    } else if (const auto* m = std::get_if<protocol::UnmaskResponse>(&env.body)) {
      check_sender(m->sender, client);
      agg::UnmaskResponse ur{r.id, client, {}, {}};
      for (const auto& s : m->shares) {
        agg::RevealedShare rs{s.owner, privacy::Share{s.x, s.y}};
        (s.kind == protocol::SecretKind::kSelfMask ? ur.self_mask_shares : ur.key_shares).push_back(std::move(rs));
      }
      r.server->receive(ur);
    } else if (const auto* m = std::get_if<protocol::PlainUpdate>(&env.body)) {
      if (m->num_examples == 0) throw Error(ErrorKind::kProtocol, "plainUpdate.numExamples is 0");
      r.plain[env.sender] = PlainEntry{agg::clip_update(r.enc, m->update.span()), m->num_examples, m->train_loss};
    }
  }

  // ---------- stages ----------
  void open_stage(Round& r, RoundStage stage, std::set<NodeId> expected, std::int64_t deadline) {
    r.stage = stage;
    r.expected = std::move(expected);
    r.received.clear();
    r.deadline = deadline;
  }

  void close_stage(Round& r) {
    r.stats.stages.push_back({r.stage, static_cast<std::uint32_t>(r.expected.size()),
                              static_cast<std::uint32_t>(r.received.size())});
  }

  // Closes the current stage (deadline or everyone answered) and opens the next.
  void advance(CoordinatorActions& a, std::int64_t now) {
    Round& r = *round;
    close_stage(r);
    const auto& dl = r.plan.deadlines;
    try {
      switch (r.stage) {
        case RoundStage::kAdvertiseKeys: {
          std::set<NodeId> next;
          for (auto& kb : r.server->finish_advertise()) {
            protocol::KeysBroadcast m{kb.recipient, {}};
            for (const auto& p : kb.neighbours) m.neighbours.push_back({p.id, p.c_public, p.s_public, {}});
            const NodeId node = r.node_of(kb.recipient);
            next.insert(node);
            a.send.push_back(to(node, r.id, std::move(m)));
          }
          open_stage(r, RoundStage::kShareKeys, std::move(next), now + dl.share_keys_ms);
          break;
        }
        case RoundStage::kShareKeys: {
          std::set<NodeId> next;
          for (auto& sd : r.server->finish_share_keys()) {
            protocol::SharesDelivery m{sd.recipient, {}};
            for (auto& s : sd.shares) m.shares.push_back({s.from, s.to, std::move(s.box)});
            const NodeId node = r.node_of(sd.recipient);
            next.insert(node);
            a.send.push_back(to(node, r.id, std::move(m)));
          }
          open_stage(r, RoundStage::kMaskedInput, std::move(next), now + dl.masked_input_ms);
          break;
        }
        case RoundStage::kMaskedInput: {
          const agg::UnmaskRequest req = r.server->finish_masked_input();
          protocol::UnmaskRequest m{req.survivors, {}};
          for (std::uint32_t c = 1; c <= r.plan.selected.size(); ++c)
            if (!std::binary_search(req.survivors.begin(), req.survivors.end(), c)) m.dropped.push_back(c);
          std::set<NodeId> next;
          for (auto c : req.survivors) {
            next.insert(r.node_of(c));
            a.send.push_back(to(r.node_of(c), r.id, m));
          }
          open_stage(r, RoundStage::kUnmask, std::move(next), now + dl.unmask_ms);
          break;
        }
        case RoundStage::kUnmask: complete_secure(a, now, r.server->finish_unmask()); break;
        case RoundStage::kPlainUpdate: complete_plain(a, now); break;
        case RoundStage::kIdle: break;
      }
    } catch (const Error& e) {
      fail(a, now, e.what());
    }
  }

  // ---------- round start ----------
  std::vector<NodeId> select(std::int64_t now) const {
    std::vector<NodeId> pool;
    for (NodeId id : live(now))
      if (nodes.at(id).reg.capabilities.num_examples > 0) pool.push_back(id);
    if (pool.size() < nodes_needed()) return {};
    auto count = static_cast<std::size_t>(std::ceil(cfg.fraction * static_cast<double>(pool.size())));
    count = std::max<std::size_t>(count, cfg.min_nodes);
    if (cfg.max_nodes) count = std::min<std::size_t>(count, cfg.max_nodes);
    count = std::min(count, pool.size());
    Rng rng(cfg.seed, "select/" + std::to_string(round_id) + "/" + std::to_string(attempt));
    for (std::size_t i = 0; i < count; ++i) std::swap(pool[i], pool[i + rng.below(pool.size() - i)]);
    pool.resize(count);
    std::sort(pool.begin(), pool.end());
    return pool;
  }

  void start_round(CoordinatorActions& a, std::int64_t now) {
    std::vector<NodeId> selected = select(now);
    if (selected.empty()) return;
    started_once = true;
    Round r;
    r.id = round_id;
    r.attempt = attempt;
    r.registered_at_start = static_cast<std::uint32_t>(nodes.size());
    protocol::RoundPlan& p = r.plan;
    p.global_version = version;
    p.hyper = cfg.hyper;
    if (p.hyper.fedprox_mu == 0) p.hyper.fedprox_mu = static_cast<float>(strategy->proximal_mu());
    p.deadlines = cfg.deadlines;
    p.secure = cfg.secure;
    p.dp = {cfg.dp.mode, cfg.dp.mode == protocol::DpMode::kNone ? 0.0 : cfg.dp.clip_norm,
            cfg.dp.mode == protocol::DpMode::kNone ? 0.0 : cfg.dp.noise_multiplier};
    p.selected = selected;
    for (std::uint32_t i = 0; i < selected.size(); ++i) r.clients[selected[i]] = i + 1;
    p.update_length = global.size();
    std::uint64_t scale = 1;
    for (NodeId id : selected) scale = std::max(scale, nodes.at(id).reg.capabilities.num_examples);
    p.example_scale = scale;
    p.loss_cap = cfg.loss_cap;
    agg::UpdateEncoding& enc = r.enc;
    enc = {global.size(), cfg.clip_range, 0, scale, cfg.loss_cap, dp_kind(cfg.dp.mode), p.dp.clip_norm,
           p.dp.noise_multiplier, static_cast<std::uint32_t>(selected.size())};
    try {
      if (cfg.secure) plan_secure(r);
      agg::validate(enc, cfg.secure);
    } catch (const Error& e) {
      spdlog::error("coordinator: cannot plan round {}: {}", round_id, e.what());
      a.events.push_back(RoundFailed{round_id, attempt, e.what(), {}, false});
      ++attempt;
      next_start = now + cfg.retry_delay_ms;
      return;
    }
    const auto& dl = cfg.deadlines;
    std::set<NodeId> expected(selected.begin(), selected.end());
    if (cfg.secure)
      open_stage(r, RoundStage::kAdvertiseKeys, std::move(expected), now + dl.train_ms + dl.advertise_keys_ms);
    else
      open_stage(r, RoundStage::kPlainUpdate, std::move(expected), now + dl.train_ms + dl.masked_input_ms);
    for (NodeId id : selected) {
      if (nodes.at(id).sent_version != version) send_model(a, id);
      Outgoing plan = to(id, r.id, p);
      plan.envelope.attempt = r.attempt;  // `round` is not set yet: stamp it here
      a.send.push_back(std::move(plan));
    }
    spdlog::info("coordinator: round {} attempt {} started with {} nodes", r.id, r.attempt, selected.size());
    a.events.push_back(RoundStarted{r.id, r.attempt, p});
    round = std::move(r);
  }

  void plan_secure(Round& r) {
    const auto n = static_cast<std::uint32_t>(r.plan.selected.size());
    const std::uint64_t d = r.enc.vector_length();
    const privacy::Key32 graph_seed =
        label_key(secret, "graph-seed/" + std::to_string(r.id) + "/" + std::to_string(r.attempt));
    agg::SecAggParams sp;
    if (cfg.secagg_degree) {
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
    std::uint64_t noise_bound = 0;
    if (cfg.quant_bits) {
      r.enc.quant_bits = cfg.quant_bits;
      noise_bound = agg::skellam_noise_bound(r.enc);
      privacy::Quantizer(cfg.clip_range, cfg.quant_bits).check_capacity(n, noise_bound);
    } else {
      noise_bound = agg::choose_quant_bits(r.enc, n);
    }
    agg::validate(sp);
    r.server = std::make_unique<agg::SecAggServer>(r.id, sp, cfg.secagg_threads);
    r.plan.secagg = {sp.num_clients, sp.threshold, sp.degree,      sp.vector_length, sp.graph_seed,
                     r.enc.quant_bits, cfg.clip_range, noise_bound, wire_prg(sp.prg)};
  }

  // ---------- round end ----------
  std::map<std::string, double> base_metrics(const Round& r, std::size_t survivors) {
    std::map<std::string, double> m;
    m["selected"] = static_cast<double>(r.plan.selected.size());
    m["participants"] = static_cast<double>(survivors);
    m["dropped"] = static_cast<double>(r.plan.selected.size() - survivors);
    for (const auto& [name, sc] : node_metrics) m["node/" + name] = sc.first / static_cast<double>(sc.second);
    node_metrics.clear();
    return m;
  }

  double public_weight(const Round& r, const std::vector<NodeId>& survivors) const {
    double w = 0;
    for (NodeId id : survivors) w += agg::node_weight(nodes.at(id).reg.capabilities.num_examples, r.enc.example_scale);
    return w;
  }

  void complete_secure(CoordinatorActions& a, std::int64_t now, const agg::SecAggResult& res) {
    Round& r = *round;
    agg::DecodedSum ds = agg::decode_secure_sum(r.enc, res.sum);
    std::vector<NodeId> survivors;
    for (auto c : res.included) survivors.push_back(r.node_of(c));
    double total = ds.total_weight;
    if (cfg.dp.mode != protocol::DpMode::kNone) {
      // Fixed denominator (the survivors' public weights): the noisy weight
      // coordinate could be near zero or negative at small n.
      if (cfg.dp.mode == protocol::DpMode::kCentral)
        privacy::add_gaussian_noise(ds.weighted_sum, cfg.dp.noise_multiplier * cfg.dp.clip_norm, noise_rng);
      total = public_weight(r, survivors);
    }
    auto metrics = base_metrics(r, survivors.size());
    metrics["total_examples"] = total * static_cast<double>(r.enc.example_scale);
    if (std::isfinite(ds.mean_train_loss)) metrics["train_loss"] = ds.mean_train_loss;
    metrics["weight_sum"] = ds.total_weight;
    finish_round(a, now, ds.weighted_sum, total, std::move(survivors), std::move(metrics));
  }

  void complete_plain(CoordinatorActions& a, std::int64_t now) {
    Round& r = *round;
    const std::size_t need = std::max<std::uint32_t>(cfg.min_survivors, 1);
    if (r.plain.size() < need)
      throw Error(ErrorKind::kPrivacy, std::to_string(r.plain.size()) + " of " +
                                           std::to_string(r.plan.selected.size()) + " nodes sent updates; " +
                                           std::to_string(need) + " needed");
    std::vector<NodeId> survivors;
    double examples = 0, loss = 0;
    for (const auto& [id, e] : r.plain) {
      survivors.push_back(id);
      examples += static_cast<double>(e.num_examples);
      loss += static_cast<double>(e.num_examples) * e.train_loss;
    }
    auto metrics = base_metrics(r, survivors.size());
    metrics["total_examples"] = examples;
    metrics["train_loss"] = loss / examples;
    if (cfg.dp.mode == protocol::DpMode::kNone) {
      std::vector<agg::ClientUpdate> ups;
      for (const auto& [id, e] : r.plain) ups.push_back({e.update, static_cast<double>(e.num_examples)});
      finish_with(a, now, strategy->aggregate(global, ups), std::move(survivors), std::move(metrics));
      return;
    }
    // Central DP: the same weighted sum as the secure path, then noise.
    std::vector<float> sum(global.size(), 0.0F);
    for (const auto& [id, e] : r.plain) {
      const double w = agg::node_weight(e.num_examples, r.enc.example_scale);
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += static_cast<float>(w * e.update[i]);
    }
    privacy::add_gaussian_noise(sum, cfg.dp.noise_multiplier * cfg.dp.clip_norm, noise_rng);
    const double total = public_weight(r, survivors);
    finish_round(a, now, sum, total, std::move(survivors), std::move(metrics));
  }

  void finish_round(CoordinatorActions& a, std::int64_t now, const std::vector<float>& weighted_sum, double total,
                    std::vector<NodeId> survivors, std::map<std::string, double> metrics) {
    if (!(total > 0) || !std::isfinite(total))
      throw Error(ErrorKind::kPrivacy, "the survivors' total weight is " + std::to_string(total));
    finish_with(a, now, strategy->aggregate_sum(global, weighted_sum, total), std::move(survivors),
                std::move(metrics));
  }

  void finish_with(CoordinatorActions& a, std::int64_t now, std::vector<float> next, std::vector<NodeId> survivors,
                   std::map<std::string, double> metrics) {
    Round& r = *round;
    std::optional<DpRecord> dp;
    if (cfg.dp.mode != protocol::DpMode::kNone) {
      const double q = std::min(1.0, static_cast<double>(r.plan.selected.size()) /
                                         std::max<double>(r.registered_at_start, 1.0));
      accountant.step(q, cfg.dp.noise_multiplier, 1);
      epsilon = accountant.spent(cfg.dp.delta).epsilon;
      dp = DpRecord{r.id, cfg.dp.noise_multiplier, q, 1, epsilon, cfg.dp.delta};
      metrics["epsilon"] = epsilon;
    }
    global = std::move(next);
    ++version;
    global_bytes = model_bytes(global);
    spdlog::info("coordinator: round {} completed with {} of {} nodes -> version {}", r.id, survivors.size(),
                 r.plan.selected.size(), version);
    a.events.push_back(RoundCompleted{r.id, r.attempt, version, global, survivors, std::move(metrics), dp,
                                      std::move(r.stats), strategy->state()});
    round.reset();
    for (NodeId id : live(now)) send_model(a, id);
    ++round_id;
    attempt = 1;
    next_start = now + cfg.round_gap_ms;
    if (round_id > cfg.rounds) finish(a);
  }

  void fail(CoordinatorActions& a, std::int64_t now, const std::string& why) {
    Round& r = *round;
    if (r.stats.stages.empty() || r.stats.stages.back().stage != r.stage) close_stage(r);
    spdlog::warn("coordinator: round {} attempt {} failed: {}", r.id, r.attempt, why);
    a.events.push_back(RoundFailed{r.id, r.attempt, why, std::move(r.stats), true});
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
    for (auto& [id, n] : nodes)
      if (n.alive && now - n.last_seen > static_cast<std::int64_t>(cfg.liveness_timeout_ms)) {
        n.alive = false;
        spdlog::info("coordinator: node {} missed its liveness timeout", id);
        a.events.push_back(NodeLost{id});
      }
    // A stage that waits only on nodes gone silent closes now, not at its deadline.
    if (round && (now >= round->deadline || waits_only_on_lost(*round))) advance(a, now);
    if (!round && !finished && now >= next_start) start_round(a, now);
  }

  bool waits_only_on_lost(const Round& r) const {
    if (r.received.size() >= r.expected.size()) return false;
    for (NodeId id : r.expected) {
      if (!r.received.count(id) && nodes.at(id).alive) return false;
    }
    return true;
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
  s_->global_bytes = model_bytes(s_->global);
  for (const auto& rec : resume.dp_history) {
    if (!(rec.noise_multiplier > 0) || rec.sampling_rate < 0 || rec.sampling_rate > 1)
      bad_config("resume.dp_history round " + std::to_string(rec.round) + " has an invalid sigma or sampling rate");
    s_->accountant.step(rec.sampling_rate, rec.noise_multiplier, rec.steps);
  }
  if (!resume.dp_history.empty()) {
    const double delta = s_->cfg.dp.mode != protocol::DpMode::kNone ? s_->cfg.dp.delta : resume.dp_history.back().delta;
    s_->epsilon = s_->accountant.spent(delta).epsilon;
  }
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
  if (std::holds_alternative<protocol::ErrorReply>(env.body)) {
    const auto& e = std::get<protocol::ErrorReply>(env.body);
    spdlog::warn("coordinator: node {} reports error {}: {}", env.sender, static_cast<int>(e.code), e.message);
    return a;  // never answer an error with an error
  }
  auto node = s.nodes.find(env.sender);
  if (node == s.nodes.end()) {
    s.refuse(a, env, ErrorCode::kUnknownSender, "node " + std::to_string(env.sender) + " has not registered");
    return a;
  }
  if (authenticated_key && *authenticated_key != node->second.reg.public_key) {
    s.refuse(a, env, ErrorCode::kNotAllowed, "this connection's CURVE key is not the key node " +
                                                 std::to_string(env.sender) + " registered with");
    return a;
  }
  if (std::holds_alternative<protocol::Heartbeat>(env.body)) {
    s.on_heartbeat(a, now_ms, env);
  } else if (std::holds_alternative<protocol::Metrics>(env.body)) {
    s.touch(env.sender, now_ms);
    s.on_metrics(env);
  } else if (stage_of_body(env.body) != RoundStage::kIdle) {
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
  std::optional<std::int64_t> t;
  auto consider = [&](std::int64_t v) { t = t ? std::min(*t, v) : v; };
  for (const auto& [id, n] : s.nodes)
    if (n.alive) consider(n.last_seen + s.cfg.liveness_timeout_ms + 1);
  if (s.round) {
    consider(s.round->deadline);
  } else if (!s.finished) {
    std::size_t ready = 0;
    for (const auto& [id, n] : s.nodes) ready += n.alive && n.reg.capabilities.num_examples > 0;
    if (ready >= s.nodes_needed()) consider(s.next_start == std::numeric_limits<std::int64_t>::min() ? 0 : s.next_start);
  }
  return t;
}

bool CoordinatorCore::finished() const { return s_->finished; }
std::uint64_t CoordinatorCore::current_round() const { return s_->round ? s_->round->id : s_->round_id; }
std::uint32_t CoordinatorCore::current_attempt() const { return s_->round ? s_->round->attempt : s_->attempt; }
RoundStage CoordinatorCore::stage() const { return s_->round ? s_->round->stage : RoundStage::kIdle; }
const protocol::RoundPlan* CoordinatorCore::current_plan() const { return s_->round ? &s_->round->plan : nullptr; }
const RoundStats* CoordinatorCore::current_stats() const { return s_->round ? &s_->round->stats : nullptr; }
std::uint64_t CoordinatorCore::global_version() const { return s_->version; }
const std::vector<float>& CoordinatorCore::global() const { return s_->global; }
const std::vector<protocol::TensorLayout>& CoordinatorCore::layout() const { return s_->layout; }
std::vector<protocol::NodeId> CoordinatorCore::live_nodes(std::int64_t now_ms) const { return s_->live(now_ms); }
std::vector<protocol::NodeId> CoordinatorCore::registered_nodes() const {
  std::vector<NodeId> out;
  for (const auto& [id, n] : s_->nodes) out.push_back(id);
  return out;
}
double CoordinatorCore::epsilon() const { return s_->epsilon; }
const FederationConfig& CoordinatorCore::config() const { return s_->cfg; }

}  // namespace fedge::coordinator
