// The coordinator core's units on their own, without the core or sockets:
// Membership and NodeMetrics, selection and planning, one attempt's
// RoundStages, the round result and the PrivacyLedger.
#include <catch2/catch.hpp>

#include <algorithm>
#include <climits>
#include <cmath>
#include <random>

#include "fedge/aggregation/strategy.h"
#include "fedge/common/error.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/round_result.h"
#include "fedge/federation/round_planner.h"
#include "fedge/federation/round_stages.h"
#include "fedge/federation/wire.h"
#include "fedge/privacy/rdp.h"

using namespace fedge;
using namespace fedge::federation;
using protocol::Envelope;
using protocol::ErrorCode;
using protocol::NodeId;

namespace {

protocol::Key32 key_of(NodeId id) {
  protocol::Key32 k{};
  k.fill(static_cast<std::uint8_t>(id));
  return k;
}

protocol::Register reg(NodeId id, std::uint64_t examples) {
  return {id, "n" + std::to_string(id), key_of(id), {"cpu", examples, "m", 1, 0}};
}

Membership members_with(std::initializer_list<std::pair<NodeId, std::uint64_t>> nodes, std::int64_t now = 0) {
  Membership m(5000);
  for (auto [id, examples] : nodes) m.enrol(reg(id, examples), now);
  return m;
}

FederationConfig plain_config() {
  FederationConfig c;
  c.secure = false;
  c.min_nodes = 2;
  c.deadlines = {1000, 100, 200, 300, 400};
  c.secret_seed = privacy::Key32{};
  return c;
}

Envelope update_from(NodeId id, std::vector<float> values, std::uint64_t examples, std::uint64_t round = 1,
                     std::uint32_t attempt = 1) {
  Envelope e{protocol::kProtocolVersion, round, id,
             protocol::PlainUpdate{examples, protocol::Payload<float>::own(std::move(values)), 0.5F}};
  e.attempt = attempt;
  return e;
}

}  // namespace

TEST_CASE("membership: a Register must match its sender and the authenticated key, ids stay bound to keys") {
  Membership m(5000);
  CHECK(m.check_register(3, reg(4, 10), std::nullopt)->code == ErrorCode::kNotAllowed);  // speaks for another id
  CHECK(m.check_register(0, reg(0, 10), std::nullopt).has_value());                      // the coordinator's id
  CHECK(m.check_register(3, reg(3, 10), key_of(9))->why.find("CURVE key") != std::string::npos);
  REQUIRE_FALSE(m.check_register(3, reg(3, 10), key_of(3)).has_value());
  CHECK_FALSE(m.enrol(reg(3, 10), 0));
  CHECK(m.enrol(reg(3, 10), 5));  // a restarted node is known
  // Node 9's key cannot take over id 3.
  protocol::Register hijack = reg(3, 10);
  hijack.public_key = key_of(9);
  CHECK(m.check_register(3, hijack, key_of(9))->why.find("another public key") != std::string::npos);
}

TEST_CASE("membership: with CURVE, one key registers one node id (no identities from one key)") {
  Membership m(5000);
  REQUIRE_FALSE(m.check_register(3, reg(3, 10), key_of(3)).has_value());
  m.enrol(reg(3, 10), 0);
  protocol::Register sybil = reg(5, 10);
  sybil.public_key = key_of(3);
  const auto refusal = m.check_register(5, sybil, key_of(3));
  REQUIRE(refusal.has_value());
  CHECK(refusal->code == ErrorCode::kNotAllowed);
  CHECK(refusal->why.find("bound to node 3") != std::string::npos);
  CHECK_FALSE(m.check_register(3, reg(3, 10), key_of(3)).has_value());  // the node itself may register again
  // Without CURVE no key is authenticated, so there is nothing to bind (insecure deployments).
  CHECK_FALSE(m.check_register(5, sybil, std::nullopt).has_value());
}

TEST_CASE("membership: bindings restored after a coordinator restart hold before the node registers again") {
  // A fresh Membership is what a restarted coordinator has: no node enrolled,
  // only the bindings its store kept (node 3 registered with key 3, the
  // allow-list named node 9 for key 4).
  Membership m(5000);
  REQUIRE(m.restore_binding(3, key_of(3)));
  REQUIRE(m.restore_binding(9, key_of(4)));
  CHECK_FALSE(m.contains(3));
  // Key 3 cannot come back as node 7 ...
  protocol::Register sybil = reg(7, 10);
  sybil.public_key = key_of(3);
  auto refusal = m.check_register(7, sybil, key_of(3));
  REQUIRE(refusal.has_value());
  CHECK(refusal->code == ErrorCode::kNotAllowed);
  CHECK(refusal->why.find("bound to node 3") != std::string::npos);
  // ... node 3 cannot come back with another key, and is told how to move it ...
  protocol::Register moved = reg(3, 10);
  moved.public_key = key_of(5);
  refusal = m.check_register(3, moved, key_of(5));
  REQUIRE(refusal.has_value());
  CHECK(refusal->code == ErrorCode::kNotAllowed);
  CHECK(refusal->why.find("node id 3 is bound to another public key") != std::string::npos);
  CHECK(refusal->why.find("allow-list") != std::string::npos);
  // ... key 4 registers only as the id the allow-list named ...
  protocol::Register named = reg(4, 10);
  CHECK(m.check_register(4, named, key_of(4))->why.find("bound to node 9") != std::string::npos);
  named = reg(9, 10);
  named.public_key = key_of(4);
  CHECK_FALSE(m.check_register(9, named, key_of(4)).has_value());
  // ... and node 3 with its own key is welcome back.
  REQUIRE_FALSE(m.check_register(3, reg(3, 10), key_of(3)).has_value());
  CHECK_FALSE(m.enrol(reg(3, 10), 0));
  // A key bound twice, an id bound twice or id 0 cannot be restored.
  CHECK_FALSE(m.restore_binding(5, key_of(3)));
  CHECK_FALSE(m.restore_binding(3, key_of(5)));
  CHECK_FALSE(m.restore_binding(0, key_of(6)));
  CHECK(m.restore_binding(3, key_of(3)));  // the same pair again is fine
}

TEST_CASE("membership: the expiry index and the ready count agree with a walk over every node") {
  // Random registrations (some without data, some re-registering with a new
  // example count), heartbeats out of order and expiries; after each step the
  // indexed answers must equal the ones a walk over all nodes gives.
  Membership m(500);
  std::mt19937 rng(3);
  std::int64_t now = 0;
  auto walk_next_expiry = [&]() {
    std::optional<std::int64_t> t;
    for (NodeId id : m.ids())
      if (m.at(id).alive) t = std::min(t.value_or(INT64_MAX), m.at(id).last_seen + 500 + 1);
    return t;
  };
  auto walk_ready = [&]() {
    std::size_t ready = 0;
    for (NodeId id : m.ids()) ready += m.at(id).alive && m.at(id).reg.capabilities.num_examples > 0;
    return ready;
  };
  for (int step = 0; step < 5000; ++step) {
    now += std::uniform_int_distribution<int>(0, 20)(rng);
    const NodeId id = std::uniform_int_distribution<NodeId>(1, 60)(rng);
    switch (std::uniform_int_distribution<int>(0, 3)(rng)) {
      case 0: m.enrol(reg(id, std::uniform_int_distribution<std::uint64_t>(0, 2)(rng)), now); break;
      case 1:
        if (m.contains(id)) m.touch(id, now - std::uniform_int_distribution<int>(0, 100)(rng));  // late news
        break;
      default: {
        const auto lost = m.expire(now);
        CHECK(std::is_sorted(lost.begin(), lost.end()));
        for (NodeId gone : lost) CHECK(now - m.at(gone).last_seen > 500);
        break;
      }
    }
    REQUIRE(m.next_expiry_ms() == walk_next_expiry());
    REQUIRE(m.ready_count() == walk_ready());
  }
  CHECK(m.size() == 60);
}

TEST_CASE("membership: a Register's fields must fit what the store keeps (names, profiles, example counts)") {
  Membership m(5000);
  protocol::Register r = reg(3, 10);
  r.name.assign(kMaxNodeNameBytes + 1, 'n');
  CHECK(m.check_register(3, r, std::nullopt)->code == ErrorCode::kTooLarge);
  r = reg(3, 10);
  r.capabilities.device_profile.assign(kMaxProfileBytes + 1, 'p');
  CHECK(m.check_register(3, r, std::nullopt)->code == ErrorCode::kTooLarge);
  r = reg(3, std::uint64_t{1} << 63);
  CHECK(m.check_register(3, r, std::nullopt)->code == ErrorCode::kMalformed);
  r = reg(3, (std::uint64_t{1} << 63) - 1);
  r.name.assign(kMaxNodeNameBytes, 'n');
  r.capabilities.device_profile.assign(kMaxProfileBytes, 'p');
  CHECK_FALSE(m.check_register(3, r, std::nullopt).has_value());
}

TEST_CASE("membership: silent nodes expire, are not selectable, and come back when heard from") {
  Membership m = members_with({{1, 10}, {2, 0}, {3, 10}});
  CHECK(m.selectable(0) == std::vector<NodeId>{1, 3});  // node 2 has no data
  CHECK(m.next_expiry_ms() == 5001);
  m.touch(1, 3000);
  CHECK(m.expire(5000).empty());
  CHECK(m.expire(5001) == std::vector<NodeId>{2, 3});
  CHECK(m.live(5001) == std::vector<NodeId>{1});
  CHECK(m.ready_count() == 1);
  CHECK(m.next_expiry_ms() == 8001);
  m.touch(3, 6000);
  CHECK(m.live(6000) == std::vector<NodeId>{1, 3});
  m.mark_sent(3, 7);
  CHECK(m.at(3).sent_version == 7U);
  m.enrol(reg(3, 10), 6100);
  CHECK_FALSE(m.at(3).sent_version.has_value());  // a new Register needs the model again
}

TEST_CASE("node metrics: means per name since the last round, bounded") {
  NodeMetrics nm;
  nm.add({{{"loss", 1.0}, {"loss", 3.0}, {"acc", NAN}, {"", 1.0}, {std::string(101, 'x'), 1.0}}});
  auto means = nm.take_means();
  CHECK(means == std::map<std::string, double>{{"node/loss", 2.0}});
  CHECK(nm.take_means().empty());
  protocol::Metrics many;
  for (int i = 0; i < 100; ++i) many.entries.push_back({"m" + std::to_string(i), 1.0});
  nm.add(many);
  CHECK(nm.take_means().size() == NodeMetrics::kMaxNames);
}

TEST_CASE("selection: a seeded share of the selectable nodes, fresh per attempt, none below the minimum") {
  Membership m = members_with({{1, 5}, {2, 5}, {3, 5}, {4, 5}, {5, 5}, {6, 5}, {7, 5}, {8, 5}});
  FederationConfig c = plain_config();
  c.fraction = 0.5;
  const auto a = select_nodes(c, m, 1, 1, 0, 2);
  CHECK(a.size() == 4);
  CHECK(std::is_sorted(a.begin(), a.end()));
  CHECK(select_nodes(c, m, 1, 1, 0, 2) == a);  // deterministic from the seed
  bool differs = false;
  for (std::uint32_t attempt = 2; attempt < 8; ++attempt) differs |= select_nodes(c, m, 1, attempt, 0, 2) != a;
  CHECK(differs);
  c.max_nodes = 3;
  CHECK(select_nodes(c, m, 1, 1, 0, 2).size() == 3);
  CHECK(select_nodes(c, m, 1, 1, 0, 9).empty());  // 8 selectable, 9 needed
}

TEST_CASE("planning: the plan carries the encoding both sides derive, and SecAgg+ parameters for secure rounds") {
  Membership m = members_with({{1, 10}, {2, 40}, {3, 20}, {4, 30}});
  FederationConfig c = plain_config();
  c.secure = true;
  c.min_nodes = 3;
  c.secagg_degree = 2;
  c.secagg_threshold = 3;
  const PlannedRound p = plan_round(c, m, privacy::Key32{}, 2, 1, 7, 100, {1, 2, 3, 4}, 0.25);
  CHECK(p.plan.global_version == 7);
  CHECK(p.plan.example_scale == 40);  // the largest count: weights in [0, 1]
  CHECK(p.plan.hyper.fedprox_mu == Approx(0.25));
  REQUIRE(p.secagg.has_value());
  CHECK(p.secagg->num_clients == 4);
  CHECK(p.secagg->degree == 2);
  const wire::SecureSettings secure = wire::secure_settings(p.plan);
  CHECK(secure.params.threshold == 3);
  // Both sides split distributed noise over the threshold (t_min).
  CHECK(p.encoding.min_survivors == 3);
  CHECK(wire::update_encoding(p.plan).min_survivors == 3);
  CHECK(secure.params.vector_length == 102);  // update + weight + loss
  CHECK(secure.quant_bits == p.encoding.quant_bits);
  CHECK(p.encoding.quant_bits >= 2);
  // Another attempt of the same round gets another neighbour graph.
  CHECK(wire::secure_settings(plan_round(c, m, privacy::Key32{}, 2, 2, 7, 100, {1, 2, 3, 4}, 0.25).plan)
            .params.graph_seed != secure.params.graph_seed);
  c.quant_bits = 32;  // 4 inputs of 32 bits overflow the 2^32 ring
  CHECK_THROWS_AS(plan_round(c, m, privacy::Key32{}, 2, 1, 7, 100, {1, 2, 3, 4}, 0.25), Error);
}

TEST_CASE("round stages: a plain attempt refuses what does not belong to it and closes when all answered") {
  Membership m = members_with({{1, 10}, {2, 30}, {3, 10}});
  const FederationConfig c = plain_config();
  RoundStages r(1, 1, plan_round(c, m, privacy::Key32{}, 1, 1, 0, 2, {1, 2}, 0), 0, 1);
  CHECK(r.stage() == RoundStage::kPlainUpdate);
  CHECK(r.deadline_ms() == 1000 + 300);  // train + masked_input budgets
  CHECK(r.receive(update_from(1, {1, 1}, 10, 2))->code == ErrorCode::kWrongRound);
  CHECK(r.receive(update_from(1, {1, 1}, 10, 1, 2))->code == ErrorCode::kWrongRound);
  CHECK(r.receive(update_from(3, {1, 1}, 10))->code == ErrorCode::kNotAllowed);
  Envelope secure_msg{protocol::kProtocolVersion, 1, 1, protocol::AdvertiseKeysBody{}};
  secure_msg.attempt = 1;
  CHECK(r.receive(secure_msg)->code == ErrorCode::kWrongStage);
  CHECK(r.receive(update_from(1, {1, NAN}, 10))->code == ErrorCode::kMalformed);
  CHECK(r.receive(update_from(1, {1, 1}, 0))->code == ErrorCode::kMalformed);
  REQUIRE_FALSE(r.receive(update_from(1, {0.5F, 0.5F}, 10)).has_value());
  CHECK(r.receive(update_from(1, {0.5F, 0.5F}, 10))->code == ErrorCode::kDuplicate);
  CHECK_FALSE(r.stage_complete());
  CHECK(r.waits_only_on_lost([](NodeId id) { return id != 2; }));
  CHECK_FALSE(r.waits_only_on_lost([](NodeId) { return true; }));
  REQUIRE_FALSE(r.receive(update_from(2, {-0.25F, 3.0F}, 30)).has_value());  // 3 clips to clip_range 1
  CHECK(r.stage_complete());
  const StageStep step = r.advance(1);
  CHECK(step.done);
  CHECK(r.stats().stages.size() == 1);
  CHECK(r.stats().stages[0].received == 2);

  SECTION("the round result is the strategy over the updates, weighted by examples") {
    auto fedavg = aggregation::make_strategy("fedavg");
    privacy::ChaChaRng rng(privacy::Key32{});
    FederationConfig by_examples = c;
    by_examples.weight_caps.max_share = 1;  // node 2 holds 75% of the examples
    const RoundOutcome out = plain_round_result(r, by_examples, m, rng, *fedavg, {0, 0});
    CHECK(out.survivors == std::vector<NodeId>{1, 2});
    CHECK(out.next_global[0] == Approx((10 * 0.5 + 30 * -0.25) / 40));
    CHECK(out.next_global[1] == Approx((10 * 0.5 + 30 * 1.0) / 40));
    CHECK(out.metrics.at("participants") == 2);
    CHECK(out.metrics.at("total_examples") == 40);
    FederationConfig three = c;
    three.min_survivors = 3;
    CHECK_THROWS_WITH(plain_round_result(r, three, m, rng, *fedavg, {0, 0}), Catch::Contains("3 needed"));
  }
  SECTION("by default no node weighs more than half: two nodes weigh the same") {
    auto fedavg = aggregation::make_strategy("fedavg");
    privacy::ChaChaRng rng(privacy::Key32{});
    const RoundOutcome out = plain_round_result(r, c, m, rng, *fedavg, {0, 0});
    CHECK(out.next_global[0] == Approx((0.5 - 0.25) / 2));
    CHECK(out.next_global[1] == Approx((0.5 + 1.0) / 2));
    CHECK(out.metrics.at("total_examples") == 20);
  }
}

TEST_CASE("weights: the example scale caps self-reported counts and one node's share (water-filling)") {
  const WeightCaps fedavg{1'000'000, 1.0};
  const WeightCaps half{1'000'000, 0.5};
  auto scale = [](std::vector<std::uint64_t> counts, WeightCaps caps) { return capped_example_scale(counts, caps); };
  CHECK(scale({10, 40, 20, 30}, fedavg) == 40);  // no cap binds: the largest count
  CHECK(scale({10, 40, 20, 30}, half) == 40);    // 40 of 100 is below half
  CHECK(scale({10, 30}, half) == 10);            // of two nodes neither may outweigh the other
  // A node claiming 2^62 examples counts as max_examples, then as much as the
  // two honest nodes together: its share is exactly one half.
  const std::uint64_t huge = std::uint64_t{1} << 62;
  CHECK(scale({100, huge, 100}, half) == 200);
  CHECK(scale({100, huge, 100}, fedavg) == 1'000'000);
  CHECK(scale({100, huge, 100}, {1000, 1.0}) == 1000);
  // 3 nodes, shares at most 0.4: the largest two are clamped to S with
  // S / (2 S + 10) <= 0.4, S = 20.
  CHECK(scale({10, 50, 60}, {1'000'000, 0.4}) == 20);
  CHECK(scale({1, 2, 3}, {1'000'000, 0.2}) == 1);  // below 1/n: equal weights
  CHECK(scale({7}, half) == 7);                     // one node always weighs 1
  CHECK_THROWS_WITH(scale({}, half), Catch::Contains("no example counts"));
  CHECK_THROWS_WITH(scale({5, 0}, half), Catch::Contains("0 training examples"));
  CHECK_THROWS_WITH(scale({5}, {0, 0.5}), Catch::Contains("max_examples"));
  CHECK_THROWS_WITH(scale({5}, {10, 0.0}), Catch::Contains("max_share"));
  CHECK_THROWS_WITH(scale({5}, {10, 1.5}), Catch::Contains("max_share"));
}

TEST_CASE("planning: a node that reports a huge example count cannot push the honest weights to 0 (finding 6)") {
  const std::uint64_t huge = std::uint64_t{1} << 62;
  Membership m = members_with({{1, 100}, {2, 100}, {3, huge}});
  FederationConfig c = plain_config();
  const PlannedRound p = plan_round(c, m, privacy::Key32{}, 1, 1, 0, 4, {1, 2, 3}, 0);
  const double honest = node_weight(100, p.plan.example_scale);
  const double liar = node_weight(huge, p.plan.example_scale);
  CHECK(honest == Approx(0.5));
  CHECK(liar == 1.0);
  CHECK(liar / (liar + 2 * honest) <= 0.5);
}

TEST_CASE("plain round: an update's example count counts for no more than the node registered with (finding 6)") {
  Membership m = members_with({{1, 10}, {2, 10}, {3, 10}});
  FederationConfig c = plain_config();
  c.weight_caps.max_share = 1;  // only the registered count bounds the claim here
  RoundStages r(1, 1, plan_round(c, m, privacy::Key32{}, 1, 1, 0, 1, {1, 2, 3}, 0), 0, 1);
  REQUIRE_FALSE(r.receive(update_from(1, {0.0F}, 10)).has_value());
  REQUIRE_FALSE(r.receive(update_from(2, {0.0F}, 10)).has_value());
  REQUIRE_FALSE(r.receive(update_from(3, {0.9F}, std::uint64_t{1} << 62)).has_value());
  REQUIRE(r.advance(1).done);
  auto fedavg = aggregation::make_strategy("fedavg");
  privacy::ChaChaRng rng(privacy::Key32{});
  const RoundOutcome out = plain_round_result(r, c, m, rng, *fedavg, {0});
  CHECK(out.next_global[0] == Approx(0.3));  // a third, not ~0.9
  CHECK(out.metrics.at("total_examples") == 30);
}

TEST_CASE("privacy ledger: each round is charged at q = 1 with its own sigma, and a replay gives the same epsilon") {
  PrivacyLedger ledger;
  const DpRecord first = ledger.charge(1, 1.1, 1e-5);
  CHECK(first.sampling_rate == 1.0);  // selection is not Poisson sampling: no amplification
  CHECK(first.noise_multiplier == 1.1);
  const DpRecord second = ledger.charge(2, 0.9, 1e-5);
  CHECK(second.sampling_rate == 1.0);
  CHECK(second.epsilon > first.epsilon);
  privacy::RdpAccountant reference;
  reference.step(1.0, 1.1, 1);
  reference.step(1.0, 0.9, 1);
  CHECK(ledger.epsilon() == Approx(reference.spent(1e-5).epsilon));
  PrivacyLedger replayed;
  replayed.replay({first, second}, 1e-5);
  CHECK(replayed.epsilon() == Approx(ledger.epsilon()));
  DpRecord bad = first;
  bad.sampling_rate = 1.5;
  CHECK_THROWS_AS(PrivacyLedger().replay({bad}, 1e-5), Error);
}
