#include "fedge/federation/round_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/update_codec.h"
#include "fedge/common/error.h"
#include "fedge/federation/wire.h"

namespace fedge::federation {

namespace agg = fedge::aggregation;
using protocol::Envelope;
using protocol::ErrorCode;

const char* client_state_name(ClientState state) {
  switch (state) {
    case ClientState::kUnregistered: return "unregistered";
    case ClientState::kRegistering: return "registering";
    case ClientState::kIdle: return "idle";
    case ClientState::kTraining: return "training";
    case ClientState::kAdvertised: return "advertised";
    case ClientState::kSharedKeys: return "shared_keys";
    case ClientState::kSentMasked: return "sent_masked";
    case ClientState::kSignedSurvivors: return "signed_survivors";
  }
  return "?";
}

namespace {

// Messages a node sends within a round: a refusal of one of them ends this
// node's part in the round.
bool is_round_body(std::size_t index) {
  using protocol::body_index;
  return index == body_index<protocol::AdvertiseKeysBody>() || index == body_index<protocol::ShareKeysBody>() ||
         index == body_index<protocol::MaskedInputBody>() || index == body_index<protocol::UnmaskResponseBody>() ||
         index == body_index<protocol::SurvivorSignatureBody>() ||
         index == body_index<protocol::PlainUpdate>();
}

}  // namespace

struct RoundClient::State {
  NodeIdentity id;
  NodeClientConfig cfg;
  // The quantiser's and DP noise's generator, made at the first secure
  // update (its 0.5 kB buffer is most of an idle client's memory, and a
  // cross-device simulation holds thousands of idle clients); the same
  // stream as one made up front.
  std::unique_ptr<privacy::ChaChaRng> rng_;
  ClientState state = ClientState::kUnregistered;
  std::int64_t last_register = 0, last_heartbeat = 0;
  std::uint32_t heartbeat_ms;
  std::optional<std::uint64_t> version;
  // current round
  std::uint64_t round = 0;
  std::uint32_t attempt = 0;  // of `round`, from its plan; stamped on and checked against round messages
  protocol::RoundPlan plan;
  std::uint32_t client_id = 0;
  UpdateEncoding enc;
  std::unique_ptr<agg::SecAggClient> secagg;
  agg::SecAggMode mode = agg::SecAggMode::kSemiHonest;  // of the current secure round
  std::vector<std::uint32_t> ring;  // quantised update, kept until MaskedInput
  std::uint64_t next_ticket = 1, ticket = 0;
  std::optional<privacy::SigningKeyPair> signing;  // from cfg.signing_seed

  State(NodeIdentity i, NodeClientConfig c)
      : id(std::move(i)), cfg(std::move(c)),
        heartbeat_ms(cfg.heartbeat_interval_ms) {
    if (!cfg.signing_seed) return;
    signing = privacy::signing_keypair_from_seed(*cfg.signing_seed);
    auto own = cfg.roster.find(id.node_id);
    if (own == cfg.roster.end() || own->second != signing->public_key)
      throw Error(ErrorKind::kInvalidInput, "the roster does not list node " + std::to_string(id.node_id) +
                                                " with this node's signing key; give the node its own key file and "
                                                "the operator's current roster");
  }

  privacy::ChaChaRng& rng() {
    if (!rng_)
      rng_ = std::make_unique<privacy::ChaChaRng>(cfg.noise_seed ? privacy::ChaChaRng(*cfg.noise_seed)
                                                                 : privacy::ChaChaRng());
    return *rng_;
  }

  Envelope envelope(protocol::Body body, std::uint64_t r = 0) const {
    Envelope e;
    e.round = r;
    if (r != 0 && r == round) e.attempt = attempt;
    e.sender = id.node_id;
    e.body = std::move(body);
    return e;
  }

  void send_register(NodeActions& a, std::int64_t now) {
    a.send.push_back(envelope(protocol::Register{id.node_id, id.name, id.public_key, id.capabilities}));
    last_register = now;
    if (state == ClientState::kUnregistered) state = ClientState::kRegistering;
  }

  bool in_round() const { return state >= ClientState::kTraining; }

  // Leaves the current round (the coordinator counts this node as a dropout).
  void drop_out(NodeActions& a, const std::string& why) {
    if (round) {
      // A note, not a log line: the core does no I/O; its driver logs notes
      // (the node runtime at info, the simulator at debug: a thousand
      // virtual nodes' dropouts would drown its progress lines).
      a.notes.push_back("node " + std::to_string(id.node_id) + ": leaving round " + std::to_string(round) + ": " + why);
    }
    if (state == ClientState::kTraining) a.cancel_training = true;
    reset_round();
  }
  void reset_round() {
    if (state >= ClientState::kTraining) state = ClientState::kIdle;
    round = 0;
    attempt = 0;
    client_id = 0;
    secagg.reset();
    ring.clear();
    ring.shrink_to_fit();
    ticket = 0;
    // Nothing of the round stays with an idle node: a plan lists every
    // selected node (4 bytes each), which a cross-device simulation's
    // thousands of idle virtual nodes would otherwise keep.
    plan = {};
  }

  void on_model(NodeActions& a, const protocol::GlobalModel& m) {
    if (m.format != protocol::ModelFormat::kFlatF32) {
      a.notes.push_back("global model version " + std::to_string(m.version) +
                        " is a safetensors file; this client installs flat f32 models only");
      return;
    }
    if (m.data.size() % sizeof(float) != 0) {
      a.notes.push_back("global model data is not a whole number of floats");
      return;
    }
    std::uint64_t numel = 0;
    for (const auto& t : m.layout) {
      std::uint64_t n = 1;
      for (auto d : t.shape) n *= d;
      numel += n;
    }
    if (numel * sizeof(float) != m.data.size()) {
      a.notes.push_back("global model layout describes " + std::to_string(numel) + " floats but data holds " +
                        std::to_string(m.data.size() / sizeof(float)));
      return;
    }
    InstallGlobal g{m.version, std::vector<float>(m.data.size() / sizeof(float)), m.layout};
    if (!g.params.empty()) std::memcpy(g.params.data(), m.data.data(), m.data.size());
    version = m.version;
    a.install = std::move(g);
    // A newer global means our round ended without us (we were a dropout).
    if (in_round() && m.version > plan.global_version) drop_out(a, "the round ended (global version " + std::to_string(m.version) + " arrived)");
  }

  void on_plan(NodeActions& a, std::int64_t now, const Envelope& env, const protocol::RoundPlan& p) {
    auto it = std::find(p.selected.begin(), p.selected.end(), id.node_id);
    if (it == p.selected.end()) {
      a.notes.push_back("round plan " + std::to_string(env.round) + " does not select this node; ignored");
      return;
    }
    if (in_round()) drop_out(a, "a new plan (round " + std::to_string(env.round) + ") replaces it");
    if (version != p.global_version) {
      a.notes.push_back("round " + std::to_string(env.round) + " starts from global version " +
                        std::to_string(p.global_version) + " which this node has not installed; sitting it out");
      return;
    }
    try {
      UpdateEncoding e = wire::update_encoding(p);
      validate(e, p.secure);
      client_id = static_cast<std::uint32_t>(it - p.selected.begin()) + 1;
      if (cfg.require_malicious && !p.secure)
        throw Error(ErrorKind::kPrivacy, "this node requires secure aggregation in malicious mode; the plan is not "
                                         "secure (a downgrade) - not training");
      if (p.secure) {
        const agg::SecAggParams sp = wire::secure_settings(p).params;
        if (!privacy::prg_supported(sp.prg))
          throw Error(ErrorKind::kUnimplemented, std::string("the round masks with ") + privacy::prg_name(sp.prg) +
                                                     ", which needs AES instructions this CPU lacks");
        if (cfg.require_malicious && sp.mode != agg::SecAggMode::kMalicious)
          throw Error(ErrorKind::kPrivacy, std::string("this node requires secure aggregation in malicious mode; the "
                                                       "plan says ") + agg::secagg_mode_name(sp.mode) +
                                               " (a downgrade) - not training");
        secagg = std::make_unique<agg::SecAggClient>(agg::RoundSetup{env.round, sp}, client_id, client_auth(env, p, sp));
        mode = sp.mode;
      }
      enc = e;
    } catch (const Error& e) {
      client_id = 0;
      secagg.reset();
      a.notes.push_back("round " + std::to_string(env.round) + " plan refused: " + e.what());
      return;
    }
    round = env.round;
    attempt = env.attempt;
    plan = p;
    ticket = next_ticket++;
    state = ClientState::kTraining;
    const auto& dl = p.deadlines;
    const std::int64_t budget = p.secure ? dl.train_ms + dl.advertise_keys_ms : dl.train_ms + dl.masked_input_ms;
    a.train = TrainCommand{ticket, round, p.global_version, p.hyper, p.update_length, now + budget};
  }

  // Malicious mode: this node's key, the roster's key of each selected node
  // in client-id order, and the context binding signatures to this attempt.
  std::optional<agg::ClientAuth> client_auth(const Envelope& env, const protocol::RoundPlan& p,
                                             const agg::SecAggParams& sp) const {
    if (sp.mode != agg::SecAggMode::kMalicious) return std::nullopt;
    if (!signing)
      throw Error(ErrorKind::kInvalidInput, "the round is in malicious mode, but this node has no signing key "
                                            "(node config [secagg] signing_key and roster)");
    agg::ClientAuth auth{*signing, {}, wire::signing_context(env.round, env.attempt, p.selected)};
    for (protocol::NodeId node : p.selected) {
      auto key = cfg.roster.find(node);
      if (key == cfg.roster.end())
        throw Error(ErrorKind::kInvalidInput, "the round selects node " + std::to_string(node) +
                                                  ", which is not in this node's roster ([secagg] roster); "
                                                  "ask the operator for the current roster");
      auth.roster.push_back(key->second);
    }
    return auth;
  }

  // KeysBroadcast, SharesDelivery, ConsistencyCheck, UnmaskRequest: one secure-aggregation step each.
  void on_secagg(NodeActions& a, const Envelope& env) {
    if (env.round != round || round == 0 || env.attempt != attempt) {
      a.notes.push_back(std::string("ignored ") + protocol::body_name(env.body) + " for round " +
                        std::to_string(env.round) + " attempt " + std::to_string(env.attempt) +
                        " (this node is in round " + std::to_string(round) + " attempt " + std::to_string(attempt) + ")");
      return;
    }
    try {
      if (const auto* kb = std::get_if<protocol::KeysBroadcastBody>(&env.body)) {
        expect(ClientState::kAdvertised, "keysBroadcast");
        a.send.push_back(envelope(wire::to_wire(secagg->share_keys(wire::from_wire(*kb, round))), round));
        state = ClientState::kSharedKeys;
      } else if (const auto* sd = std::get_if<protocol::SharesDeliveryBody>(&env.body)) {
        expect(ClientState::kSharedKeys, "sharesDelivery");
        a.send.push_back(envelope(wire::to_wire(secagg->masked_input(wire::from_wire(*sd, round), ring)), round));
        ring.clear();
        ring.shrink_to_fit();
        state = ClientState::kSentMasked;
      } else if (const auto* cc = std::get_if<protocol::ConsistencyCheckBody>(&env.body)) {
        expect(ClientState::kSentMasked, "consistencyCheck");
        a.send.push_back(envelope(wire::to_wire(secagg->sign_survivors(wire::from_wire(*cc, round))), round));
        state = ClientState::kSignedSurvivors;
      } else if (const auto* ur = std::get_if<protocol::UnmaskRequestBody>(&env.body)) {
        expect(mode == agg::SecAggMode::kMalicious ? ClientState::kSignedSurvivors : ClientState::kSentMasked,
               "unmaskRequest");
        const agg::UnmaskRequest request = wire::from_wire(*ur, round);
        a.send.push_back(envelope(wire::to_wire(secagg->unmask(request)), round));
        a.update_in_sum = std::binary_search(request.survivors.begin(), request.survivors.end(), client_id);
        reset_round();  // this node's part of the round is done
      }
    } catch (const Error& e) {
      drop_out(a, e.what());
    }
  }

  void expect(ClientState want, const char* what) const {
    if (state != want)
      throw Error(ErrorKind::kProtocol, std::string(what) + " arrived while the node is " + client_state_name(state) +
                                            ", not " + client_state_name(want));
  }

  void on_error(NodeActions& a, const Envelope& env, const protocol::ErrorReply& e) {
    a.notes.push_back("coordinator refused " + std::string(e.in_reply_to < std::variant_size_v<protocol::Body>
                                                                 ? protocol::body_name(e.in_reply_to)
                                                                 : "a message") +
                      " (code " + std::to_string(static_cast<int>(e.code)) + "): " + e.message);
    const bool fatal = e.code == ErrorCode::kDeadlineMissed || e.code == ErrorCode::kWrongRound ||
                       e.code == ErrorCode::kNotAllowed || e.code == ErrorCode::kWrongStage;
    if (fatal && is_round_body(e.in_reply_to) && round != 0 && env.round == round && env.attempt == attempt)
      drop_out(a, "refused by the coordinator");
    if (e.code == ErrorCode::kUnknownSender && state != ClientState::kRegistering) {
      // The coordinator forgot us (restarted without state): register again.
      state = ClientState::kUnregistered;
      reset_round();
    }
  }

  protocol::NodeState wire_state() const {
    switch (state) {
      case ClientState::kTraining: return protocol::NodeState::kTraining;
      case ClientState::kAdvertised: case ClientState::kSharedKeys: case ClientState::kSentMasked:
      case ClientState::kSignedSurvivors:
        return protocol::NodeState::kAggregating;
      default: return protocol::NodeState::kIdle;
    }
  }
};

RoundClient::RoundClient(NodeIdentity identity, NodeClientConfig config) {
  if (identity.node_id == protocol::kCoordinatorId)
    throw Error(ErrorKind::kInvalidInput, "node id 0 is the coordinator's; give the node an id >= 1");
  if (config.heartbeat_interval_ms == 0 || config.register_retry_ms == 0)
    throw Error(ErrorKind::kInvalidInput, "node client: heartbeat_interval_ms and register_retry_ms must be > 0");
  s_ = std::make_unique<State>(std::move(identity), std::move(config));
}
RoundClient::~RoundClient() = default;
RoundClient::RoundClient(RoundClient&&) noexcept = default;
RoundClient& RoundClient::operator=(RoundClient&&) noexcept = default;

NodeActions RoundClient::start(std::int64_t now_ms) {
  NodeActions a;
  s_->state = ClientState::kUnregistered;
  s_->send_register(a, now_ms);
  return a;
}

NodeActions RoundClient::on_message(std::int64_t now_ms, const Envelope& env) {
  NodeActions a;
  State& s = *s_;
  if (env.sender != protocol::kCoordinatorId) {
    a.notes.push_back("ignored a message from node " + std::to_string(env.sender) + " (only the coordinator talks to nodes)");
    return a;
  }
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, protocol::RegisterAck>) {
          if (m.node_id != s.id.node_id) {
            a.notes.push_back("registerAck for node " + std::to_string(m.node_id) + " ignored");
            return;
          }
          if (m.heartbeat_interval_ms) s.heartbeat_ms = m.heartbeat_interval_ms;
          if (s.state <= ClientState::kRegistering) s.state = ClientState::kIdle;
          s.last_heartbeat = now_ms;
        } else if constexpr (std::is_same_v<T, protocol::GlobalModel>) {
          s.on_model(a, m);
        } else if constexpr (std::is_same_v<T, protocol::RoundPlan>) {
          s.on_plan(a, now_ms, env, m);
        } else if constexpr (std::is_same_v<T, protocol::KeysBroadcastBody> || std::is_same_v<T, protocol::SharesDeliveryBody> ||
                             std::is_same_v<T, protocol::UnmaskRequestBody> ||
                             std::is_same_v<T, protocol::ConsistencyCheckBody>) {
          s.on_secagg(a, env);
        } else if constexpr (std::is_same_v<T, protocol::ErrorReply>) {
          s.on_error(a, env, m);
        } else {
          a.notes.push_back(std::string("ignored ") + protocol::body_name(env.body) + " from the coordinator");
        }
      },
      env.body);
  if (s.state == ClientState::kUnregistered) s.send_register(a, now_ms);
  return a;
}

NodeActions RoundClient::on_update_ready(std::int64_t /*now_ms*/, LocalUpdate update) {
  NodeActions a;
  State& s = *s_;
  if (s.state != ClientState::kTraining || update.ticket != s.ticket) {
    a.notes.push_back("update for ticket " + std::to_string(update.ticket) + " is stale; dropped");
    return a;
  }
  try {
    if (s.plan.secure) {
      s.ring = encode_secure(s.enc, update.update, update.num_examples, update.train_loss, s.rng(), update.lora_rank);
      a.send.push_back(s.envelope(wire::to_wire(s.secagg->advertise_keys()), s.round));
      s.state = ClientState::kAdvertised;
    } else {
      if (update.num_examples == 0) throw Error(ErrorKind::kInvalidInput, "the update has 0 training examples");
      std::vector<float> clipped = clip_update(s.enc, update.update);
      a.send.push_back(s.envelope(protocol::PlainUpdate{update.num_examples,
                                                        protocol::Payload<float>::own(std::move(clipped)),
                                                        static_cast<float>(update.train_loss)},
                                  s.round));
      s.reset_round();
    }
  } catch (const Error& e) {
    s.drop_out(a, e.what());
    a.cancel_training = false;  // training already finished
  }
  return a;
}

NodeActions RoundClient::on_training_failed(std::int64_t /*now_ms*/, const std::string& reason) {
  NodeActions a;
  if (s_->state == ClientState::kTraining) {
    s_->drop_out(a, "local training failed: " + reason);
    a.cancel_training = false;
  }
  return a;
}

NodeActions RoundClient::on_tick(std::int64_t now_ms) {
  NodeActions a;
  State& s = *s_;
  if (s.state == ClientState::kUnregistered ||
      (s.state == ClientState::kRegistering && now_ms - s.last_register >= s.cfg.register_retry_ms)) {
    s.send_register(a, now_ms);
  } else if (s.state >= ClientState::kIdle && now_ms - s.last_heartbeat >= s.heartbeat_ms) {
    s.last_heartbeat = now_ms;
    a.send.push_back(s.envelope(protocol::Heartbeat{static_cast<std::uint64_t>(std::max<std::int64_t>(now_ms, 0)),
                                                    s.wire_state(), s.version.value_or(0)}));
  }
  return a;
}

NodeActions RoundClient::send_metrics(std::int64_t /*now_ms*/, const std::vector<protocol::Metric>& entries) {
  NodeActions a;
  if (s_->state < ClientState::kIdle) {
    a.notes.push_back("metrics not sent: the node has not registered yet");
    return a;
  }
  protocol::Metrics m;
  for (const auto& e : entries)
    if (std::isfinite(e.value) && !e.name.empty()) m.entries.push_back(e);
  if (!m.entries.empty()) a.send.push_back(s_->envelope(std::move(m)));
  return a;
}

std::optional<std::int64_t> RoundClient::next_tick_ms() const {
  const State& s = *s_;
  if (s.state == ClientState::kUnregistered) return std::nullopt;
  if (s.state == ClientState::kRegistering) return s.last_register + s.cfg.register_retry_ms;
  return s.last_heartbeat + s.heartbeat_ms;
}

ClientState RoundClient::state() const { return s_->state; }
std::optional<std::uint64_t> RoundClient::global_version() const { return s_->version; }
std::uint64_t RoundClient::current_round() const { return s_->round; }
const protocol::RoundPlan* RoundClient::current_plan() const { return s_->in_round() ? &s_->plan : nullptr; }
const NodeIdentity& RoundClient::identity() const { return s_->id; }

}  // namespace fedge::federation
