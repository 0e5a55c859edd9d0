// The coordinator and node cores together: rounds, dropouts at every stage,
// refusals, resume, DP and strategies, over encode()/decode() and a fake clock.
#include <catch2/catch.hpp>

#include "federation/harness.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/common/error.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/opaque.h"

using namespace fedge;
using namespace fedge::testing;
using federation::RoundStage;
using protocol::ErrorCode;

namespace {

// The client id a node's secure-aggregation message names (its `sender` field).
template <class Schema>
std::uint32_t claimed_sender(const protocol::OpaquePart& part) {
  return protocol::PartReader(part).root<Schema>().getSender();
}

// Quantisation error bound of the secure path: each survivor's value is off by
// at most one quantisation step (clip / qmax), divided by the total weight
// (>= 1 here); plus float rounding of the new global (~|global| * 2^-24).
constexpr double kTol = 2e-7;

void check_round_is_fedavg(Net& net, const federation::RoundCompleted& c, const std::vector<float>& before,
                           double clip) {
  const auto& updates = net.trained.at(c.round);
  const auto expected = expected_fedavg(before, updates, c.survivors, clip);
  CHECK(max_abs_diff(c.global, expected) < kTol);
  REQUIRE(c.metrics.count("train_loss"));
  CHECK(c.metrics.at("train_loss") == Approx(expected_loss(updates, c.survivors)).epsilon(1e-5));
  CHECK(c.metrics.at("participants") == static_cast<double>(c.survivors.size()));
}

// Runs the federation to the end, checking each completed round against FedAvg.
void run_and_check(Net& net, double clip, std::size_t rounds = 3) {
  std::vector<float> before = net.coord.global();
  std::size_t seen = 0;
  net.start();
  REQUIRE(net.run_until([&] {
    while (seen < net.completed.size()) {
      check_round_is_fedavg(net, net.completed[seen], before, clip);
      before = net.completed[seen].global;
      ++seen;
    }
    return net.coord.finished() && net.queue.empty();
  }));
  REQUIRE(net.completed.size() == rounds);
  CHECK(net.size_refusals.empty());  // the size caps fit every real message
  for (std::size_t i = 0; i < rounds; ++i) {
    CHECK(net.completed[i].round == i + 1);
    CHECK(net.completed[i].version == i + 1);
  }
  // Every live node installed the final global.
  for (auto& [id, n] : net.nodes) {
    if (net.silent.count(id)) continue;
    REQUIRE(net.models.count(id));
    CHECK(net.models[id].version == rounds);
    CHECK(net.models[id].params == net.coord.global());
  }
}

std::uint16_t body_index_of(const protocol::Body& b) { return static_cast<std::uint16_t>(b.index()); }

}  // namespace

TEST_CASE("secure federation: 3 rounds equal weighted FedAvg of the nodes' updates") {
  Net net(base_config(true), initial_state());
  run_and_check(net, 0.5);
  for (const auto& c : net.completed) {
    CHECK(c.survivors == std::vector<NodeId>{1, 2, 3, 4, 5});
    REQUIRE(c.stats.stages.size() == 4);
    for (const auto& s : c.stats.stages) CHECK(s.dropped() == 0);
    CHECK(c.metrics.at("total_examples") == Approx(1500));
  }
  CHECK(net.failed.empty());
  CHECK(net.coord.global_version() == 3);
}

TEST_CASE("secure federation with AES-256-CTR masks equals weighted FedAvg, the plan carries the generator") {
  if (!privacy::prg_supported(privacy::PrgKind::kAes256Ctr)) {
    WARN("this CPU has no AES instructions: AES-masked rounds cannot run here");
    return;
  }
  auto cfg = base_config(true);
  cfg.secagg_prg = privacy::PrgKind::kAes256Ctr;
  Net net(cfg, initial_state());
  run_and_check(net, 0.5);
  int plans = 0;
  for (const auto& e : net.events) {
    if (const auto* s = std::get_if<federation::RoundStarted>(&e)) {
      CHECK(federation::wire::secure_settings(s->plan).params.prg == privacy::PrgKind::kAes256Ctr);
      ++plans;
    }
  }
  CHECK(plans == 3);
}

TEST_CASE("plain federation: 3 rounds equal weighted FedAvg") {
  Net net(base_config(false), initial_state());
  run_and_check(net, 0.5);
  for (const auto& c : net.completed) {
    REQUIRE(c.stats.stages.size() == 1);
    CHECK(c.stats.stages[0].stage == RoundStage::kPlainUpdate);
  }
}

TEST_CASE("updates beyond clip_range are clipped elementwise before weighting") {
  auto cfg = base_config(true);
  cfg.clip_range = 0.01;  // smaller than most update values
  Net net(cfg, initial_state());
  run_and_check(net, 0.01);
}

TEST_CASE("a node that drops at any secure stage: the round completes with the survivors") {
  // Body index of the message the node never sends: advertiseKeys (covers
  // training), shareKeys, maskedInput, unmaskResponse.
  const std::uint16_t stage_body = GENERATE(4, 6, 8, 10);
  CAPTURE(stage_body);
  Net net(base_config(true), initial_state());
  net.drop_when = [&](Net&, NodeId from, const Envelope& env) {
    return from == 2 && env.round == 1 && body_index_of(env.body) == stage_body;
  };
  run_and_check(net, 0.5);
  const auto& first = net.completed[0];
  if (stage_body == 10) {
    // Its masked input is in the sum; the others' shares unmask it.
    CHECK(first.survivors == std::vector<NodeId>{1, 2, 3, 4, 5});
  } else {
    CHECK(first.survivors == std::vector<NodeId>{1, 3, 4, 5});
    CHECK(first.metrics.at("dropped") == 1);
  }
  // The stage where it went missing counts one dropout.
  std::uint32_t dropped = 0;
  for (const auto& s : first.stats.stages) dropped += s.dropped();
  CHECK(dropped == 1);
  // It never answers again, so it is in no later result.
  for (std::size_t i = 1; i < net.completed.size(); ++i)
    CHECK(std::find(net.completed[i].survivors.begin(), net.completed[i].survivors.end(), 2u) ==
          net.completed[i].survivors.end());
}

TEST_CASE("a secure round tells exactly the nodes whose update is in the sum (SCAFFOLD's c_i waits for it)") {
  // Node 2 goes silent instead of sending its masked input (8: not in the
  // sum) or its unmask response (10: in the sum, unmasked by the others).
  const std::uint16_t stage_body = GENERATE(8, 10);
  CAPTURE(stage_body);
  Net net(base_config(true), initial_state());
  net.drop_when = [&](Net&, NodeId from, const Envelope& env) {
    return from == 2 && env.round == 1 && body_index_of(env.body) == stage_body;
  };
  run_and_check(net, 0.5);
  for (NodeId id : {1u, 3u, 4u, 5u}) CHECK(net.summed[id] == std::vector<std::uint64_t>{1, 2, 3});
  const bool in_sum = std::count(net.completed[0].survivors.begin(), net.completed[0].survivors.end(), 2u) == 1;
  CHECK(in_sum == (stage_body == 10));
  CHECK(net.summed[2] == (in_sum ? std::vector<std::uint64_t>{1} : std::vector<std::uint64_t>{}));

  // Plain rounds say nothing of the kind.
  Net plain(base_config(false), initial_state());
  run_and_check(plain, 0.5);
  CHECK(plain.summed.empty());
}

TEST_CASE("a stage that waits only on silent nodes closes at their liveness timeout, not its deadline") {
  const std::uint16_t stage_body = GENERATE(4, 6, 8, 10);  // as above: the message node 2 never sends
  CAPTURE(stage_body);
  auto cfg = base_config(true);
  cfg.rounds = 1;
  cfg.deadlines = {600000, 600000, 600000, 600000, 600000};  // ten minutes per stage
  Net net(cfg, initial_state());
  net.drop_when = [&](Net&, NodeId from, const Envelope& env) {
    return from == 2 && body_index_of(env.body) == stage_body;  // and silent from then on: no heartbeats
  };
  net.start();
  const std::int64_t t0 = net.now;
  REQUIRE(net.run_to_finish(60000));  // liveness timeout 5 s: well before any deadline
  CHECK(net.now - t0 < 30000);
  REQUIRE(net.completed.size() == 1);
  CHECK(std::count_if(net.events.begin(), net.events.end(), [](const federation::CoordinatorEvent& e) {
          const auto* lost = std::get_if<federation::NodeLost>(&e);
          return lost && lost->node == 2;
        }) == 1);
}

TEST_CASE("plain round: a node that never sends its update is a dropout") {
  Net net(base_config(false), initial_state());
  net.drop_when = [&](Net&, NodeId from, const Envelope& env) {
    return from == 4 && std::holds_alternative<protocol::PlainUpdate>(env.body);
  };
  run_and_check(net, 0.5);
  CHECK(net.completed[0].survivors == std::vector<NodeId>{1, 2, 3, 5});
}

TEST_CASE("too many dropouts fail the attempt, the next attempt of the same round succeeds") {
  Net net(base_config(true), initial_state());
  // In attempt 1 of round 1 three masked inputs are lost (threshold is 3 of 5).
  net.discard = [&](Net& n, NodeId from, const Envelope& env) {
    return env.round == 1 && n.coord.current_attempt() == 1 && from <= 3 &&
           std::holds_alternative<protocol::MaskedInputBody>(env.body);
  };
  run_and_check(net, 0.5);
  REQUIRE(net.failed.size() == 1);
  CHECK(net.failed[0].round == 1);
  CHECK(net.failed[0].attempt == 1);
  CHECK_FALSE(net.failed[0].reason.empty());
  CHECK(net.completed[0].round == 1);
  CHECK(net.completed[0].attempt == 2);
  CHECK(net.completed[0].version == 1);
  // The failed attempt's started event and the retry's carry the same round id.
  std::vector<std::pair<std::uint64_t, std::uint32_t>> starts;
  for (const auto& e : net.events)
    if (auto* s = std::get_if<federation::RoundStarted>(&e)) starts.push_back({s->round, s->attempt});
  CHECK(starts == std::vector<std::pair<std::uint64_t, std::uint32_t>>{{1, 1}, {1, 2}, {2, 1}, {3, 1}});
}

TEST_CASE("a late message from a failed attempt does not count in the retry of the same round") {
  Net net(base_config(true), initial_state());
  std::optional<Envelope> late;  // node 4's advertiseKeys of attempt 1
  net.discard = [&](Net& n, NodeId from, const Envelope& env) {
    const bool advertise = std::holds_alternative<protocol::AdvertiseKeysBody>(env.body);
    if (env.round == 1 && advertise && from == 4) {
      if (env.attempt == 1) late = env;
      // Attempt 2: the stale copy arrives first, as a slow network would deliver it.
      if (env.attempt == 2 && late) n.queue.push_back({0, 4, protocol::encode(*late)});
    }
    // Attempt 1 fails: three masked inputs are lost (threshold 3 of 5).
    return env.round == 1 && env.attempt == 1 && from <= 3 && std::holds_alternative<protocol::MaskedInputBody>(env.body);
  };
  run_and_check(net, 0.5);
  REQUIRE(late);
  CHECK(late->attempt == 1);
  REQUIRE(net.failed.size() == 1);
  CHECK(net.completed[0].attempt == 2);
  // The stale message was refused as another attempt's; node 4's own counted.
  CHECK(std::count(net.errors_to[4].begin(), net.errors_to[4].end(), ErrorCode::kWrongRound) == 1);
  CHECK(net.completed[0].survivors == std::vector<NodeId>{1, 2, 3, 4, 5});
}

TEST_CASE("wrong-round, out-of-order, duplicate, late and unselected messages are refused, the round completes") {
  auto cfg = base_config(true);
  cfg.max_nodes = 4;  // one of the five is not selected
  Net net(cfg, initial_state());
  // One selected node never trains, so the advertise stage stays open until its deadline.
  std::optional<NodeId> sleeper;
  net.drop_when = [&](Net& n, NodeId from, const Envelope& env) {
    if (!std::holds_alternative<protocol::AdvertiseKeysBody>(env.body) || env.round != 1) return false;
    if (!sleeper) sleeper = from;
    (void)n;
    return from == *sleeper;
  };
  net.start();
  REQUIRE(net.run_until([&] {
    return net.coord.stage() == RoundStage::kAdvertiseKeys && net.queue.empty() && net.trainings.empty() && sleeper;
  }));
  const auto& plan = std::get<federation::RoundStarted>(*std::find_if(net.events.begin(), net.events.end(), [](auto& e) {
                       return std::holds_alternative<federation::RoundStarted>(e);
                     })).plan;
  NodeId unselected = 0;
  for (NodeId id = 1; id <= 5; ++id)
    if (std::find(plan.selected.begin(), plan.selected.end(), id) == plan.selected.end()) unselected = id;
  REQUIRE(unselected != 0);
  NodeId awake = 0;
  for (NodeId id : plan.selected)
    if (id != *sleeper) awake = id;

  auto refusal = [&](const Envelope& env) {
    auto a = net.coord.on_message(net.now, env, node_key(env.sender));
    REQUIRE(a.send.size() == 1);
    CHECK(a.send[0].to == env.sender);
    const auto* e = std::get_if<protocol::ErrorReply>(&a.send[0].envelope.body);
    REQUIRE(e != nullptr);
    CHECK(e->in_reply_to == env.body.index());
    // The only event is the refusal itself, for the driver to log.
    REQUIRE(a.events.size() == 1);
    const auto* refused = std::get_if<federation::MessageRefused>(&a.events[0]);
    REQUIRE(refused != nullptr);
    CHECK(refused->node == env.sender);
    CHECK(refused->code == e->code);
    CHECK(refused->why == e->message);
    return e->code;
  };
  // Crafted messages name the running attempt (1), so each refusal below is for the reason it tests.
  Envelope ak{protocol::kProtocolVersion, 1, unselected, federation::wire::to_wire(aggregation::AdvertiseKeys{1, 0, node_key(1), node_key(2)}), 1};
  CHECK(refusal(ak) == ErrorCode::kNotAllowed);
  ak.sender = awake;
  ak.round = 7;
  CHECK(refusal(ak) == ErrorCode::kWrongRound);
  // Its real AdvertiseKeys was accepted already: a replay is a duplicate.
  const auto accepted = std::find_if(net.to_coord_log.begin(), net.to_coord_log.end(), [&](const Envelope& e) {
    return e.sender == awake && std::holds_alternative<protocol::AdvertiseKeysBody>(e.body);
  });
  REQUIRE(accepted != net.to_coord_log.end());
  CHECK(refusal(*accepted) == ErrorCode::kDuplicate);
  Envelope masked{protocol::kProtocolVersion, 1, awake,
                  federation::wire::to_wire(aggregation::MaskedInput{1, 1, std::vector<std::uint32_t>(kDim + 2)}), 1};
  CHECK(refusal(masked) == ErrorCode::kWrongStage);
  Envelope hb{protocol::kProtocolVersion, 0, 99, protocol::Heartbeat{}};
  CHECK(refusal(hb) == ErrorCode::kUnknownSender);
  Envelope model{protocol::kProtocolVersion, 0, awake, protocol::GlobalModel{}};
  CHECK(refusal(model) == ErrorCode::kNotAllowed);
  // A connection authenticated as another node cannot speak for this one.
  {
    auto a = net.coord.on_message(net.now, *accepted, node_key(unselected));
    REQUIRE(a.send.size() == 1);
    CHECK(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code == ErrorCode::kNotAllowed);
  }
  CHECK(net.coord.stage() == RoundStage::kAdvertiseKeys);

  // Past the advertise deadline the sleeper's keys are late.
  REQUIRE(net.run_until([&] { return net.coord.stage() != RoundStage::kAdvertiseKeys; }));
  Envelope late{protocol::kProtocolVersion, 1, *sleeper, federation::wire::to_wire(aggregation::AdvertiseKeys{1, 0, node_key(3), node_key(4)}), 1};
  CHECK(refusal(late) == ErrorCode::kDeadlineMissed);

  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 3);
  const auto& first = net.completed[0];
  CHECK(first.survivors.size() == 3);
  CHECK(max_abs_diff(first.global, expected_fedavg(initial_state().global, net.trained.at(1), first.survivors, 0.5)) <
        kTol);
  CHECK(first.stats.errors_sent >= 5);
}

TEST_CASE("Register with a key other than the authenticated one is refused") {
  Net net(base_config(true), initial_state());
  Envelope reg{protocol::kProtocolVersion, 0, 3,
               protocol::Register{3, "node3", node_key(3), {"cpu", 300, "tiny", 1, 0}}};
  auto a = net.coord.on_message(0, reg, node_key(4));
  REQUIRE(a.send.size() == 1);
  CHECK(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code == ErrorCode::kNotAllowed);
  CHECK(net.coord.registered_nodes().empty());
  // The right key registers; without CURVE (no key) registration is accepted too.
  a = net.coord.on_message(0, reg, node_key(3));
  CHECK(std::holds_alternative<protocol::RegisterAck>(a.send.at(0).envelope.body));
  CHECK(std::holds_alternative<protocol::GlobalModel>(a.send.at(1).envelope.body));
  REQUIRE(a.events.size() == 1);
  CHECK_FALSE(std::get<federation::NodeRegistered>(a.events[0]).known);
  // Re-registration (a restarted node) is fine and says so.
  a = net.coord.on_message(10, reg, node_key(3));
  CHECK(std::get<federation::NodeRegistered>(a.events.at(0)).known);
  CHECK(net.coord.registered_nodes() == std::vector<NodeId>{3});
  // Another allow-listed node cannot take over id 3 by registering it with its own key.
  Envelope hijack = reg;
  std::get<protocol::Register>(hijack.body).public_key = node_key(4);
  a = net.coord.on_message(20, hijack, node_key(4));
  REQUIRE(a.send.size() == 1);
  CHECK(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code == ErrorCode::kNotAllowed);
  REQUIRE(a.events.size() == 1);  // no NodeRegistered: only the refusal, for the driver's log
  CHECK(std::get<federation::MessageRefused>(a.events[0]).message == "register");
  // And node 3's own messages still pass.
  Envelope hb{protocol::kProtocolVersion, 0, 3, protocol::Heartbeat{}};
  CHECK(net.coord.on_message(30, hb, node_key(3)).send.empty());
}

TEST_CASE("a coordinator resumed from ResumeState continues with the next round and version") {
  ResumeState resume = initial_state();
  resume.next_round = 3;
  resume.global_version = 2;
  for (auto& v : resume.global) v += 0.25F;
  auto cfg = base_config(true);
  cfg.rounds = 4;
  Net net(cfg, resume);
  std::vector<float> before = net.coord.global();
  net.start();
  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 2);
  CHECK(net.completed[0].round == 3);
  CHECK(net.completed[0].version == 3);
  CHECK(net.completed[1].round == 4);
  CHECK(net.completed[1].version == 4);
  check_round_is_fedavg(net, net.completed[0], before, 0.5);
  CHECK(std::holds_alternative<federation::FederationFinished>(net.events.back()));
  CHECK(std::get<federation::FederationFinished>(net.events.back()).rounds == 4);
}

TEST_CASE("a resumed coordinator replays the DP history into its accountant") {
  ResumeState resume = initial_state();
  resume.next_round = 3;
  resume.global_version = 2;
  resume.dp_history = {{1, 1.1, 1.0, 1, 0, 1e-5}, {2, 1.1, 1.0, 1, 0, 1e-5}};
  auto cfg = base_config(true);
  cfg.rounds = 3;
  cfg.dp = {protocol::DpMode::kCentral, 1.0, 1.1, 1e-5};
  CoordinatorCore core(cfg, resume);
  privacy::RdpAccountant ref;
  ref.step(1.0, 1.1, 1);
  ref.step(1.0, 1.1, 1);
  CHECK(core.epsilon() == Approx(ref.spent(1e-5).epsilon));
  CHECK(core.epsilon() > 0);
}

TEST_CASE("DP runs (central and distributed), epsilon grows every round") {
  const auto mode = GENERATE(protocol::DpMode::kCentral, protocol::DpMode::kDistributed);
  auto cfg = base_config(true);
  cfg.dp = {mode, 1.0, 1.0, 1e-5};
  Net net(cfg, initial_state());
  net.start();
  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 3);
  double last = 0;
  for (const auto& c : net.completed) {
    REQUIRE(c.dp.has_value());
    CHECK(c.dp->round == c.round);
    CHECK(c.dp->sampling_rate == 1.0);
    // Central: the coordinator adds all of it. Distributed: each node adds
    // 1/t of the target variance (t = 3), and all 5 survived.
    const double charged = mode == protocol::DpMode::kCentral ? 1.0 : std::sqrt(5.0 / 3.0);
    CHECK(c.survivors.size() == 5);
    CHECK(c.dp->noise_multiplier == Approx(charged).epsilon(1e-9));
    CHECK(c.metrics.at("epsilon") > last);
    last = c.metrics.at("epsilon");
    CHECK(c.metrics.count("train_loss") == 0);  // not reported under DP
    for (float v : c.global) REQUIRE(std::isfinite(v));
  }
  CHECK(net.coord.epsilon() == Approx(last));
  // The noise is there: the result is not the noiseless FedAvg.
  const auto exact = expected_fedavg(initial_state().global, net.trained.at(1), net.completed[0].survivors, 0.5);
  CHECK(max_abs_diff(net.completed[0].global, exact) > 1e-3);
}

TEST_CASE("FedAdam works under secure aggregation") {
  auto cfg = base_config(true);
  cfg.strategy = "fedadam";
  Net net(cfg, initial_state());
  net.start();
  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 3);
  // Same server optimiser fed the exact weighted sums gives the same globals.
  auto ref = aggregation::make_strategy("fedadam", {}, true);
  std::vector<float> g = initial_state().global;
  // FedAdam's first steps are about eta * sign(mean update): a coordinate whose
  // mean is within quantisation error of 0 may land elsewhere, so allow a few.
  for (const auto& c : net.completed) {
    const auto exact = expected_fedavg(g, net.trained.at(c.round), c.survivors, 0.5);
    std::vector<float> mean(g.size());
    for (std::size_t j = 0; j < g.size(); ++j) mean[j] = static_cast<float>(exact[j] - g[j]);
    g = ref->aggregate_sum(g, mean, 1.0);
    std::size_t off = 0;
    for (std::size_t j = 0; j < g.size(); ++j) off += std::abs(c.global[j] - g[j]) > 1e-4;
    CHECK(off <= 3);
    g = c.global;
  }
}

TEST_CASE("a resumed FedAdam coordinator continues from the saved server moments") {
  auto cfg = base_config(false);
  cfg.strategy = "fedadam";
  Net whole(cfg, initial_state());
  whole.start();
  REQUIRE(whole.run_to_finish());
  REQUIRE(whole.completed.size() == 3);
  const auto& second = whole.completed[1];
  REQUIRE(second.strategy_state.count("m") == 1);
  REQUIRE(second.strategy_state.count("v") == 1);

  // Restart after round 2 with the state saved with version 2: round 3 comes out the same.
  ResumeState resume = initial_state();
  resume.next_round = 3;
  resume.global_version = 2;
  resume.global = second.global;
  resume.strategy_state = second.strategy_state;
  Net resumed(cfg, resume);
  resumed.start();
  REQUIRE(resumed.run_to_finish());
  REQUIRE(resumed.completed.size() == 1);
  CHECK(resumed.completed[0].global == whole.completed[2].global);

  // Without it, the moments restart from zero and round 3 differs.
  resume.strategy_state.clear();
  Net forgetful(cfg, resume);
  forgetful.start();
  REQUIRE(forgetful.run_to_finish());
  const auto& remembered = whole.completed[2].global;
  CHECK(max_abs_diff(forgetful.completed[0].global, std::vector<double>(remembered.begin(), remembered.end())) > 1e-3);

  // A state of the wrong length is refused.
  resume.strategy_state = {{"m", {1.0}}, {"v", {1.0}}};
  CHECK_THROWS_WITH(CoordinatorCore(cfg, resume), Catch::Contains("resume.strategy_state"));
}

TEST_CASE("a robust strategy with secure aggregation is refused at construction") {
  auto cfg = base_config(true);
  cfg.strategy = "krum";
  try {
    CoordinatorCore core(cfg, initial_state());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    CHECK_THAT(std::string(e.what()), Catch::Contains("strategy") && Catch::Contains("krum"));
  }
  // Without secure aggregation the robust strategy runs on individual updates.
  cfg = base_config(false);
  cfg.strategy = "fedmedian";
  Net net(cfg, initial_state());
  net.start();
  REQUIRE(net.run_to_finish());
  CHECK(net.completed.size() == 3);
}

TEST_CASE("node metrics are reported as means in the next round event") {
  Net net(base_config(true), initial_state());
  net.start();
  REQUIRE(net.run_until([&] { return net.completed.size() == 1; }));
  for (NodeId id = 1; id <= 5; ++id) net.apply(id, net.nodes.at(id).send_metrics(net.now, {{"eval_loss", 1.0 * id}}));
  while (net.deliver_one()) {
  }
  // Non-finite values, and names beyond the first 64 distinct ones, are dropped.
  Envelope junk{protocol::kProtocolVersion, 0, 1, protocol::Metrics{{{"bad", std::nan("")}}}};
  for (int i = 0; i < 100; ++i)
    std::get<protocol::Metrics>(junk.body).entries.push_back({"m" + std::to_string(i), 1.0});
  net.apply(net.coord.on_message(net.now, junk, node_key(1)));
  REQUIRE(net.run_until([&] { return net.completed.size() == 2; }));
  CHECK(net.completed[1].metrics.at("node/eval_loss") == Approx(3.0));
  CHECK(net.completed[1].metrics.count("node/bad") == 0);
  std::size_t node_names = 0;
  for (const auto& [name, v] : net.completed[1].metrics) node_names += name.rfind("node/", 0) == 0;
  CHECK(node_names == 64);
  CHECK(net.completed[0].metrics.count("node/eval_loss") == 0);
}

TEST_CASE("a secure round of 3 with a dropout fails instead of finishing with 2 survivors (issue 16 finding 5)") {
  // Parameters chosen by choose_secagg_params: for 3 nodes it picked t = 2,
  // so the 2 survivors' sum showed each the other's update.
  auto cfg = base_config(true);
  cfg.secagg_degree = 0;
  cfg.secagg_threshold = 0;
  cfg.expected_dropout = 0.001;
  cfg.failure_probability = 0.5;
  cfg.rounds = 1;
  Net net(cfg, initial_state(), 3);
  net.drop_when = [](Net&, NodeId from, const Envelope& env) {
    return from == 3 && std::holds_alternative<protocol::MaskedInputBody>(env.body);
  };
  net.start();
  REQUIRE(net.run_until([&] { return !net.failed.empty() || !net.completed.empty(); }));
  CHECK(net.completed.empty());
  REQUIRE(net.failed.size() == 1);
  CHECK_THAT(net.failed[0].reason, Catch::Contains("2 masked inputs arrived, fewer than threshold 3"));
}

TEST_CASE("secure federation over a sparse SecAgg+ graph (degree < n-1) equals weighted FedAvg") {
  auto cfg = base_config(true);
  cfg.secagg_degree = 2;
  cfg.secagg_threshold = 3;  // all 3 share holders: a round never finishes with 2 survivors
  cfg.secret_seed.reset();
  for (int nodes : {3, 4, 5, 6}) {
    INFO(nodes << " nodes");
    cfg.min_nodes = nodes;
    Net net(cfg, initial_state(), nodes);
    net.shuffle = true;
    run_and_check(net, 0.5);
    CHECK(net.failed.empty());
    CHECK(net.coord.global_version() == 3);
  }
}

// Regression: choose_secagg_params once set the PRG to ChaCha20 while clients
// assumed AES-CTR, so the server removed self-masks with the wrong stream.
TEST_CASE("secure federation with chosen SecAgg+ parameters and default ranges") {
  auto cfg = base_config(true);
  cfg.secagg_degree = 0;
  cfg.secagg_threshold = 0;
  cfg.expected_dropout = 0.001;  // a round of 3 needs all 3 (t = 3): 1% dropout does not fit
  cfg.failure_probability = 0.01;
  cfg.corrupt_fraction = 0.0;
  cfg.clip_range = 1.0;
  cfg.secret_seed.reset();  // any graph seed must work
  for (int nodes : {3, 4, 6}) {
    INFO(nodes << " nodes");
    cfg.min_nodes = nodes;
    Net net(cfg, initial_state(), nodes);
    net.shuffle = true;
    run_and_check(net, 1.0);
    CHECK(net.failed.empty());
  }
}

TEST_CASE("SecAgg+ with chosen parameters: 40 nodes, half selected per round, one dropout each round") {
  auto cfg = base_config(true);
  cfg.secagg_degree = 0;  // choose_secagg_params picks a sparse graph
  cfg.secagg_threshold = 0;
  cfg.fraction = 0.5;
  cfg.expected_dropout = 0.05;
  cfg.corrupt_fraction = 0.1;
  cfg.failure_probability = 1e-3;
  Net net(cfg, initial_state(), 40);
  // In every round the lowest selected node loses its masked input.
  net.discard = [&](Net& n, NodeId from, const Envelope& env) {
    if (!std::holds_alternative<protocol::MaskedInputBody>(env.body)) return false;
    return n.coord.current_plan() && from == n.coord.current_plan()->selected.front();
  };
  std::vector<float> before = net.coord.global();
  net.start();
  REQUIRE(net.run_to_finish());
  REQUIRE(net.completed.size() == 3);
  for (const auto& c : net.completed) {
    CHECK(c.survivors.size() == 19);
    CHECK(c.metrics.at("selected") == 20);
    check_round_is_fedavg(net, c, before, 0.5);
    before = c.global;
  }
  const auto started = std::find_if(net.events.begin(), net.events.end(), [](const auto& e) {
    return std::holds_alternative<federation::RoundStarted>(e);
  });
  const auto& plan = std::get<federation::RoundStarted>(*started).plan;
  const auto secure = federation::wire::secure_settings(plan).params;
  CHECK(secure.degree < 19);  // a sparse SecAgg+ graph, not the complete one
  CHECK(secure.threshold > (secure.degree + 1) / 2);
}

TEST_CASE("tampered secure-aggregation messages are refused as malformed and change nothing") {
  Net net(base_config(true), initial_state());
  std::vector<ErrorCode> codes;
  // Before each real message of stages 2-4, the same node sends a tampered copy.
  net.discard = [&](Net& n, NodeId from, const Envelope& env) {
    Envelope bad = env;
    namespace wire = federation::wire;
    if (auto* sk = std::get_if<protocol::ShareKeysBody>(&bad.body)) {
      auto m = wire::from_wire(*sk, env.round, claimed_sender<protocol::wire::ShareKeys>(sk->part));
      m.sender = m.sender % 5 + 1;  // claims another client id
      bad.body = wire::to_wire(m);
    } else if (auto* mi = std::get_if<protocol::MaskedInputBody>(&bad.body)) {
      auto m = wire::from_wire(*mi, env.round, claimed_sender<protocol::wire::MaskedInput>(mi->part), kDim + 2);
      m.masked.pop_back();  // one element short
      bad.body = wire::to_wire(m);
    } else if (auto* ur = std::get_if<protocol::UnmaskResponseBody>(&bad.body)) {
      auto m = wire::from_wire(*ur, env.round, claimed_sender<protocol::wire::UnmaskResponse>(ur->part));
      auto& shares = m.self_mask_shares.empty() ? m.key_shares : m.self_mask_shares;
      if (shares.empty()) return false;
      shares[0].share.y.push_back(1);  // a share of the wrong size
      bad.body = wire::to_wire(m);
    } else {
      return false;
    }
    auto a = n.coord.on_message(n.now, bad, node_key(from));
    REQUIRE(a.send.size() == 1);
    codes.push_back(std::get<protocol::ErrorReply>(a.send[0].envelope.body).code);
    return false;
  };
  run_and_check(net, 0.5);
  for (const auto& c : net.completed) CHECK(c.survivors.size() == 5);
  CHECK(codes.size() == 3 * 5 * 3);
  CHECK(std::all_of(codes.begin(), codes.end(), [](ErrorCode c) { return c == ErrorCode::kMalformed; }));
}
