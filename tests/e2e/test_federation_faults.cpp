// Fault tests with real processes: nodes dying at each secure-aggregation
// stage, a coordinator killed mid-round and restarted, a node off the
// allow-list, and hostile bytes from an allow-listed peer.
#include <catch2/catch.hpp>

#include <csignal>

#include "e2e/federation_harness.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/common/safetensors.h"
#include "fedge/coordinator/store.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/transport.h"

namespace {

using namespace std::chrono_literals;
using fedge::testing::FederationHarness;
using fedge::testing::Process;
namespace fs = std::filesystem;
namespace protocol = fedge::protocol;
namespace aggregation = fedge::aggregation;
namespace wire = fedge::federation::wire;

std::string federation(int rounds, int min_nodes, const std::string& deadlines, int startup_nodes = 0) {
  return "rounds = " + std::to_string(rounds) + "\nmin_nodes = " + std::to_string(min_nodes) +
         "\nstartup_nodes = " + std::to_string(startup_nodes) +
         "\nheartbeat_interval_ms = 200\nliveness_timeout_ms = 1500\nretry_delay_ms = 300\n"
         "[federation.train]\nlocal_steps = 3\nlearning_rate = 0.01\nbatch_size = 4\n"
         "[federation.deadlines]\n" + deadlines +
         "\n[federation.secagg]\nexpected_dropout = 0.05\nfailure_probability = 0.99\ncorrupt_fraction = 0.0\n"
         "clip_range = 4.0\n";
}

// The global of `round` must be the previous one plus the example-weighted
// mean of exactly these nodes' saved updates.
void check_fedavg(const FederationHarness& h, std::uint64_t round, const std::vector<int>& included) {
  INFO("round " << round);
  CHECK(fedge::testing::compare_with_fedavg(h, round, included).worst < 1e-6);
}

// Replays `strategy` over the nodes' saved updates from version 0: each global
// must be the server optimiser's step from the previous one, with moments
// carried across every round (and so across a coordinator restart). A restart
// that forgot them would move most coordinates by a different step.
void check_server_optimizer(const FederationHarness& h, const std::string& strategy, std::uint64_t rounds,
                            const std::vector<int>& included) {
  auto replay = fedge::aggregation::make_strategy(strategy, {}, true);
  for (std::uint64_t round = 1; round <= rounds; ++round) {
    INFO("round " << round);
    const auto files = fedge::testing::load_round(h, round, included);
    const auto& before = files.before;
    const auto& after = files.after;
    const auto mean_applied = fedge::testing::fedavg(before, files.updates, files.weights);
    std::vector<float> mean(before.size());
    for (std::size_t j = 0; j < mean.size(); ++j) mean[j] = mean_applied[j] - before.values()[j];
    const auto expected = replay->aggregate_sum(before.values(), mean, 1.0);
    // Quantisation in the secure sum moves a near-zero mean coordinate's
    // sign now and then; FedAdam's early steps are about eta * sign.
    std::size_t off = 0;
    for (std::size_t j = 0; j < expected.size(); ++j) off += std::abs(expected[j] - after.values()[j]) > 1e-4;
    CHECK(off <= expected.size() / 1000 + 3);
  }
}

// A test peer on its own CurveZMQ connection, holding the harness's key of
// node `key_of` (allow-listed), whatever node id it then claims.
struct Peer {
  protocol::Context ctx;
  protocol::Dealer dealer;
  protocol::Key32 key;

  Peer(const FederationHarness& h, int key_of)
      : dealer(ctx, h.endpoint(), {},
               protocol::CurveClient{
                   protocol::load_key_pair(h.root() / ("keys/node" + std::to_string(key_of) + ".key")),
                   protocol::load_public_key(h.root() / "keys/coordinator.pub")}),
        key(protocol::z85_to_key(protocol::load_public_key(h.root() / ("keys/node" + std::to_string(key_of) + ".pub")),
                                 "node key")) {}

  // Sends a Register for `id` with this peer's key (and no training data, so
  // it is never selected).
  void send_register(protocol::NodeId id) {
    protocol::Envelope env;
    env.sender = id;
    env.body = protocol::Register{id, "peer", key, {"cpu", 0, "m", 1, 0}};
    dealer.send(protocol::encode(env));
  }
  // The coordinator's first answer to a Register for `id`.
  protocol::Envelope register_as(protocol::NodeId id) {
    send_register(id);
    const auto reply = dealer.recv(10s);
    REQUIRE(reply);
    return protocol::decode(*reply, protocol::Limits{});
  }
};

// The refusal's text, or a note that the answer was no refusal.
std::string refusal(const protocol::Envelope& env) {
  const auto* error = std::get_if<protocol::ErrorReply>(&env.body);
  if (error == nullptr) return std::string("(not refused: ") + std::string(protocol::body_name(env.body)) + ")";
  return error->code == protocol::ErrorCode::kNotAllowed ? error->message : "(wrong code) " + error->message;
}

bool acknowledged(const protocol::Envelope& env) { return std::holds_alternative<protocol::RegisterAck>(env.body); }

std::string logs(const std::vector<std::unique_ptr<Process>>& procs) {
  std::string out;
  for (const auto& p : procs) out += p->log_path().filename().string() + ":\n" + p->log_text() + "\n";
  return out;
}

}  // namespace

TEST_CASE("federation: a node dying at each secure-aggregation stage leaves a round of survivors", "[e2e][long]") {
  // 7 nodes, so that round 4 has 4: a round of 3 needs all 3 to unmask
  // (threshold 3, since a secure round never finishes with 2 survivors).
  // Each round waits out one stage deadline for its dead node: 2 s each
  // (ctest runs this test alone, so the live nodes answer well within it).
  FederationHarness h(7);
  auto coordinator = h.start_coordinator(
      federation(4, 3, "train_ms = 20000\nadvertise_keys_ms = 2000\nshare_keys_ms = 2000\nmasked_input_ms = 2000\n"
                       "unmask_ms = 2000",
                 /*startup_nodes=*/7));
  // Node 7 dies before advertising keys in round 1, node 6 before sharing
  // keys in round 2, node 5 before its masked input in round 3, node 4 before
  // unmasking in round 4 (after its masked input: it stays in that sum).
  const std::map<int, std::string> death = {{7, "advertiseKeys@1"}, {6, "shareKeys@2"}, {5, "maskedInput@3"},
                                            {4, "unmaskResponse@4"}};
  std::vector<std::unique_ptr<Process>> nodes;
  for (int id = 1; id <= 7; ++id) {
    std::string extra = "exit_after_versions = 4\n";
    if (death.count(id)) extra += "debug_exit_before = \"" + death.at(id) + "\"\n";
    nodes.push_back(h.start_node(id, extra));
  }
  const auto rc = coordinator->wait_for_exit(300s);
  INFO("coordinator log:\n" << coordinator->log_text() << logs(nodes));
  REQUIRE(rc == 0);
  for (int id = 1; id <= 7; ++id) CHECK(nodes[id - 1]->wait_for_exit(30s) == (death.count(id) ? 99 : 0));

  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  REQUIRE(store.last_completed_round() == 4);
  const std::map<std::uint64_t, std::vector<int>> included = {
      {1, {1, 2, 3, 4, 5, 6}}, {2, {1, 2, 3, 4, 5}}, {3, {1, 2, 3, 4}}, {4, {1, 2, 3, 4}}};
  for (const auto& [round, ids] : included) {
    const auto record = store.completed_round(round);
    REQUIRE(record);
    CHECK(record->survivors == ids.size());
    check_fedavg(h, round, ids);
  }
}

TEST_CASE("federation: a coordinator killed mid-round restarts and finishes without losing or repeating a round",
          "[e2e][long]") {
  // FedAdam: the server moments saved with version 1 must carry over the
  // restart, and replaying the nodes' saved updates through FedAdam from each
  // stored version must give the next one (check_server_optimizer), which a
  // resume from a wrong global or lost moments would fail. A FedAvg run of its
  // own (the sums are checked exactly in test_federation_e2e.cpp) cost ctest's
  // serial tail a second federation.
  const std::string strategy = "fedadam";
  FederationHarness h(4);
  const std::string fed = "strategy = \"" + strategy + "\"\n" + federation(3, 4, "train_ms = 30000");
  auto coordinator = h.start_coordinator(fed);
  std::vector<std::unique_ptr<Process>> nodes;
  for (int id = 1; id <= 4; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 3\n"));

  // Kill it (SIGKILL: no clean-up) while round 2 runs.
  const bool in_round_2 = fedge::testing::eventually(
      [&] {
        auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
        const auto running = store.running_round();
        return running && running->round == 2;
      },
      120s, 10ms);
  INFO("coordinator log:\n" << coordinator->log_text());
  REQUIRE(in_round_2);
  coordinator->signal(SIGKILL);
  REQUIRE(coordinator->wait_for_exit(10s) == 128 + SIGKILL);

  auto restarted = h.start_coordinator(fed, h.endpoint());
  const auto rc = restarted->wait_for_exit(240s);
  INFO("restarted coordinator log:\n" << restarted->log_text() << logs(nodes));
  REQUIRE(rc == 0);
  for (auto& n : nodes) CHECK(n->wait_for_exit(30s) == 0);

  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  CHECK(store.last_completed_round() == 3);
  std::vector<std::uint64_t> versions;
  for (const auto& v : store.adapter_versions()) versions.push_back(v.version);
  CHECK(versions == std::vector<std::uint64_t>{0, 1, 2, 3});  // none lost, none twice
  const auto attempts = store.round_attempts(2);
  REQUIRE(attempts.size() >= 2);
  CHECK(attempts.front().state == fedge::coordinator::RoundState::kAbandoned);
  CHECK(attempts.back().state == fedge::coordinator::RoundState::kCompleted);
  for (std::uint64_t r : {1, 3}) {
    std::size_t completed = 0;
    for (const auto& a : store.round_attempts(r)) completed += a.state == fedge::coordinator::RoundState::kCompleted;
    CHECK(completed == 1);
  }
  check_server_optimizer(h, strategy, 3, {1, 2, 3, 4});
}

TEST_CASE("federation: a node whose key is not on the allow-list cannot join", "[e2e]") {
  FederationHarness h(4, /*allowed=*/3);
  auto coordinator = h.start_coordinator(federation(1, 3, "train_ms = 30000"));
  std::vector<std::unique_ptr<Process>> nodes;
  for (int id = 1; id <= 4; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 1\n"));
  const auto rc = coordinator->wait_for_exit(120s);
  INFO("coordinator log:\n" << coordinator->log_text() << logs(nodes));
  REQUIRE(rc == 0);
  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  CHECK(store.node(4) == std::nullopt);
  CHECK(store.list_nodes().size() == 3);
  CHECK(store.completed_round(1)->survivors == 3);
  for (int id = 1; id <= 3; ++id) CHECK(nodes[id - 1]->wait_for_exit(30s) == 0);
  // Node 4 never got past the CURVE handshake: no acknowledgement, no model.
  CHECK(nodes[3]->running());
  CHECK(nodes[3]->log_text().find("installed global") == std::string::npos);
}

TEST_CASE("federation: hostile bytes from an allow-listed peer get error replies, the others finish", "[e2e]") {
  FederationHarness h(4);
  auto coordinator = h.start_coordinator(federation(2, 3, "train_ms = 30000"));
  std::vector<std::unique_ptr<Process>> nodes;
  for (int id = 1; id <= 3; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 2\n"));

  // The hostile peer holds node 4's allow-listed key but never registers.
  protocol::Context ctx;
  protocol::SocketOptions options;
  protocol::Dealer hostile(ctx, h.endpoint(), options,
                           protocol::CurveClient{protocol::load_key_pair(h.root() / "keys/node4.key"),
                                                 protocol::load_public_key(h.root() / "keys/coordinator.pub")});
  auto expect_reply = [&](const protocol::Bytes& bytes, protocol::ErrorCode code) {
    hostile.send(bytes);
    const auto reply = hostile.recv(10s);
    REQUIRE(reply);
    const auto env = protocol::decode(*reply, protocol::Limits{});
    const auto* error = std::get_if<protocol::ErrorReply>(&env.body);
    REQUIRE(error != nullptr);
    INFO(error->message);
    CHECK(error->code == code);
  };
  const std::vector<std::uint8_t> garbage(64, 0xab);
  expect_reply(protocol::Bytes::copy_of(garbage), protocol::ErrorCode::kMalformed);

  protocol::Envelope reg;
  reg.sender = 4;
  reg.body = protocol::Register{4, "hostile", {}, {}};
  const auto whole = protocol::encode(reg);
  expect_reply(protocol::Bytes::copy_of(whole.span().first(whole.size() - 8)), protocol::ErrorCode::kMalformed);

  protocol::Envelope old_version = reg;
  old_version.version = protocol::kProtocolVersion + 1;
  expect_reply(protocol::encode(old_version), protocol::ErrorCode::kBadVersion);

  protocol::Envelope huge;
  huge.sender = 4;
  huge.round = 1;
  aggregation::ShareKeys many{1, 1, {}};
  many.shares.resize(70000, aggregation::EncryptedShare{1, 2, {1, 2, 3}});
  huge.body = wire::to_wire(many);
  expect_reply(protocol::encode(huge), protocol::ErrorCode::kTooLarge);

  protocol::Envelope early;  // a round message from a peer that never registered
  early.sender = 4;
  early.round = 1;
  early.body = wire::to_wire(aggregation::MaskedInput{1, 1, {1, 2, 3}});
  expect_reply(protocol::encode(early), protocol::ErrorCode::kUnknownSender);

  // Registers that pass the decoder but not the store's limits (issue 16's
  // remote crash): refused with a typed error, and the coordinator keeps serving.
  const protocol::Key32 node4_key = protocol::z85_to_key(protocol::load_public_key(h.root() / "keys/node4.pub"), "node4");
  protocol::Envelope long_name;
  long_name.sender = 4;
  long_name.body = protocol::Register{4, std::string(300, 'n'), node4_key, {"cpu", 10, "m", 1, 0}};
  expect_reply(protocol::encode(long_name), protocol::ErrorCode::kTooLarge);
  protocol::Envelope big_profile = long_name;
  big_profile.body = protocol::Register{4, "n4", node4_key, {std::string(17 * 1024, 'p'), 10, "m", 1, 0}};
  expect_reply(protocol::encode(big_profile), protocol::ErrorCode::kTooLarge);
  protocol::Envelope many_examples = long_name;
  many_examples.body = protocol::Register{4, "n4", node4_key, {"cpu", std::uint64_t{1} << 63, "m", 1, 0}};
  expect_reply(protocol::encode(many_examples), protocol::ErrorCode::kMalformed);

  protocol::Envelope forged;  // a coordinator-only message from a node
  forged.sender = 4;
  forged.body = protocol::RegisterAck{4, 1000, 0};
  expect_reply(protocol::encode(forged), protocol::ErrorCode::kMalformed);

  const auto rc = coordinator->wait_for_exit(180s);
  INFO("coordinator log:\n" << coordinator->log_text() << logs(nodes));
  REQUIRE(rc == 0);
  for (auto& n : nodes) CHECK(n->wait_for_exit(30s) == 0);
  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  CHECK(store.last_completed_round() == 2);
  CHECK(store.node(4) == std::nullopt);
}

TEST_CASE("federation: a peer that claims a registered node's id never receives that node's messages", "[e2e]") {
  FederationHarness h(4);
  auto coordinator = h.start_coordinator(federation(2, 3, "train_ms = 30000"));
  std::vector<std::unique_ptr<Process>> nodes;
  for (int id = 1; id <= 3; ++id) nodes.push_back(h.start_node(id, "exit_after_versions = 2\n"));
  // Once node 1 holds its id (before, the id would simply be free), a peer
  // with node 4's allow-listed key claims it over and over while the rounds
  // run. Before the fix, each claim pointed node 1's reply route at the peer
  // until node 1's next message: the peer received node 1's plans and models.
  const bool registered = fedge::testing::eventually(
      [&] { return fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db").node(1).has_value(); },
      120s, 20ms);
  INFO("coordinator log:\n" << coordinator->log_text());
  REQUIRE(registered);
  Peer claimant(h, 4);
  std::size_t refused = 0;
  std::vector<std::string> stolen;  // messages meant for node 1
  const auto until = std::chrono::steady_clock::now() + 240s;
  while (coordinator->running() && stolen.empty() && std::chrono::steady_clock::now() < until) {
    claimant.send_register(1);
    while (auto bytes = claimant.dealer.recv(2ms)) {
      const auto env = protocol::decode(*bytes, protocol::Limits{});
      const auto* error = std::get_if<protocol::ErrorReply>(&env.body);
      if (error != nullptr && error->code == protocol::ErrorCode::kNotAllowed) {
        ++refused;
      } else {
        stolen.push_back(std::string(protocol::body_name(env.body)));
      }
    }
  }
  INFO("the claimant received: " << [&] {
    std::string s;
    for (const auto& m : stolen) s += m + " ";
    return s;
  }());
  REQUIRE(stolen.empty());
  CHECK(refused > 0);  // each claim is refused, to the claimant
  const auto rc = coordinator->wait_for_exit(180s);
  INFO(logs(nodes));
  REQUIRE(rc == 0);
  for (auto& n : nodes) CHECK(n->wait_for_exit(30s) == 0);
  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  REQUIRE(store.last_completed_round() == 2);
  for (std::uint64_t r : {1, 2}) CHECK(store.completed_round(r)->survivors == 3);
}

TEST_CASE("federation: after a restart each key stays bound to its node id, and the allow-list may name the id",
          "[e2e]") {
  FederationHarness h(4);
  const std::string fed = federation(1, 3, "train_ms = 30000");
  auto coordinator = h.start_coordinator(fed);
  {
    Peer node3(h, 3);
    REQUIRE(acknowledged(node3.register_as(3)));
  }
  // Killed without clean-up: the binding was committed with the registration.
  auto restart = [&] {
    coordinator->signal(SIGKILL);
    REQUIRE(coordinator->wait_for_exit(10s) == 128 + SIGKILL);
    coordinator = h.start_coordinator(fed, h.endpoint());
  };
  restart();
  {
    Peer node3(h, 3);  // node 3's key, claiming a second identity
    const std::string why = refusal(node3.register_as(7));
    INFO(coordinator->log_text());
    CHECK_THAT(why, Catch::Contains("bound to node 3"));
  }
  {
    Peer node4(h, 4);  // another allow-listed key, claiming node 3
    const std::string why = refusal(node4.register_as(3));
    CHECK_THAT(why, Catch::Contains("node id 3 is bound to another public key"));
    CHECK_THAT(why, Catch::Contains("allow-list"));
  }
  {
    Peer node3(h, 3);
    CHECK(acknowledged(node3.register_as(3)));  // node 3 itself is welcome back
  }

  // The allow-list names node 9 for node 4's key (the other lines keep the
  // old format): key 4 may then register as node 9 only.
  {
    std::ofstream allow(h.root() / "keys/allowed.txt");
    for (int id = 1; id <= 4; ++id) {
      allow << protocol::load_public_key(h.root() / ("keys/node" + std::to_string(id) + ".pub"))
            << (id == 4 ? " node=9 site-d" : " node" + std::to_string(id)) << "\n";
    }
  }
  restart();
  {
    Peer node4(h, 4);
    const std::string why = refusal(node4.register_as(4));
    INFO(coordinator->log_text());
    CHECK_THAT(why, Catch::Contains("bound to node 9"));
  }
  {
    Peer node4(h, 4);
    CHECK(acknowledged(node4.register_as(9)));
  }
  {
    Peer node1(h, 1);
    CHECK(acknowledged(node1.register_as(1)));  // an unnamed key binds at its first registration
  }
  {
    Peer node1(h, 1);
    CHECK_THAT(refusal(node1.register_as(5)), Catch::Contains("bound to node 1"));
  }
  auto store = fedge::coordinator::Store::open(h.coordinator_state() / "coordinator.db");
  std::map<protocol::NodeId, fedge::coordinator::KeyBindingSource> bound;
  for (const auto& b : store.node_key_bindings()) bound[b.node_id] = b.source;
  CHECK(bound == std::map<protocol::NodeId, fedge::coordinator::KeyBindingSource>{
                     {1, fedge::coordinator::KeyBindingSource::kRegister},
                     {3, fedge::coordinator::KeyBindingSource::kRegister},
                     {9, fedge::coordinator::KeyBindingSource::kAllowList}});
}
