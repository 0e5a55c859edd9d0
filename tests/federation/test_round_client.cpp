// RoundClient on its own: registration, heartbeats, model installation, plans,
// updates and the refusals it must survive (the full secure round runs in
// tests/federation/).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "fedge/common/error.h"
#include "fedge/federation/round_client.h"
#include "fedge/federation/wire.h"

using namespace fedge;
using namespace fedge::federation;
using protocol::Envelope;

namespace {

// A secure plan's settings for 3 clients (t = 3, k = 2) and a d-element vector.
protocol::OpaquePart secure_part(std::uint64_t d) {
  return wire::to_wire(wire::SecureSettings{{3, 3, 2, d, {}, privacy::PrgKind::kChaCha20}, 16, 0.5, 0});
}

NodeIdentity identity() {
  NodeIdentity id{7, "site-7", {}, {}};
  id.public_key.fill(0x42);
  id.capabilities.num_examples = 250;
  id.capabilities.model_name = "tiny";
  return id;
}

Envelope from_coord(protocol::Body body, std::uint64_t round = 0) {
  return Envelope{protocol::kProtocolVersion, round, protocol::kCoordinatorId, std::move(body)};
}

protocol::GlobalModel model(std::uint64_t version, const std::vector<float>& values) {
  std::vector<std::uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return {version, protocol::ModelFormat::kFlatF32, protocol::Payload<std::uint8_t>::own(bytes),
          {{"w", {values.size()}}}};
}

protocol::RoundPlan plain_plan(std::uint64_t version, std::vector<protocol::NodeId> selected = {3, 7, 9}) {
  protocol::RoundPlan p;
  p.global_version = version;
  p.hyper = {5, 0.01F, 4, 0.1F};
  p.deadlines = {1000, 100, 100, 200, 100};
  p.secure = false;
  p.selected = std::move(selected);
  p.update_length = 3;
  p.example_scale = 250;
  p.loss_cap = 8;
  return p;
}

// A registered client that holds global version 1 = {1, 2, 3}.
RoundClient ready_client() {
  RoundClient c(identity());
  c.start(0);
  c.on_message(1, from_coord(protocol::RegisterAck{7, 500, 1}));
  auto a = c.on_message(2, from_coord(model(1, {1, 2, 3})));
  REQUIRE(a.install);
  return c;
}

}  // namespace

TEST_CASE("round client: registers, retries, then heartbeats at the coordinator's interval") {
  NodeClientConfig cfg;
  cfg.register_retry_ms = 1000;
  RoundClient c(identity(), cfg);
  auto a = c.start(0);
  REQUIRE(a.send.size() == 1);
  const auto& reg = std::get<protocol::Register>(a.send[0].body);
  CHECK(reg.node_id == 7);
  CHECK(a.send[0].sender == 7);
  CHECK(reg.name == "site-7");
  CHECK(reg.public_key == identity().public_key);
  CHECK(reg.capabilities.num_examples == 250);
  CHECK(c.state() == ClientState::kRegistering);
  CHECK(c.on_tick(500).send.empty());
  a = c.on_tick(1000);  // unanswered: register again
  REQUIRE(a.send.size() == 1);
  CHECK(std::holds_alternative<protocol::Register>(a.send[0].body));

  c.on_message(1100, from_coord(protocol::RegisterAck{7, 500, 0}));
  CHECK(c.state() == ClientState::kIdle);
  CHECK(c.next_tick_ms() == 1600);
  CHECK(c.on_tick(1500).send.empty());
  a = c.on_tick(1600);
  REQUIRE(a.send.size() == 1);
  const auto& hb = std::get<protocol::Heartbeat>(a.send[0].body);
  CHECK(hb.state == protocol::NodeState::kIdle);
  CHECK(hb.unix_ms == 1600);
}

TEST_CASE("round client: installs flat global models and refuses inconsistent ones") {
  RoundClient c = ready_client();
  CHECK(c.global_version() == 1);
  auto a = c.on_message(3, from_coord(model(2, {4, 5, 6})));
  REQUIRE(a.install);
  CHECK(a.install->version == 2);
  CHECK(a.install->params == std::vector<float>{4, 5, 6});
  CHECK(a.install->layout.at(0).name == "w");

  auto bad = model(3, {1, 2, 3});
  bad.layout[0].shape = {4};  // layout says 4 floats, data holds 3
  a = c.on_message(4, from_coord(bad));
  CHECK_FALSE(a.install);
  CHECK_THAT(a.notes.at(0), Catch::Contains("layout describes 4"));
  bad = model(3, {1, 2, 3});
  bad.format = protocol::ModelFormat::kSafetensors;
  a = c.on_message(4, from_coord(bad));
  CHECK_FALSE(a.install);
  CHECK(c.global_version() == 2);
}

TEST_CASE("round client: a plain round trains and sends the update with its examples and loss") {
  RoundClient c = ready_client();
  auto a = c.on_message(10, from_coord(plain_plan(1), 4));
  REQUIRE(a.train);
  CHECK(a.train->round == 4);
  CHECK(a.train->global_version == 1);
  CHECK(a.train->hyper.fedprox_mu == 0.1F);
  CHECK(a.train->update_length == 3);
  CHECK(a.train->deadline_ms == 10 + 1000 + 200);
  CHECK(c.state() == ClientState::kTraining);
  CHECK(c.current_round() == 4);
  const std::uint64_t ticket = a.train->ticket;

  // A heartbeat while training says so.
  a = c.on_tick(10000);
  CHECK(std::get<protocol::Heartbeat>(a.send.at(0).body).state == protocol::NodeState::kTraining);

  // A stale ticket changes nothing.
  a = c.on_update_ready(20, {ticket + 1, {0.1F, 0.2F, 0.3F}, 250, 1.5});
  CHECK(a.send.empty());
  CHECK(c.state() == ClientState::kTraining);

  a = c.on_update_ready(20, {ticket, {0.1F, -0.2F, 0.3F}, 250, 1.5});
  REQUIRE(a.send.size() == 1);
  CHECK(a.send[0].round == 4);
  const auto& up = std::get<protocol::PlainUpdate>(a.send[0].body);
  CHECK(up.num_examples == 250);
  CHECK(up.train_loss == 1.5F);
  CHECK(up.update.to_vector() == std::vector<float>{0.1F, -0.2F, 0.3F});
  CHECK(up.update.owns_storage());
  CHECK(c.state() == ClientState::kIdle);
}

TEST_CASE("round client: plans it cannot follow are sat out with a note") {
  RoundClient c = ready_client();
  auto a = c.on_message(10, from_coord(plain_plan(1, {1, 2, 3}), 4));  // not selected
  CHECK_FALSE(a.train);
  CHECK_THAT(a.notes.at(0), Catch::Contains("does not select"));
  a = c.on_message(10, from_coord(plain_plan(5), 4));  // version not installed
  CHECK_FALSE(a.train);
  CHECK_THAT(a.notes.at(0), Catch::Contains("global version 5"));
  auto p = plain_plan(1);
  p.secure = true;
  p.secagg = secure_part(99);  // vector length must be update_length + 2
  a = c.on_message(10, from_coord(p, 4));
  CHECK_FALSE(a.train);
  CHECK_THAT(a.notes.at(0), Catch::Contains("vectorLength"));
  CHECK(c.state() == ClientState::kIdle);
}

TEST_CASE("round client: a bad update or failed training drops out without sending") {
  RoundClient c = ready_client();
  auto a = c.on_message(10, from_coord(plain_plan(1), 4));
  a = c.on_update_ready(20, {a.train->ticket, {0.1F, std::numeric_limits<float>::quiet_NaN(), 0.3F}, 250, 1.0});
  CHECK(a.send.empty());
  CHECK_THAT(a.notes.at(0), Catch::Contains("non-finite"));
  CHECK(c.state() == ClientState::kIdle);

  a = c.on_message(30, from_coord(plain_plan(1), 5));
  a = c.on_update_ready(40, {a.train->ticket, {0.1F, 0.2F}, 250, 1.0});
  CHECK(a.send.empty());
  CHECK_THAT(a.notes.at(0), Catch::Contains("2 values"));

  a = c.on_message(50, from_coord(plain_plan(1), 6));
  a = c.on_training_failed(60, "out of memory");
  CHECK(a.send.empty());
  CHECK_THAT(a.notes.at(0), Catch::Contains("out of memory"));
  CHECK(c.state() == ClientState::kIdle);
}

TEST_CASE("round client: a secure plan advertises keys after training, out-of-order steps drop out") {
  RoundClient c = ready_client();
  auto p = plain_plan(1);
  p.secure = true;
  p.secagg = secure_part(5);
  auto a = c.on_message(10, from_coord(p, 4));
  REQUIRE(a.train);
  CHECK(a.train->deadline_ms == 10 + 1000 + 100);
  a = c.on_update_ready(20, {a.train->ticket, {0.1F, 0.2F, 0.3F}, 250, 1.0});
  REQUIRE(a.send.size() == 1);
  const auto ak = wire::from_wire(std::get<protocol::AdvertiseKeysBody>(a.send[0].body), 4, 2);
  CHECK(ak.c_public != ak.s_public);
  CHECK(c.state() == ClientState::kAdvertised);
  // SharesDelivery before KeysBroadcast: the node cannot go on.
  a = c.on_message(30, from_coord(wire::to_wire(aggregation::SharesDelivery{4, 2, {}}), 4));
  CHECK(a.send.empty());
  CHECK_THAT(a.notes.at(0), Catch::Contains("leaving round 4"));
  CHECK(c.state() == ClientState::kIdle);
  // Messages for another round are ignored.
  a = c.on_message(40, from_coord(wire::to_wire(aggregation::UnmaskRequest{9, {1, 2}}, 3), 9));
  CHECK(a.send.empty());
  CHECK_FALSE(a.notes.empty());
}

TEST_CASE("round client: coordinator errors end the round or trigger re-registration") {
  RoundClient c = ready_client();
  auto a = c.on_message(10, from_coord(plain_plan(1), 4));
  protocol::ErrorReply dup{protocol::ErrorCode::kDuplicate, "again", 11};
  c.on_message(11, from_coord(dup, 4));
  CHECK(c.state() == ClientState::kTraining);  // harmless
  protocol::ErrorReply late{protocol::ErrorCode::kDeadlineMissed, "too late", 11};
  a = c.on_message(12, from_coord(late, 4));
  CHECK(a.cancel_training);
  CHECK(c.state() == ClientState::kIdle);

  protocol::ErrorReply unknown{protocol::ErrorCode::kUnknownSender, "who?", 2};
  a = c.on_message(13, from_coord(unknown));
  REQUIRE(a.send.size() == 1);
  CHECK(std::holds_alternative<protocol::Register>(a.send[0].body));
  CHECK(c.state() == ClientState::kRegistering);

  // Only the coordinator talks to nodes.
  Envelope other = from_coord(protocol::RegisterAck{7, 1, 1});
  other.sender = 3;
  a = c.on_message(14, other);
  CHECK(c.state() == ClientState::kRegistering);
  CHECK_FALSE(a.notes.empty());
}

TEST_CASE("round client: a newer global ends a round the node was left out of") {
  RoundClient c = ready_client();
  auto a = c.on_message(10, from_coord(plain_plan(1), 4));
  REQUIRE(a.train);
  a = c.on_message(20, from_coord(model(2, {4, 5, 6})));
  REQUIRE(a.install);
  CHECK(a.cancel_training);
  CHECK(c.state() == ClientState::kIdle);
  CHECK(c.current_round() == 0);
  // The same version again (e.g. resent) while idle changes nothing else.
  a = c.on_message(30, from_coord(model(2, {4, 5, 6})));
  CHECK_FALSE(a.cancel_training);
}

TEST_CASE("round client: metrics go out once registered, without non-finite values") {
  RoundClient c(identity());
  c.start(0);
  auto a = c.send_metrics(1, {{"eval_loss", 2.5}});
  CHECK(a.send.empty());
  c.on_message(2, from_coord(protocol::RegisterAck{7, 500, 0}));
  a = c.send_metrics(3, {{"eval_loss", 2.5}, {"bad", std::nan("")}});
  REQUIRE(a.send.size() == 1);
  CHECK(a.send[0].sender == 7);
  CHECK(std::get<protocol::Metrics>(a.send[0].body).entries == std::vector<protocol::Metric>{{"eval_loss", 2.5}});
}

TEST_CASE("round client: node id 0 is refused") {
  NodeIdentity id = identity();
  id.node_id = 0;
  CHECK_THROWS_AS(RoundClient(id), Error);
}
