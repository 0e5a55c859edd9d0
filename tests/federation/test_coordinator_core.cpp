// CoordinatorCore on its own: config and resume validation, registration,
// liveness, selection, plan contents and deadlines (whole rounds with real
// node cores run in tests/federation/).
#include <catch2/catch.hpp>

#include <algorithm>

#include "fedge/common/error.h"
#include "fedge/federation/coordinator_core.h"
#include "fedge/federation/wire.h"

using namespace fedge;
using namespace fedge::federation;
using protocol::Envelope;
using protocol::NodeId;

namespace {

ResumeState resume(std::size_t dim = 40) {
  ResumeState r;
  r.global.assign(dim, 0.5F);
  r.layout = {{"t", {dim}}};
  return r;
}

FederationConfig config() {
  FederationConfig c;
  c.min_nodes = 3;
  c.secagg_degree = 2;
  c.secagg_threshold = 3;
  c.deadlines = {1000, 100, 200, 300, 400};
  c.secret_seed = privacy::Key32{};
  return c;
}

Envelope reg(NodeId id, std::uint64_t examples) {
  protocol::Key32 key{};
  key.fill(static_cast<std::uint8_t>(id));
  return {protocol::kProtocolVersion, 0, id, protocol::Register{id, "n" + std::to_string(id), key, {"cpu", examples, "m", 1, 0}}};
}

Envelope heartbeat(NodeId id) { return {protocol::kProtocolVersion, 0, id, protocol::Heartbeat{0, protocol::NodeState::kIdle, 0}}; }

template <class T>
std::vector<T> events_of(const CoordinatorActions& a) {
  std::vector<T> out;
  for (const auto& e : a.events)
    if (auto* x = std::get_if<T>(&e)) out.push_back(*x);
  return out;
}

}  // namespace

TEST_CASE("federation config: bad settings are refused naming the field") {
  auto refuse = [](FederationConfig c, const char* field) {
    CHECK_THROWS_WITH(validate(c), Catch::Contains(field));
  };
  auto c = config();
  c.rounds = 0;
  refuse(c, "rounds");
  c = config();
  c.min_nodes = 2;
  refuse(c, "min_nodes");
  c = config();
  c.fraction = 0;
  refuse(c, "fraction");
  c = config();
  c.max_nodes = 2;
  refuse(c, "max_nodes");
  c = config();
  c.liveness_timeout_ms = c.heartbeat_interval_ms;
  refuse(c, "liveness_timeout_ms");
  c = config();
  c.clip_range = -1;
  refuse(c, "clip_range");
  c = config();
  c.weight_caps.max_examples = 0;
  refuse(c, "max_examples");
  c = config();
  c.weight_caps.max_share = 0;
  refuse(c, "max_weight_share");
  c = config();
  c.quant_bits = 40;
  refuse(c, "quant_bits");
  c = config();
  c.secagg_threshold = 0;
  refuse(c, "secagg_degree");
  c = config();
  c.secagg_degree = 3;
  refuse(c, "even");
  c = config();
  c.secagg_threshold = 1;
  refuse(c, "secagg_threshold");
  c = config();
  c.dp.mode = protocol::DpMode::kDistributed;
  c.secure = false;
  refuse(c, "distributed DP");
  c = config();
  c.dp.mode = protocol::DpMode::kCentral;
  c.dp.noise_multiplier = 0;
  refuse(c, "noise_multiplier");
  c = config();
  c.strategy = "nope";
  refuse(c, "strategy");
  c = config();
  c.strategy = "fedtrimmedavg";
  refuse(c, "secure");
  CHECK_NOTHROW(validate(config()));
}

TEST_CASE("federation config: a hand-set SecAgg+ threshold keeps 3 survivors and the margin for corrupt_fraction "
          "(issue 16 finding 5)") {
  auto c = config();  // degree 2
  c.secagg_threshold = 2;  // 2 of 3 holders: a round of 3 could finish with 2, each seeing the other's update
  CHECK_THROWS_WITH(validate(c), Catch::Contains("secagg_threshold 2 is below 3"));
  // Degree 10 with corrupt_fraction 0.3: threshold floor(11 * 1.3 / 2) + 1 = 8 at least.
  c.secagg_degree = 10;
  c.secagg_threshold = 7;
  c.corrupt_fraction = 0.3;
  CHECK_THROWS_WITH(validate(c), Catch::Contains("secagg_threshold 7 is below 8") &&
                                     Catch::Contains("corrupt_fraction 0.3"));
  c.secagg_threshold = 8;
  CHECK_NOTHROW(validate(c));
  c.secagg_threshold = 12;
  CHECK_THROWS_WITH(validate(c), Catch::Contains("secagg_threshold 12 exceeds the 11 share holders"));
}

TEST_CASE("resume state: inconsistent parameters are refused") {
  auto r = resume();
  r.layout = {{"t", {39}}};
  CHECK_THROWS_WITH(CoordinatorCore(config(), r), Catch::Contains("layout describes 39"));
  r = resume();
  r.global.clear();
  r.layout.clear();
  CHECK_THROWS_WITH(CoordinatorCore(config(), r), Catch::Contains("empty"));
  r = resume();
  r.layout = {{"t", {20}}, {"t", {20}}};
  CHECK_THROWS_WITH(CoordinatorCore(config(), r), Catch::Contains("twice"));
  r = resume();
  r.next_round = 0;
  CHECK_THROWS_AS(CoordinatorCore(config(), r), Error);
  r = resume();
  r.dp_history = {{1, 0.0, 0.5, 1, 0, 1e-5}};
  CHECK_THROWS_WITH(CoordinatorCore(config(), r), Catch::Contains("dp_history"));
  // One key bound to two node ids (a store someone edited by hand).
  r = resume();
  protocol::Key32 shared{};
  shared.fill(7);
  r.key_bindings = {{3, shared}, {4, shared}};
  CHECK_THROWS_WITH(CoordinatorCore(config(), r), Catch::Contains("key_bindings") && Catch::Contains("node 4"));
  // A resume past the last round is finished at once.
  r = resume();
  r.next_round = 4;
  CHECK(CoordinatorCore(config(), r).finished());
}

TEST_CASE("coordinator: registration answers with an ack and the current model") {
  CoordinatorCore core(config(), resume());
  auto a = core.on_message(5, reg(4, 10));
  REQUIRE(a.send.size() == 2);
  const auto& ack = std::get<protocol::RegisterAck>(a.send[0].envelope.body);
  CHECK(ack.node_id == 4);
  CHECK(ack.heartbeat_interval_ms == config().heartbeat_interval_ms);
  const auto& model = std::get<protocol::GlobalModel>(a.send[1].envelope.body);
  CHECK(model.version == 0);
  CHECK(model.data.size() == 40 * 4);
  CHECK(model.data.owns_storage());
  CHECK(model.layout == resume().layout);
  // Heartbeats do not resend the model it already got.
  a = core.on_message(6, heartbeat(4));
  CHECK(a.send.empty());
}

TEST_CASE("coordinator: without send_global_to_all only selected nodes get the global, with their plan") {
  auto cfg = config();
  cfg.send_global_to_all = false;
  cfg.max_nodes = 3;
  cfg.deadlines = {1000, 100, 100, 100, 100};
  CoordinatorCore core(cfg, resume());
  auto count = [](const CoordinatorActions& a, NodeId node, auto body) {
    using Body = decltype(body);
    return std::count_if(a.send.begin(), a.send.end(), [&](const auto& o) {
      return o.to == node && std::holds_alternative<Body>(o.envelope.body);
    });
  };
  for (NodeId id = 1; id <= 6; ++id) {
    auto a = core.on_message(0, reg(id, 10));
    REQUIRE(a.send.size() == 1);  // the ack alone: an idle device downloads nothing
    CHECK(std::holds_alternative<protocol::RegisterAck>(a.send[0].envelope.body));
  }
  CHECK(core.on_message(1, heartbeat(2)).send.empty());  // an old version on a heartbeat: no model either
  auto a = core.on_tick(2);
  auto started = events_of<RoundStarted>(a);
  REQUIRE(started.size() == 1);
  const auto selected = started[0].plan.selected;
  REQUIRE(selected.size() == 3);
  for (NodeId id = 1; id <= 6; ++id) {
    const bool chosen = std::count(selected.begin(), selected.end(), id) > 0;
    CHECK(count(a, id, protocol::GlobalModel{}) == (chosen ? 1 : 0));
    CHECK(count(a, id, protocol::RoundPlan{}) == (chosen ? 1 : 0));
  }
  // The model goes before the plan, so a selected node has it installed when the plan comes.
  for (NodeId id : selected) {
    auto model = std::find_if(a.send.begin(), a.send.end(), [&](const auto& o) {
      return o.to == id && std::holds_alternative<protocol::GlobalModel>(o.envelope.body);
    });
    auto plan = std::find_if(a.send.begin(), a.send.end(), [&](const auto& o) {
      return o.to == id && std::holds_alternative<protocol::RoundPlan>(o.envelope.body);
    });
    CHECK(model < plan);
  }
  // The round fails (nobody answers): its end pushes the model to nobody.
  for (NodeId id = 1; id <= 6; ++id) core.on_message(500, heartbeat(id));
  a = core.on_tick(1200);
  REQUIRE(events_of<RoundFailed>(a).size() == 1);
  for (NodeId id = 1; id <= 6; ++id) CHECK(count(a, id, protocol::GlobalModel{}) == 0);
}

TEST_CASE("coordinator: rounds start with enough live nodes, dead nodes are never selected") {
  auto cfg = config();
  cfg.max_nodes = 3;
  CoordinatorCore core(cfg, resume());
  core.on_message(0, reg(1, 100));
  core.on_message(0, reg(2, 300));
  CHECK(core.on_tick(1).events.empty());  // two nodes: not enough
  CHECK_FALSE(core.next_deadline_ms() < std::optional<std::int64_t>(5000));
  core.on_message(10, reg(3, 200));
  core.on_message(10, reg(4, 0));  // no data: never selected
  core.on_message(3000, heartbeat(1));
  core.on_message(3000, heartbeat(3));
  core.on_message(3000, heartbeat(4));
  // Node 2 stays silent past the liveness timeout (5000 ms).
  auto a = core.on_tick(5100);
  auto lost = events_of<NodeLost>(a);
  REQUIRE(lost.size() == 1);
  CHECK(lost[0].node == 2);
  CHECK(events_of<RoundStarted>(a).empty());  // 1 and 3 live with data; 4 has none
  core.on_message(5200, reg(5, 400));
  a = core.on_tick(5300);
  auto started = events_of<RoundStarted>(a);
  REQUIRE(started.size() == 1);
  const auto& plan = started[0].plan;
  CHECK(plan.selected == std::vector<NodeId>{1, 3, 5});
  CHECK(plan.example_scale == 300);  // node 5 counts as 300: 400 of 700 would be over half
  CHECK(plan.update_length == 40);
  CHECK(plan.secure);
  const wire::SecureSettings secure = wire::secure_settings(plan);
  CHECK(secure.params.num_clients == 3);
  CHECK(secure.params.vector_length == 42);
  CHECK(secure.params.degree == 2);
  CHECK(secure.params.threshold == 3);  // never 2 survivors (issue 16 finding 5)
  CHECK(secure.quant_bits == 30);  // bits_for(3)
  CHECK(secure.clip_range == cfg.clip_range);
  CHECK(plan.deadlines == cfg.deadlines);
  CHECK(core.stage() == RoundStage::kAdvertiseKeys);
  CHECK(core.current_round() == 1);
  // Each selected node gets the plan (it already has the model).
  std::vector<NodeId> to;
  for (const auto& o : a.send)
    if (std::holds_alternative<protocol::RoundPlan>(o.envelope.body)) to.push_back(o.to);
  CHECK(to == std::vector<NodeId>{1, 3, 5});
  // Training + advertise deadline.
  CHECK(core.next_deadline_ms() == 5300 + 1000 + 100);
}

TEST_CASE("coordinator: a round nobody answers fails at its deadline and is retried") {
  auto cfg = config();
  cfg.retry_delay_ms = 50;
  CoordinatorCore core(cfg, resume());
  for (NodeId id = 1; id <= 3; ++id) core.on_message(0, reg(id, 10));
  auto a = core.on_tick(1);
  REQUIRE(events_of<RoundStarted>(a).size() == 1);
  a = core.on_tick(1 + 1100);
  auto failed = events_of<RoundFailed>(a);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].round == 1);
  CHECK(failed[0].started);
  REQUIRE(failed[0].stats.stages.size() == 1);
  CHECK(failed[0].stats.stages[0].stage == RoundStage::kAdvertiseKeys);
  CHECK(failed[0].stats.stages[0].expected == 3);
  CHECK(failed[0].stats.stages[0].dropped() == 3);
  CHECK(core.stage() == RoundStage::kIdle);
  for (NodeId id = 1; id <= 3; ++id) core.on_message(1150, heartbeat(id));
  a = core.on_tick(1101 + 50);
  auto again = events_of<RoundStarted>(a);
  REQUIRE(again.size() == 1);
  CHECK(again[0].round == 1);
  CHECK(again[0].attempt == 2);
  // A fresh graph seed per attempt.
  CHECK(core.current_attempt() == 2);
}

TEST_CASE("coordinator: selection follows fraction, min and max, deterministically from the seed") {
  auto run = [](std::uint64_t seed, double fraction, std::uint32_t max_nodes) {
    auto cfg = config();
    cfg.seed = seed;
    cfg.fraction = fraction;
    cfg.max_nodes = max_nodes;
    cfg.secagg_degree = 0;
    cfg.secagg_threshold = 0;
    cfg.failure_probability = 0.5;
    cfg.expected_dropout = 0.01;  // (0 trips a NaN in choose_secagg_params: see the report)
    cfg.corrupt_fraction = 0.0;
    CoordinatorCore core(cfg, resume());
    for (NodeId id = 1; id <= 20; ++id) core.on_message(0, reg(id, 5));
    auto started = events_of<RoundStarted>(core.on_tick(1));
    REQUIRE(started.size() == 1);
    return started[0].plan.selected;
  };
  CHECK(run(1, 0.5, 0).size() == 10);
  CHECK(run(1, 0.05, 0).size() == 3);  // at least min_nodes
  CHECK(run(1, 1.0, 6).size() == 6);
  CHECK(run(1, 0.5, 0) == run(1, 0.5, 0));
  CHECK(run(1, 0.5, 0) != run(2, 0.5, 0));
  auto s = run(3, 0.5, 0);
  CHECK(std::is_sorted(s.begin(), s.end()));
}

TEST_CASE("coordinator: a restarted core keeps each CURVE key bound to its node id") {
  auto r = resume();
  const auto key3 = std::get<protocol::Register>(reg(3, 10).body).public_key;
  r.key_bindings = {{3, key3}};
  CoordinatorCore core(config(), r);
  Envelope sybil = reg(7, 10);  // node 3's key, registering a second identity
  std::get<protocol::Register>(sybil.body).public_key = key3;
  auto a = core.on_message(1, sybil, key3);
  REQUIRE(a.send.size() == 1);
  CHECK(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code == protocol::ErrorCode::kNotAllowed);
  CHECK_FALSE(a.sender_verified.has_value());
  const auto key9 = std::get<protocol::Register>(reg(9, 10).body).public_key;
  Envelope moved = reg(3, 10);  // node 3 with another (allow-listed) key
  std::get<protocol::Register>(moved.body).public_key = key9;
  a = core.on_message(2, moved, key9);
  REQUIRE(a.send.size() == 1);
  CHECK(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code == protocol::ErrorCode::kNotAllowed);
  CHECK(core.registered_nodes().empty());
  a = core.on_message(3, reg(3, 10), key3);
  CHECK(events_of<NodeRegistered>(a).size() == 1);
  CHECK(a.sender_verified == NodeId{3});
}

TEST_CASE("coordinator: only a message the core verified names its sender for the reply route") {
  // A driver moves a node's reply route to the connection a message came on
  // only when sender_verified says so; a peer that merely claims an id must
  // never get it (issue 16, finding 3).
  CoordinatorCore core(config(), resume());
  const auto key1 = std::get<protocol::Register>(reg(1, 10).body).public_key;
  const auto key2 = std::get<protocol::Register>(reg(2, 10).body).public_key;
  CHECK(core.on_message(0, reg(1, 10), key1).sender_verified == NodeId{1});
  CHECK(core.on_message(1, heartbeat(1), key1).sender_verified == NodeId{1});
  Envelope claim = reg(1, 10);  // key 2 registering as node 1
  std::get<protocol::Register>(claim.body).public_key = key2;
  CHECK_FALSE(core.on_message(2, claim, key2).sender_verified.has_value());
  CHECK_FALSE(core.on_message(3, heartbeat(1), key2).sender_verified.has_value());  // key 2 speaking as node 1
  CHECK_FALSE(core.on_message(4, heartbeat(5)).sender_verified.has_value());        // never registered
  CHECK_FALSE(core.on_message(5, {protocol::kProtocolVersion, 0, 1, protocol::ErrorReply{}}, key1)
                  .sender_verified.has_value());                                       // errors are not checked
  Envelope old_version = heartbeat(1);
  old_version.version = 2;
  CHECK_FALSE(core.on_message(6, old_version, key1).sender_verified.has_value());
  // A round message from the node itself, refused because no round runs: the
  // sender is still the node (its key matches), so its route may follow it.
  CHECK(core.on_message(7, {protocol::kProtocolVersion, 1, 1, protocol::PlainUpdate{}}, key1).sender_verified ==
        NodeId{1});
}

TEST_CASE("coordinator: messages outside a round and from strangers are refused") {
  CoordinatorCore core(config(), resume());
  core.on_message(0, reg(1, 10));
  auto code = [&](const Envelope& e) {
    auto a = core.on_message(1, e);
    REQUIRE(a.send.size() == 1);
    return std::get<protocol::ErrorReply>(a.send[0].envelope.body).code;
  };
  CHECK(code({protocol::kProtocolVersion, 1, 1, protocol::AdvertiseKeysBody{}}) == protocol::ErrorCode::kWrongStage);
  CHECK(code({protocol::kProtocolVersion, 9, 1, protocol::AdvertiseKeysBody{}}) == protocol::ErrorCode::kWrongRound);
  CHECK(code({protocol::kProtocolVersion, 0, 2, protocol::Metrics{}}) == protocol::ErrorCode::kUnknownSender);
  CHECK(code({2, 0, 1, protocol::Heartbeat{}}) == protocol::ErrorCode::kBadVersion);
  CHECK(code({protocol::kProtocolVersion, 0, 1, protocol::RoundPlan{}}) == protocol::ErrorCode::kNotAllowed);
  // Register for another id than the sender.
  Envelope r = reg(5, 10);
  r.sender = 1;
  CHECK(code(r) == protocol::ErrorCode::kNotAllowed);
  // Errors from nodes are never answered.
  CHECK(core.on_message(1, {protocol::kProtocolVersion, 0, 1, protocol::ErrorReply{}}).send.empty());
}
