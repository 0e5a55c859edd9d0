// Secure aggregation against a malicious coordinator (secagg.mode =
// "malicious", docs/SECURE_AGGREGATION.md). The harness's `rewrite` hook turns
// the honest coordinator core into a scripted attacker that alters its own
// messages to the nodes; the nodes are the real RoundClients with real
// Ed25519 keys (libsodium) and an operator roster. In each attack every
// honest node refuses before revealing any share (asserted on the messages
// they send), and the retried attempt, run honestly, gives the exact sum.
#include <catch2/catch.hpp>

#include "federation/harness.h"
#include "fedge/federation/wire.h"

using namespace fedge;
using namespace fedge::testing;
namespace agg = fedge::aggregation;
namespace wire = fedge::federation::wire;

namespace {

constexpr int kNodes = 5;
constexpr double kTol = 2e-7;  // as test_round_trip.cpp: one quantisation step / total weight

privacy::SigningKeyPair signing_key_of(NodeId id) {
  return privacy::signing_keypair_from_seed(fixed_seed(static_cast<std::uint8_t>(100 + id)));
}

federation::SigningRoster roster() {
  federation::SigningRoster r;
  for (NodeId id = 1; id <= kNodes; ++id) r[id] = signing_key_of(id).public_key;
  return r;
}

FederationConfig malicious_config() {
  FederationConfig c = base_config(true);
  c.rounds = 1;
  c.secagg_mode = agg::SecAggMode::kMalicious;
  return c;
}

// A federation whose nodes hold their signing keys and the operator's roster.
struct MaliciousNet : Net {
  explicit MaliciousNet(FederationConfig cfg, bool require_malicious = false) : Net(std::move(cfg), initial_state()) {
    for (NodeId id = 1; id <= kNodes; ++id) {
      const federation::NodeIdentity identity = nodes.at(id).identity();
      federation::NodeClientConfig nc;
      nc.noise_seed = fixed_seed(static_cast<std::uint8_t>(40 + id));
      nc.signing_seed = fixed_seed(static_cast<std::uint8_t>(100 + id));
      nc.roster = roster();
      nc.require_malicious = require_malicious;
      nodes.erase(id);
      nodes.emplace(id, federation::RoundClient(identity, nc));
    }
  }

  // What node `id` sent in attempt `attempt` of round 1.
  std::vector<std::string> sent(NodeId id, std::uint32_t attempt = 1) const {
    std::vector<std::string> out;
    for (const auto& env : to_coord_log)
      if (env.sender == id && env.round == 1 && env.attempt == attempt) out.push_back(protocol::body_name(env.body));
    return out;
  }
  bool any_sent(const char* body, std::uint32_t attempt = 1) const {
    for (NodeId id = 1; id <= kNodes; ++id)
      for (const auto& b : sent(id, attempt))
        if (b == body) return true;
    return false;
  }
  bool noted(NodeId id, const std::string& text) const {
    auto it = notes.find(id);
    if (it == notes.end()) return false;
    for (const auto& n : it->second)
      if (n.find(text) != std::string::npos) return true;
    return false;
  }
};

// Runs to the end of round 1 and checks its global against weighted FedAvg of
// the survivors' updates (the exact secure sum, up to quantisation).
void finishes_with_exact_sum(MaliciousNet& net) {
  const std::vector<float> before = net.coord.global();
  net.start();
  REQUIRE(net.run_until([&] { return !net.completed.empty(); }));
  const auto& c = net.completed.front();
  CHECK(c.survivors == std::vector<NodeId>{1, 2, 3, 4, 5});
  CHECK(max_abs_diff(c.global, expected_fedavg(before, net.trained.at(1), c.survivors, 0.5)) < kTol);
}

template <class Body, class Edit>
void edit_keys_broadcast(Envelope& env, Edit edit) {
  if (auto* kb = std::get_if<protocol::KeysBroadcastBody>(&env.body)) {
    agg::KeysBroadcast m = wire::from_wire(*kb, env.round);
    edit(m);
    env.body = wire::to_wire(m);
  }
}

}  // namespace

TEST_CASE("malicious mode: an honest round gives the exact sum and runs the consistency stage") {
  MaliciousNet net(malicious_config());
  finishes_with_exact_sum(net);
  const auto& stages = net.completed.front().stats.stages;
  REQUIRE(stages.size() == 5);
  CHECK(stages[3].stage == federation::RoundStage::kConsistency);
  for (NodeId id = 1; id <= kNodes; ++id)
    CHECK(net.sent(id) == std::vector<std::string>{"advertiseKeys", "shareKeys", "maskedInput", "survivorSignature",
                                                   "unmaskResponse"});
  CHECK(net.failed.empty());
}

TEST_CASE("malicious mode: a coordinator holding the roster checks signatures itself, the sum is exact") {
  auto cfg = malicious_config();
  cfg.secagg_roster = roster();
  MaliciousNet net(cfg);
  finishes_with_exact_sum(net);
  CHECK(net.failed.empty());
}

TEST_CASE("malicious mode: the plan commits to the graph seed and never carries it") {
  MaliciousNet net(malicious_config());
  net.start();
  REQUIRE(net.run_until([&] { return !net.events.empty() && std::holds_alternative<federation::RoundStarted>(net.events.back()); }));
  const auto& plan = std::get<federation::RoundStarted>(net.events.back()).plan;
  const agg::SecAggParams sp = wire::secure_settings(plan).params;
  CHECK(sp.mode == agg::SecAggMode::kMalicious);
  CHECK(sp.graph_seed == privacy::Key32{});
  CHECK(sp.graph_seed_commitment != privacy::Key32{});
}

TEST_CASE("malicious coordinator (a): a substituted key is refused by every node that receives it") {
  MaliciousNet net(malicious_config());
  // The attacker swaps node 2's advertised keys for its own in every
  // KeysBroadcast of attempt 1, to decrypt the shares meant for node 2.
  const privacy::KeyPair attacker_c = privacy::generate_keypair(), attacker_s = privacy::generate_keypair();
  net.rewrite = [&](Net&, NodeId, Envelope& env) {
    if (env.attempt != 1) return;
    edit_keys_broadcast<protocol::KeysBroadcastBody>(env, [&](agg::KeysBroadcast& m) {
      for (auto& p : m.neighbours)
        if (p.id == 2) {
          p.c_public = attacker_c.public_key;
          p.s_public = attacker_s.public_key;
        }
    });
  };
  finishes_with_exact_sum(net);  // attempt 2 is honest
  REQUIRE(net.failed.size() == 1);
  CHECK(net.failed.front().attempt == 1);
  for (NodeId id : {1, 3, 4, 5}) {
    CHECK(net.sent(id) == std::vector<std::string>{"advertiseKeys"});  // no shares sent under the forged key
    CHECK(net.noted(id, "the keys of neighbour client 2 (cPublic, sPublic) do not carry its roster key's signature"));
  }
  CHECK_FALSE(net.any_sent("unmaskResponse"));
}

TEST_CASE("malicious coordinator (b): different survivor sets to different nodes: every node refuses to unmask") {
  MaliciousNet net(malicious_config());
  // The attacker tells nodes 3 and 4 that node 5 dropped (to get node 5's
  // mask key from them) and the others that it survived (to get its
  // self-mask seed), then forwards every signature it collected.
  auto split = [](NodeId to, std::vector<std::uint32_t>& survivors) {
    if (to == 3 || to == 4) std::erase(survivors, 5u);
  };
  net.rewrite = [&](Net&, NodeId to, Envelope& env) {
    if (env.attempt != 1) return;
    if (auto* cc = std::get_if<protocol::ConsistencyCheckBody>(&env.body)) {
      agg::ConsistencyCheck m = wire::from_wire(*cc, env.round);
      split(to, m.survivors);
      env.body = wire::to_wire(m);
    } else if (auto* ur = std::get_if<protocol::UnmaskRequestBody>(&env.body)) {
      agg::UnmaskRequest m = wire::from_wire(*ur, env.round);
      split(to, m.survivors);
      env.body = wire::to_wire(m, kNodes);
    }
  };
  finishes_with_exact_sum(net);
  REQUIRE(net.failed.size() == 1);
  for (NodeId id = 1; id <= kNodes; ++id) {
    CHECK(net.sent(id) == std::vector<std::string>{"advertiseKeys", "shareKeys", "maskedInput", "survivorSignature"});
    CHECK((net.noted(id, "does not verify on the set this client was told") || net.noted(id, "which is not a survivor")));
  }
  CHECK_FALSE(net.any_sent("unmaskResponse"));
}

TEST_CASE("malicious coordinator (b'): forwarding only matching signatures leaves the minority short of t") {
  MaliciousNet net(malicious_config());
  // A smarter split: each group gets only its own group's signatures. Nodes
  // 1, 2, 5 (3 = t) see a valid quorum and reveal node 5's self-mask shares;
  // nodes 3 and 4 (2 < t) refuse, so node 5's mask key is never revealed and
  // its input stays masked.
  auto minority = [](NodeId id) { return id == 3 || id == 4; };
  net.rewrite = [&](Net&, NodeId to, Envelope& env) {
    if (env.attempt != 1) return;
    if (auto* cc = std::get_if<protocol::ConsistencyCheckBody>(&env.body)) {
      agg::ConsistencyCheck m = wire::from_wire(*cc, env.round);
      if (minority(to)) std::erase(m.survivors, 5u);
      env.body = wire::to_wire(m);
    } else if (auto* ur = std::get_if<protocol::UnmaskRequestBody>(&env.body)) {
      agg::UnmaskRequest m = wire::from_wire(*ur, env.round);
      if (minority(to)) std::erase(m.survivors, 5u);
      std::erase_if(m.signatures, [&](const agg::SurvivorSignature& s) { return minority(s.sender) != minority(to); });
      env.body = wire::to_wire(m, kNodes);
    }
  };
  finishes_with_exact_sum(net);
  for (NodeId id : {3, 4}) {
    CHECK(net.sent(id) == std::vector<std::string>{"advertiseKeys", "shareKeys", "maskedInput", "survivorSignature"});
    CHECK(net.noted(id, "fewer than threshold 3; refusing to reveal shares"));
  }
  // No mask-key share of anyone left attempt 1: node 5's input stays masked.
  for (const auto& env : net.to_coord_log)
    if (const auto* ur = std::get_if<protocol::UnmaskResponseBody>(&env.body); ur && env.attempt == 1)
      CHECK(wire::from_wire(*ur, env.round, env.sender).key_shares.empty());
}

TEST_CASE("malicious coordinator (c): a graph seed that does not open the commitment is refused by every node") {
  MaliciousNet net(malicious_config());
  net.rewrite = [&](Net&, NodeId, Envelope& env) {
    if (env.attempt != 1) return;
    edit_keys_broadcast<protocol::KeysBroadcastBody>(env, [](agg::KeysBroadcast& m) { m.graph_seed[0] ^= 1; });
  };
  finishes_with_exact_sum(net);
  REQUIRE(net.failed.size() == 1);
  for (NodeId id = 1; id <= kNodes; ++id) {
    CHECK(net.sent(id) == std::vector<std::string>{"advertiseKeys"});
    CHECK(net.noted(id, "graph seed that does not match the commitment"));
  }
}

TEST_CASE("malicious coordinator (d): a downgraded plan is refused by nodes that require malicious mode") {
  MaliciousNet net(malicious_config(), /*require_malicious=*/true);
  SECTION("to semi-honest secure aggregation") {
    net.rewrite = [&](Net&, NodeId, Envelope& env) {
      auto* plan = std::get_if<protocol::RoundPlan>(&env.body);
      if (!plan || env.attempt != 1) return;
      wire::SecureSettings s = wire::secure_settings(*plan);
      s.params.mode = agg::SecAggMode::kSemiHonest;
      s.params.graph_seed_commitment = {};
      plan->secagg = wire::to_wire(s);
    };
    finishes_with_exact_sum(net);
    for (NodeId id = 1; id <= kNodes; ++id) CHECK(net.noted(id, "the plan says semi-honest (a downgrade)"));
  }
  SECTION("to a plain round") {
    net.rewrite = [&](Net&, NodeId, Envelope& env) {
      auto* plan = std::get_if<protocol::RoundPlan>(&env.body);
      if (!plan || env.attempt != 1) return;
      plan->secure = false;
      plan->secagg = {};
    };
    finishes_with_exact_sum(net);
    for (NodeId id = 1; id <= kNodes; ++id) CHECK(net.noted(id, "the plan is not secure (a downgrade)"));
  }
  REQUIRE(net.failed.size() == 1);
  for (NodeId id = 1; id <= kNodes; ++id) CHECK(net.sent(id).empty());  // no keys, no plain update
}

TEST_CASE("a node's signing key must be the roster's key for its id") {
  federation::NodeIdentity identity{2, "node2", node_key(2), {}};
  federation::NodeClientConfig nc;
  nc.signing_seed = fixed_seed(101);  // node 1's key
  nc.roster = roster();
  CHECK_THROWS_WITH(federation::RoundClient(identity, nc), Catch::Contains("the roster does not list node 2"));
  nc.roster.erase(2);
  CHECK_THROWS_WITH(federation::RoundClient(identity, nc), Catch::Contains("the roster does not list node 2"));
  nc.signing_seed = fixed_seed(102);
  nc.roster = roster();
  CHECK_NOTHROW(federation::RoundClient(identity, nc));
}

TEST_CASE("malicious mode: a node whose roster lacks a selected node sits the round out") {
  MaliciousNet net(malicious_config());
  for (NodeId id = 1; id <= kNodes; ++id) {
    const federation::NodeIdentity identity = net.nodes.at(id).identity();
    federation::NodeClientConfig nc;
    nc.signing_seed = fixed_seed(static_cast<std::uint8_t>(100 + id));
    nc.roster = roster();
    if (id == 1) nc.roster.erase(5);  // node 1 has an old roster
    net.nodes.erase(id);
    net.nodes.emplace(id, federation::RoundClient(identity, nc));
  }
  net.start();
  REQUIRE(net.run_until([&] { return !net.completed.empty() || !net.failed.empty(); }));
  CHECK(net.noted(1, "the round selects node 5, which is not in this node's roster"));
  CHECK(net.sent(1).empty());
}

TEST_CASE("malicious mode: nodes without a signing key sit the round out") {
  Net net(malicious_config(), initial_state());  // nodes without keys
  net.start();
  REQUIRE(net.run_until([&] { return !net.failed.empty(); }));
  for (NodeId id = 1; id <= kNodes; ++id) {
    bool refused = false;
    for (const auto& n : net.notes[id]) refused |= n.find("this node has no signing key") != std::string::npos;
    CHECK(refused);
  }
}
