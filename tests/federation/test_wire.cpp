// wire.cpp: each round message crosses between protocol's and aggregation's
// forms in one place; these round trips pin every field, and a node's message
// that claims another client's id is refused.
#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/federation/wire.h"

using namespace fedge;
namespace agg = fedge::aggregation;
namespace wire = fedge::federation::wire;

namespace {

privacy::Key32 key(std::uint8_t fill) {
  privacy::Key32 k{};
  k.fill(fill);
  return k;
}

}  // namespace

TEST_CASE("wire: body_index names each message by its wire discriminant") {
  STATIC_REQUIRE(protocol::body_index<protocol::Register>() == 0);
  STATIC_REQUIRE(protocol::body_index<protocol::AdvertiseKeys>() == 4);
  STATIC_REQUIRE(protocol::body_index<protocol::UnmaskResponse>() == 10);
  STATIC_REQUIRE(protocol::body_index<protocol::PlainUpdate>() == 11);
  STATIC_REQUIRE(protocol::body_index<protocol::ErrorReply>() == std::variant_size_v<protocol::Body> - 1);
  CHECK(std::string(protocol::body_name(protocol::body_index<protocol::MaskedInput>())) == "maskedInput");
}

TEST_CASE("wire: node messages round-trip with the round and sender the coordinator knows") {
  const std::uint64_t round = 7;
  const agg::ClientId me = 3;

  const agg::AdvertiseKeys ak{round, me, key(1), key(2)};
  const agg::AdvertiseKeys ak2 = wire::from_wire(wire::to_wire(ak), round, me);
  CHECK(ak2.round == round);
  CHECK(ak2.sender == me);
  CHECK(ak2.c_public == key(1));
  CHECK(ak2.s_public == key(2));

  const agg::ShareKeys sk{round, me, {{me, 1, {9, 8, 7}}, {me, 2, {6}}}};
  const agg::ShareKeys sk2 = wire::from_wire(wire::to_wire(sk), round, me);
  REQUIRE(sk2.shares.size() == 2);
  CHECK(sk2.shares[0].from == me);
  CHECK(sk2.shares[0].to == 1);
  CHECK(sk2.shares[0].box == std::vector<std::uint8_t>{9, 8, 7});
  CHECK(sk2.shares[1].box == std::vector<std::uint8_t>{6});

  const agg::MaskedInput mi{round, me, {1, 2, 0xffffffffU}};
  const protocol::MaskedInput mi_wire = wire::to_wire(mi);
  CHECK(mi_wire.masked.owns_storage());  // the envelope outlives the state machine's vector
  CHECK(wire::from_wire(mi_wire, round, me).masked == mi.masked);

  agg::UnmaskResponse ur{round, me, {}, {}};
  ur.self_mask_shares.push_back({1, privacy::Share{me, {11, 12}}});
  ur.key_shares.push_back({2, privacy::Share{me, {13}}});
  const protocol::UnmaskResponse ur_wire = wire::to_wire(ur);
  REQUIRE(ur_wire.shares.size() == 2);
  CHECK(ur_wire.shares[0].kind == protocol::SecretKind::kSelfMask);
  CHECK(ur_wire.shares[1].kind == protocol::SecretKind::kPairwiseKey);
  const agg::UnmaskResponse ur2 = wire::from_wire(ur_wire, round, me);
  REQUIRE(ur2.self_mask_shares.size() == 1);
  REQUIRE(ur2.key_shares.size() == 1);
  CHECK(ur2.self_mask_shares[0].owner == 1);
  CHECK(ur2.self_mask_shares[0].share.y == std::vector<std::uint64_t>{11, 12});
  CHECK(ur2.key_shares[0].owner == 2);
  CHECK(ur2.key_shares[0].share.x == me);
}

TEST_CASE("wire: a node message that claims another client's id is refused") {
  const agg::ShareKeys sk{1, 2, {}};
  const agg::MaskedInput mi{1, 2, {5}};
  const agg::UnmaskResponse ur{1, 2, {}, {}};
  CHECK_THROWS_WITH(wire::from_wire(wire::to_wire(sk), 1, 3), Catch::Contains("shareKeys.sender is client 2"));
  CHECK_THROWS_AS(wire::from_wire(wire::to_wire(mi), 1, 3), Error);
  CHECK_THROWS_AS(wire::from_wire(wire::to_wire(ur), 1, 3), Error);
}

TEST_CASE("wire: coordinator messages round-trip, the unmask request lists who dropped") {
  const agg::KeysBroadcast kb{4, 2, {{1, key(3), key(4)}, {3, key(5), key(6)}}};
  const agg::KeysBroadcast kb2 = wire::from_wire(wire::to_wire(kb), 4);
  CHECK(kb2.round == 4);
  CHECK(kb2.recipient == 2);
  REQUIRE(kb2.neighbours.size() == 2);
  CHECK(kb2.neighbours[1].id == 3);
  CHECK(kb2.neighbours[1].s_public == key(6));

  const agg::SharesDelivery sd{4, 2, {{1, 2, {42}}}};
  const agg::SharesDelivery sd2 = wire::from_wire(wire::to_wire(sd), 4);
  REQUIRE(sd2.shares.size() == 1);
  CHECK(sd2.shares[0].box == std::vector<std::uint8_t>{42});

  const protocol::UnmaskRequest req = wire::to_wire(agg::UnmaskRequest{4, {1, 3, 4}}, 5);
  CHECK(req.survivors == std::vector<std::uint32_t>{1, 3, 4});
  CHECK(req.dropped == std::vector<std::uint32_t>{2, 5});
  CHECK(wire::from_wire(req, 4).survivors == req.survivors);
}

TEST_CASE("wire: the plan's secure-aggregation block carries the SecAgg parameters and the encoding") {
  agg::SecAggParams sp;
  sp.num_clients = 5;
  sp.threshold = 4;
  sp.degree = 4;
  sp.vector_length = 12;
  sp.graph_seed = key(7);
  sp.prg = privacy::PrgKind::kAes256Ctr;
  federation::UpdateEncoding enc;
  enc.update_length = 10;
  enc.clip_range = 0.5;
  enc.quant_bits = 20;
  const protocol::SecAggParams w = wire::to_wire(sp, enc, 99);
  CHECK(w.prg == protocol::MaskPrg::kAes256Ctr);
  CHECK(w.quant_bits == 20);
  CHECK(w.clip_range == 0.5);
  CHECK(w.noise_bound == 99);
  const agg::SecAggParams back = wire::from_wire(w);
  CHECK(back.num_clients == 5);
  CHECK(back.threshold == 4);
  CHECK(back.degree == 4);
  CHECK(back.vector_length == 12);
  CHECK(back.graph_seed == key(7));
  CHECK(back.prg == privacy::PrgKind::kAes256Ctr);
  CHECK(wire::from_wire(wire::to_wire(privacy::PrgKind::kChaCha20)) == privacy::PrgKind::kChaCha20);

  protocol::RoundPlan plan;
  plan.update_length = 10;
  plan.secure = true;
  plan.secagg = w;
  plan.example_scale = 40;
  plan.loss_cap = 8;
  plan.dp = {protocol::DpMode::kDistributed, 1.5, 0.7};
  plan.selected = {4, 9, 11, 12, 20};
  const federation::UpdateEncoding e = wire::update_encoding(plan);
  CHECK(e.update_length == 10);
  CHECK(e.clip_range == 0.5);
  CHECK(e.quant_bits == 20);
  CHECK(e.example_scale == 40);
  CHECK(e.loss_cap == 8);
  CHECK(e.dp == protocol::DpMode::kDistributed);
  CHECK(e.dp_clip_norm == 1.5);
  CHECK(e.noise_multiplier == 0.7);
  CHECK(e.num_clients == 5);
  CHECK(e.vector_length() == sp.vector_length);
}
