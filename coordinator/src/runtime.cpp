// The coordinator process: I/O around CoordinatorCore. Everything about rounds
// lives in the core; this file moves bytes, writes files and database rows.
#include "fedge/coordinator/runtime.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fedge/common/clock.h"
#include "fedge/common/error.h"
#include "fedge/common/file_io.h"
#include "fedge/common/param_vector.h"
#include "fedge/common/safetensors.h"
#include "fedge/coordinator/allow_list.h"
#include "fedge/coordinator/http_api.h"
#include "fedge/coordinator/store.h"
#include "fedge/coordinator/telemetry.h"
#include "fedge/federation/lora_ranks.h"
#include "fedge/federation/scaffold.h"
#include "fedge/federation/size_caps.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/api_keys.h"
#include "fedge/protocol/keys.h"
#include "fedge/protocol/layout.h"
#include "fedge/protocol/transport.h"

namespace fedge::coordinator {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAdapterFile = "adapter_model.safetensors";
constexpr const char* kAdapterConfig = "adapter_config.json";

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kNotFound, file.string() + ": cannot open");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The global the federation runs on, from the stored version `version` at
// `path`: as stored, or under shared-a the adapter's A matrices (version 0 is
// the initial adapter as given, whole; later versions hold A only). A whole
// adapter past version 0 under shared-a means the setting changed between
// runs, and is refused: the nodes' B would start from zero under a trained A.
// (The other way round, nodes without shared-a refuse an A-only global.)
ParamVector federated_global(ParamVector stored, std::uint64_t version, bool shared_a, const std::string& path) {
  if (!shared_a || federation::is_lora_a_only(stored.layout())) return stored;
  if (version > 0)
    throw Error(ErrorKind::kInvalidInput,
                path + ": global v" + std::to_string(version) + " is a whole adapter, made without shared-a; a "
                "federation cannot switch to [federation] personalization = \"shared-a\" midway (every node's B "
                "would start from zero under a trained A): start from a new coordinator.state_dir, or set "
                "personalization = \"none\"");
  federation::LoraLayout pairs;
  try {
    pairs = federation::lora_layout(stored.layout());
  } catch (const Error& e) {
    throw Error(ErrorKind::kInvalidInput, path + ": [federation] personalization = \"shared-a\" needs a LoRA "
                                          "adapter as the initial global: " + e.what());
  }
  const auto b = federation::lora_b_part(pairs, stored.values());
  if (std::any_of(b.begin(), b.end(), [](float x) { return x != 0.0f; }))
    spdlog::warn("{}: the initial adapter's B matrices are not zero; under shared-a every node starts its own B "
                 "from zero, so they are not used", path);
  ParamVector a(federation::lora_a_layout(stored.layout()), federation::lora_a_part(pairs, stored.values()));
  spdlog::info("shared-a: the federation holds the adapter's A matrices only ({} of {} floats); each node keeps "
               "its own B", a.size(), stored.size());
  return a;
}

// The global under the strategy: SCAFFOLD's [x ; c] (federation/scaffold.h)
// from a plain adapter x, with c = 0 (so a federation may switch to SCAFFOLD
// at any version: every node's c_i starts at zero too), and x alone from a
// stored [x ; c] when the strategy is no longer SCAFFOLD.
ParamVector strategy_global(ParamVector stored, bool scaffold, const std::string& path) {
  const bool has_c = federation::is_scaffold_layout(stored.layout());
  if (scaffold == has_c) return stored;
  if (scaffold) {
    spdlog::info("SCAFFOLD: the global is [x ; c], the adapter and its control variate (c = 0 to start)");
    return federation::with_zero_control(stored);
  }
  spdlog::warn("{}: the stored global is SCAFFOLD's [x ; c] but the strategy is no longer scaffold: the federation "
               "goes on from x, and c is dropped", path);
  return federation::scaffold_adapter(stored);
}

// The server optimiser's state (FedAdam's moments...) next to each version, so
// that a restarted coordinator continues exactly: one F64 vector per entry,
// the strategy's name in the metadata.
constexpr const char* kServerStateFile = "server_optimizer.safetensors";

void save_server_state(const fs::path& file, const std::string& strategy, const aggregation::StrategyState& state) {
  std::vector<TensorView> tensors;
  for (const auto& [name, values] : state) {
    tensors.push_back({name, DType::kF64, {static_cast<std::int64_t>(values.size())}, std::as_bytes(std::span(values))});
  }
  write_safetensors(file, tensors, {{"strategy", strategy}});
}

// The saved state, or nothing when it belongs to another strategy (the
// operator changed it between runs: the new one starts fresh).
std::optional<aggregation::StrategyState> load_server_state(const fs::path& file, const std::string& strategy) {
  const auto saved = SafetensorsFile::open(file);
  const auto it = saved.metadata().find("strategy");
  const std::string saved_by = it == saved.metadata().end() ? "" : it->second;
  if (saved_by != strategy) {
    spdlog::warn("{} was saved by strategy '{}', the federation now uses '{}': its server state starts fresh",
                 file.string(), saved_by, strategy);
    return std::nullopt;
  }
  aggregation::StrategyState state;
  for (const auto& t : saved.tensors()) {
    if (t.dtype != DType::kF64 || t.shape.size() != 1) {
      throw Error(ErrorKind::kInvalidInput, file.string() + ": tensor '" + t.name + "' must be a 1-D F64 vector, is " +
                                                std::string(dtype_name(t.dtype)) + " " + format_shape(t.shape) +
                                                "; delete the file to restart the server optimiser from zero");
    }
    auto& values = state[t.name];
    values.resize(static_cast<std::size_t>(t.numel()));
    std::memcpy(values.data(), saved.bytes(t).data(), t.nbytes());
  }
  return state;
}

// The plan as the Store keeps it: settings only, never node data.
std::string plan_json(const protocol::RoundPlan& plan) {
  nlohmann::json j;
  j["global_version"] = plan.global_version;
  j["local_steps"] = plan.hyper.local_steps;
  j["learning_rate"] = plan.hyper.learning_rate;
  j["batch_size"] = plan.hyper.batch_size;
  j["fedprox_mu"] = plan.hyper.fedprox_mu;
  j["secure"] = plan.secure;
  if (plan.secure) {
    const federation::wire::SecureSettings s = federation::wire::secure_settings(plan);
    j["secagg"] = {{"n", s.params.num_clients}, {"threshold", s.params.threshold},
                   {"degree", s.params.degree}, {"vector_length", s.params.vector_length},
                   {"quant_bits", s.quant_bits}, {"clip_range", s.clip_range}};
  }
  j["dp"] = {{"mode", static_cast<int>(plan.dp.mode)},
             {"clip_norm", plan.dp.clip_norm},
             {"noise_multiplier", plan.dp.noise_multiplier}};
  j["update_length"] = plan.update_length;
  return j.dump();
}

protocol::Envelope error_reply(protocol::ErrorCode code, std::string message, std::uint16_t in_reply_to) {
  protocol::Envelope env;
  env.sender = protocol::kCoordinatorId;
  env.body = protocol::ErrorReply{code, std::move(message), in_reply_to};
  return env;
}

}  // namespace

struct CoordinatorRuntime::Impl {
  CoordinatorRuntimeConfig config;
  Store store;
  protocol::Context context;
  std::unique_ptr<protocol::Router> router;
  std::optional<CoordinatorCore> core;
  std::string adapter_config_text;              // copied next to every version
  // node -> ZeroMQ routing id of its connection: set only from a message the
  // core verified as the node's own (CoordinatorActions::sender_verified).
  std::map<protocol::NodeId, std::string> peer_of;
  std::map<protocol::NodeId, protocol::Key32> key_of;    // node -> its bound CURVE key
  std::map<protocol::NodeId, std::int64_t> heartbeat_written;
  // What GET /metrics and /api/status show: written here on the loop thread,
  // read on the HTTP listener's threads (telemetry.h).
  Telemetry telemetry;
  std::int64_t nodes_noted_ms = 0;
  std::unique_ptr<HttpApi> http;  // last: stopped before what it reads goes

  explicit Impl(CoordinatorRuntimeConfig c)
      : config(std::move(c)), store(open_store(config)), telemetry(config.federation) {}

  // The metrics and dashboard listener, when [http] listen is set.
  void listen_http() {
    if (config.http.listen.empty()) return;
    std::shared_ptr<const protocol::ApiKeys> keys;
    if (!config.http.api_keys.empty())
      keys = std::make_shared<protocol::ApiKeys>(protocol::ApiKeys::load(config.http.api_keys, "http.api_keys"));
    http = std::make_unique<HttpApi>(telemetry, config.http.listen, std::move(keys));
    if (!config.http.url_file.empty()) write_file_atomically(config.http.url_file, http->url() + "\n");
  }

  // Node states for the telemetry, a few times a second (the core knows them exactly).
  void note_nodes(std::int64_t now) {
    if (now - nodes_noted_ms < 250) return;
    nodes_noted_ms = now;
    const auto live = core->live_nodes(now);
    const protocol::RoundPlan* plan = core->current_plan();
    std::vector<NodeRow> rows;
    for (protocol::NodeId id : core->registered_nodes()) {
      NodeRow row;
      row.id = id;
      row.state = std::find(live.begin(), live.end(), id) != live.end() ? "live" : "lost";
      row.in_round = plan && std::find(plan->selected.begin(), plan->selected.end(), id) != plan->selected.end();
      rows.push_back(std::move(row));
    }
    telemetry.on_nodes(std::move(rows));
    telemetry.on_current(core->current_round(), core->global_version(), core->finished());
  }

  static Store open_store(const CoordinatorRuntimeConfig& config) {
    fs::create_directories(config.state_dir / "adapters");
    fsync_directory(config.state_dir);  // holds adapters/ (and the database)
    return Store::open(config.state_dir / "coordinator.db");
  }

  fs::path version_dir(std::uint64_t version) const {
    fs::path dir = config.state_dir / "adapters" / "v";
    dir += std::to_string(version);
    return dir;
  }

  // The folder of a new version, its entry in adapters/ flushed to disk: the
  // files written into it (each flushed with its own rename) would be lost
  // with it at power loss otherwise.
  fs::path make_version_dir(std::uint64_t version) const {
    const fs::path dir = version_dir(version);
    fs::create_directories(dir);
    fsync_directory(dir.parent_path());
    return dir;
  }

  // Version 0: a copy of the configured initial adapter, recorded once.
  AdapterVersion record_initial_adapter() {
    if (config.initial_adapter.empty()) {
      throw Error(ErrorKind::kInvalidInput,
                  config.state_dir.string() + " holds no global adapter yet: set coordinator.initial_adapter "
                                              "to a PEFT adapter directory (e.g. made by `fedge adapter init`)");
    }
    const ParamVector initial = ParamVector::load(config.initial_adapter / kAdapterFile);
    const fs::path dir = make_version_dir(0);
    initial.save(dir / kAdapterFile);
    write_file_atomically(dir / kAdapterConfig, read_text(config.initial_adapter / kAdapterConfig));
    const FileDigest digest = digest_file(dir / kAdapterFile);
    AdapterVersion v{0, 0, (dir / kAdapterFile).string(), digest.sha256, digest.size_bytes, 0};
    store.record_initial_adapter(v);
    spdlog::info("initial global adapter from {}: {} parameters", config.initial_adapter.string(), initial.size());
    return *store.latest_version();
  }

  ResumeState resume() {
    const Recovery recovery = store.recover();
    for (auto round : recovery.abandoned) spdlog::warn("round {} was running when the coordinator stopped; it runs again", round);
    const AdapterVersion latest = recovery.latest_adapter ? *recovery.latest_adapter : record_initial_adapter();
    const FileDigest digest = digest_file(latest.path);
    if (!latest.sha256.empty() && digest.sha256 != latest.sha256) {
      throw Error(ErrorKind::kInvalidInput, latest.path + ": the global adapter v" + std::to_string(latest.version) +
                                                " changed on disk since it was written (sha256 differs); restore it");
    }
    const ParamVector global =
        strategy_global(federated_global(ParamVector::load(latest.path), latest.version, config.shared_a, latest.path),
                        config.federation.strategy == "scaffold", latest.path);
    adapter_config_text = read_text(fs::path(latest.path).parent_path() / kAdapterConfig);
    ResumeState state;
    state.next_round = recovery.next_round;
    state.global_version = latest.version;
    state.global.assign(global.values().begin(), global.values().end());
    state.layout = protocol::to_wire_layout(global.layout());
    state.dp_history = store.dp_history();
    state.key_bindings = restore_key_bindings();
    const fs::path server_state = fs::path(latest.path).parent_path() / kServerStateFile;
    if (fs::exists(server_state)) {
      if (auto saved = load_server_state(server_state, config.federation.strategy)) state.strategy_state = *saved;
    } else if (latest.version > 0 &&
               aggregation::make_strategy(config.federation.strategy, config.federation.strategy_params)->keeps_state()) {
      spdlog::warn("no server optimiser state next to global v{}: strategy {} starts its moments from zero",
                   latest.version, config.federation.strategy);
    }
    spdlog::info("coordinator state {}: global v{}, next round {}", config.state_dir.string(), latest.version,
                 recovery.next_round);
    return state;
  }

  // Each node id's CURVE key for the core (issue 16, finding 2): the ids the
  // allow-list names are the operator's word and replace what the store had;
  // every other binding is the one a node made at its first registration.
  std::map<protocol::NodeId, protocol::Key32> restore_key_bindings() {
    if (!config.insecure && !config.allow_list.empty()) {
      for (const auto& [id, key] : allow_list_node_ids(config.allow_list)) {
        for (const auto& dropped : store.pin_node_key(id, key)) {
          spdlog::warn("allow-list {} names node {} for key {}: node {} is no longer bound to key {}",
                       config.allow_list.string(), id, protocol::key_to_z85(key), dropped.node_id,
                       protocol::key_to_z85(dropped.public_key));
        }
      }
    }
    std::map<protocol::NodeId, protocol::Key32> bindings;
    for (const auto& b : store.node_key_bindings()) bindings[b.node_id] = b.public_key;
    key_of = bindings;
    if (!bindings.empty()) spdlog::info("{} node ids bound to their CURVE keys", bindings.size());
    return bindings;
  }

  void bind() {
    protocol::SocketOptions options;
    options.limits = config.limits;
    // ZeroMQ drops a message over the largest size cap before reading it in
    // (finding 8); decode then holds each type to its own cap.
    const std::size_t largest =
        federation::largest_cap(federation::coordinator_size_caps(nullptr, core->global().size(), config.limits));
    if (largest != 0) options.limits.max_message_bytes = std::min(options.limits.max_message_bytes, largest);
    options.high_water_mark = config.queue_per_peer;
    std::optional<protocol::CurveServer> curve;
    if (!config.insecure) {
      if (config.key_file.empty() || config.allow_list.empty()) {
        throw Error(ErrorKind::kInvalidInput,
                    "coordinator: set coordinator.key and coordinator.allow_list (CurveZMQ), or insecure = true "
                    "for a plain-TCP test setup");
      }
      curve = protocol::CurveServer{protocol::load_key_pair(config.key_file),
                                    protocol::load_allow_list(config.allow_list)};
      spdlog::info("CurveZMQ on; {} node keys allowed", curve->allowed_clients.size());
    } else {
      spdlog::warn("coordinator runs WITHOUT CurveZMQ (insecure = true): traffic is plain text");
    }
    router = std::make_unique<protocol::Router>(context, config.bind, options, std::move(curve));
    spdlog::info("coordinator listening on {}", router->endpoint());
    if (!config.endpoint_file.empty()) write_file_atomically(config.endpoint_file, router->endpoint() + "\n");
  }

  // ---- outgoing ----
  // Where the answers to one incoming message go: back on its connection,
  // whether or not the core verified its sender (a refusal reaches the peer
  // that sent the message, never the node whose id it claimed).
  struct ReplyRoute {
    protocol::NodeId claimed = 0;  // the envelope's sender
    std::string peer;              // the routing id it came from
  };

  void send(const Outgoing& out, const ReplyRoute* reply = nullptr) {
    const std::string* route = nullptr;
    if (reply != nullptr && out.to == reply->claimed) {
      route = &reply->peer;
    } else if (auto peer = peer_of.find(out.to); peer != peer_of.end()) {
      route = &peer->second;
    }
    if (route == nullptr) {
      spdlog::debug("no connection to node {} for {}", out.to, protocol::body_name(out.envelope.body));
      return;
    }
    try {
      const protocol::Bytes bytes = protocol::encode(out.envelope);
      router->send(*route, bytes);
      telemetry.on_sent(bytes.size());
    } catch (const Error& e) {
      // The node went away; the core treats its silence as a dropout.
      spdlog::debug("send {} to node {}: {}", protocol::body_name(out.envelope.body), out.to, e.what());
    }
  }

  void reply_to_peer(const std::string& peer, const protocol::Envelope& env) {
    try {
      const protocol::Bytes bytes = protocol::encode(env);
      router->send(peer, bytes);
      telemetry.on_sent(bytes.size());
    } catch (const Error& e) {
      spdlog::debug("error reply not delivered: {}", e.what());
    }
  }

  // ---- events ----
  void handle(const RoundStarted& e) {
    store.begin_round(e.round, plan_json(e.plan), e.plan.selected);
    spdlog::info("round {} (attempt {}) started: {} nodes selected, {}", e.round, e.attempt, e.plan.selected.size(),
                 e.plan.secure ? "secure aggregation" : "plain updates");
  }

  void handle(const RoundCompleted& e) {
    const fs::path dir = make_version_dir(e.version);
    const ParamVector global(protocol::to_param_layout(core->layout()), e.global);
    // Files first, row second. Every file is written atomically and durably
    // (temporary file, fsync, rename, fsync of the folder), so once the row
    // is committed the files it names survive power loss too; a crash in
    // between leaves files the next attempt overwrites (store.h's crash model).
    global.save(dir / kAdapterFile);
    write_file_atomically(dir / kAdapterConfig, adapter_config_text);
    if (!e.strategy_state.empty()) save_server_state(dir / kServerStateFile, config.federation.strategy, e.strategy_state);
    const FileDigest digest = digest_file(dir / kAdapterFile);
    RoundResult result;
    result.adapter_version = e.version;
    result.adapter_path = (dir / kAdapterFile).string();
    result.adapter_sha256 = digest.sha256;
    result.adapter_size_bytes = digest.size_bytes;
    for (const auto& [name, value] : e.metrics) {
      if (!std::isnan(value)) result.metrics[name] = value;
    }
    result.survivors = e.survivors.size();
    result.epsilon_spent = core->epsilon();
    result.dp = e.dp;
    store.complete_round(e.round, result);
    std::string summary;
    for (const auto& [name, value] : result.metrics) summary += " " + name + "=" + fmt::format("{:.4g}", value);
    spdlog::info("round {} completed: global v{} from {} survivors;{}", e.round, e.version, e.survivors.size(), summary);
    log_stats(e.round, e.stats);
  }

  void handle(const RoundFailed& e) {
    if (e.started) store.fail_round(e.round, e.reason);
    spdlog::warn("round {} (attempt {}) failed: {}", e.round, e.attempt, e.reason);
    log_stats(e.round, e.stats);
  }

  void handle(const NodeRegistered& e) {
    NodeRecord record;
    record.node_id = e.node.node_id;
    record.name = e.node.name;
    record.public_key = e.node.public_key;
    record.profile = e.node.capabilities.device_profile;
    record.examples = e.node.capabilities.num_examples;
    // With CURVE the key was authenticated: keep the binding across restarts,
    // before the node's row so that no crash leaves a node without it.
    if (!config.insecure) store.bind_node_key(e.node.node_id, e.node.public_key);
    store.upsert_node(record);
    key_of[e.node.node_id] = e.node.public_key;
    spdlog::info("node {} ('{}') {}: {} examples", e.node.node_id, e.node.name,
                 e.known ? "registered again" : "registered", e.node.capabilities.num_examples);
  }

  void handle(const NodeLost& e) { spdlog::warn("node {} missed its heartbeats; it is no longer selected", e.node); }
  void handle(const FederationFinished& e) { spdlog::info("federation finished after round {}", e.rounds); }
  void handle(const MessageRefused& e) {
    spdlog::debug("refused {} from node {} (round {}): {}", e.message, e.node, e.round, e.why);
  }
  void handle(const NodeReportedError& e) {
    spdlog::warn("node {} reports error {}: {}", e.node, static_cast<int>(e.code), e.message);
  }

  static void log_stats(std::uint64_t round, const RoundStats& stats) {
    for (const auto& s : stats.stages) {
      if (s.dropped() > 0) {
        spdlog::info("round {}: {} of {} nodes dropped at {}", round, s.dropped(), s.expected, stage_name(s.stage));
      }
    }
  }

  void apply(const CoordinatorActions& actions, const ReplyRoute* reply = nullptr) {
    // Events first: a round's rows exist before its messages go out.
    for (const auto& event : actions.events) {
      std::visit([this](const auto& e) { handle(e); }, event);
      telemetry.on_event(event, unix_ms(), core->epsilon());
    }
    telemetry.on_stage(core->stage(), unix_ms());
    for (const auto& out : actions.send) send(out, reply);
  }

  // ---- incoming ----
  void receive(const protocol::Incoming& in) {
    telemetry.on_received(in.payload.size());
    protocol::Envelope env;
    try {
      protocol::Expectations expect;
      expect.size_caps = federation::coordinator_size_caps(core->current_plan(), core->global().size(), config.limits);
      env = protocol::decode(in.payload, config.limits, expect);
    } catch (const protocol::DecodeError& e) {
      spdlog::warn("refused a message from peer {}: {}", peer_label(in), e.what());
      reply_to_peer(in.peer, error_reply(e.code(), e.what(), 0xffff));
      return;
    }
    std::optional<protocol::Key32> key;
    if (!in.user_id.empty()) key = protocol::z85_to_key(in.user_id, "CURVE user id");
    if (speaks_for_another_key(in, env, key)) return;
    // No exception from one peer's message ends the coordinator: the core
    // refuses what it can name; anything else it or the store throws is
    // answered as an internal error to that peer and logged.
    try {
      const CoordinatorActions actions = core->on_message(unix_ms(), env, key);
      // Only a sender the core verified moves its node's route here: a peer
      // that merely claims an id (a refused Register, someone else's key)
      // must not receive that node's messages (issue 16, finding 3).
      if (actions.sender_verified) {
        peer_of[*actions.sender_verified] = in.peer;
        if (std::holds_alternative<protocol::Heartbeat>(env.body)) note_heartbeat(*actions.sender_verified);
      }
      const ReplyRoute reply{env.sender, in.peer};
      apply(actions, &reply);
    } catch (const std::exception& e) {
      spdlog::error("handling {} from node {} failed: {}; the coordinator goes on", protocol::body_name(env.body),
                    env.sender, e.what());
      reply_to_peer(in.peer, error_reply(protocol::ErrorCode::kInternal, "the coordinator could not handle this message",
                                         static_cast<std::uint16_t>(env.body.index())));
    }
  }

  // A node id is bound to its key: another allow-listed node cannot speak for
  // it (the core checks this too for registered nodes; here it also covers
  // ErrorReplies and nodes not yet registered again after a restart).
  bool speaks_for_another_key(const protocol::Incoming& in, const protocol::Envelope& env,
                              const std::optional<protocol::Key32>& key) {
    if (!key || std::holds_alternative<protocol::Register>(env.body)) return false;
    auto known = key_of.find(env.sender);
    if (known == key_of.end() || known->second == *key) return false;
    spdlog::warn("peer {} sent {} as node {}, whose key differs; refused", peer_label(in),
                 protocol::body_name(env.body), env.sender);
    reply_to_peer(in.peer, error_reply(protocol::ErrorCode::kNotAllowed,
                                       "sender id " + std::to_string(env.sender) +
                                           " is bound to another CURVE key; send as the node id of your own key",
                                       static_cast<std::uint16_t>(env.body.index())));
    return true;
  }

  void note_heartbeat(protocol::NodeId node) {
    // The database keeps liveness coarsely (every 10 s per node); the core keeps it exactly.
    const std::int64_t now = unix_ms();
    auto& last = heartbeat_written[node];
    if (now - last < 10000 || !key_of.count(node)) return;
    last = now;
    try {
      store.mark_heartbeat(node, now);
    } catch (const Error& e) {
      spdlog::debug("heartbeat of node {}: {}", node, e.what());
    }
  }

  static std::string peer_label(const protocol::Incoming& in) {
    return in.user_id.empty() ? "(no CURVE key)" : "with key " + in.user_id;
  }
};

namespace {

// A secure round with the fewest nodes allowed must be plannable; otherwise
// every attempt would fail the same way, so refuse to start instead.
void check_smallest_secure_round(const FederationConfig& f, std::uint64_t update_length) {
  if (!f.secure || f.secagg_degree != 0) return;
  try {
    aggregation::choose_secagg_params(std::max<std::uint32_t>(f.min_nodes, 3), update_length + 2, f.expected_dropout,
                                      f.corrupt_fraction, f.failure_probability);
  } catch (const Error& e) {
    throw Error(ErrorKind::kInvalidInput,
                std::string("federation: a secure round of min_nodes = ") + std::to_string(f.min_nodes) +
                    " nodes cannot be planned (" + e.what() +
                    "); raise federation.min_nodes, lower federation.secagg.expected_dropout or raise "
                    "federation.secagg.failure_probability");
  }
}

}  // namespace

CoordinatorRuntime::CoordinatorRuntime(CoordinatorRuntimeConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {
  validate(impl_->config.federation);
  ResumeState resume = impl_->resume();
  check_smallest_secure_round(impl_->config.federation, resume.global.size());
  impl_->core.emplace(impl_->config.federation, std::move(resume));
  impl_->bind();
  impl_->telemetry.restore(impl_->store);
  impl_->telemetry.on_current(impl_->core->current_round(), impl_->core->global_version(), impl_->core->finished());
  impl_->listen_http();
}

CoordinatorRuntime::~CoordinatorRuntime() = default;

std::string CoordinatorRuntime::endpoint() const { return impl_->router->endpoint(); }
std::string CoordinatorRuntime::http_url() const { return impl_->http ? impl_->http->url() : std::string(); }

int CoordinatorRuntime::run() {
  Impl& s = *impl_;
  std::optional<std::int64_t> finished_at;
  while (!stop_.load()) {
    std::int64_t now = unix_ms();
    std::int64_t wait = 50;
    if (auto next = s.core->next_deadline_ms()) wait = std::clamp<std::int64_t>(*next - now, 0, 50);
    if (auto in = s.router->recv(std::chrono::milliseconds(wait))) s.receive(*in);
    s.apply(s.core->on_tick(unix_ms()));
    s.note_nodes(unix_ms());
    if (s.core->finished()) {
      if (!finished_at) finished_at = unix_ms();
      if (unix_ms() - *finished_at >= s.config.finish_linger_ms) return 0;
    }
  }
  spdlog::info("coordinator stopped at round {}; start it again with the same state directory to continue",
               s.core->current_round());
  return 1;
}

}  // namespace fedge::coordinator
