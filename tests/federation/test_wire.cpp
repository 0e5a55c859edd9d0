// wire.cpp: the one place the round's secure-aggregation messages cross between
// aggregation's form and the wire's. These round trips pin every field (also
// through a real encode()/decode() of the envelope), every field a peer
// controls has a bad-input test, and a node's message that claims another
// client's id is refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "fedge/common/error.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/codec.h"
#include "fedge/protocol/opaque.h"

using namespace fedge;
namespace agg = fedge::aggregation;
namespace wire = fedge::federation::wire;
namespace schema = fedge::protocol::wire;

namespace {

privacy::Key32 key(std::uint8_t fill) {
  privacy::Key32 k{};
  k.fill(fill);
  return k;
}

std::vector<std::uint8_t> box(std::uint8_t fill) { return std::vector<std::uint8_t>(agg::share_box_bytes(), fill); }

capnp::Data::Reader data_of(const std::vector<std::uint8_t>& v) { return {v.data(), v.size()}; }

// The body after a real trip through the codec, as the receiver gets it.
template <class Body>
Body over_the_wire(Body body, std::uint32_t sender) {
  protocol::Envelope env;
  env.round = 7;
  env.attempt = 1;
  env.sender = sender;
  env.body = std::move(body);
  return std::get<Body>(protocol::decode(protocol::encode(env), {}).body);
}

const agg::SecAggParams kParams{5, 4, 4, 12, key(7), privacy::PrgKind::kAes256Ctr};

protocol::RoundPlan secure_plan(const wire::SecureSettings& s) {
  protocol::RoundPlan plan;
  plan.update_length = 10;
  plan.secure = true;
  plan.secagg = wire::to_wire(s);
  plan.example_scale = 40;
  plan.loss_cap = 8;
  plan.dp = {protocol::DpMode::kDistributed, 1.5, 0.7};
  plan.selected = {4, 9, 11, 12, 20};
  return plan;
}

std::string refusal_of(const std::function<void()>& read) {
  try {
    read();
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kProtocol);
    return e.what();
  }
  FAIL("wire accepted input it should refuse");
  return "";
}

}  // namespace

TEST_CASE("wire: body_index names each message by its wire discriminant") {
  STATIC_REQUIRE(protocol::body_index<protocol::Register>() == 0);
  STATIC_REQUIRE(protocol::body_index<protocol::AdvertiseKeysBody>() == 4);
  STATIC_REQUIRE(protocol::body_index<protocol::UnmaskResponseBody>() == 10);
  STATIC_REQUIRE(protocol::body_index<protocol::PlainUpdate>() == 11);
  STATIC_REQUIRE(protocol::body_index<protocol::ErrorReply>() == 18);
  STATIC_REQUIRE(protocol::body_index<protocol::ConsistencyCheckBody>() == 19);  // added after error
  STATIC_REQUIRE(protocol::body_index<protocol::SurvivorSignatureBody>() == std::variant_size_v<protocol::Body> - 1);
  CHECK(std::string(protocol::body_name(protocol::body_index<protocol::MaskedInputBody>())) == "maskedInput");
}

TEST_CASE("wire: node messages round-trip with the round and sender the coordinator knows") {
  const std::uint64_t round = 7;
  const agg::ClientId me = 3;

  const agg::AdvertiseKeys ak{round, me, key(1), key(2)};
  const agg::AdvertiseKeys ak2 = wire::from_wire(over_the_wire(wire::to_wire(ak), 12), round, me);
  CHECK(ak2.round == round);
  CHECK(ak2.sender == me);
  CHECK(ak2.c_public == key(1));
  CHECK(ak2.s_public == key(2));

  const agg::ShareKeys sk{round, me, {{me, 1, box(9)}, {me, 2, box(6)}}};
  const agg::ShareKeys sk2 = wire::from_wire(over_the_wire(wire::to_wire(sk), 12), round, me);
  REQUIRE(sk2.shares.size() == 2);
  CHECK(sk2.shares[0].from == me);
  CHECK(sk2.shares[0].to == 1);
  CHECK(sk2.shares[0].box == box(9));
  CHECK(sk2.shares[1].box == box(6));

  const agg::MaskedInput mi{round, me, {1, 2, 0xffffffffU}};
  CHECK(wire::from_wire(over_the_wire(wire::to_wire(mi), 12), round, me, 3).masked == mi.masked);

  agg::UnmaskResponse ur{round, me, {}, {}};
  ur.self_mask_shares.push_back({1, privacy::Share{me, {11, 12}}});
  ur.key_shares.push_back({2, privacy::Share{me, {13}}});
  const agg::UnmaskResponse ur2 = wire::from_wire(over_the_wire(wire::to_wire(ur), 12), round, me);
  REQUIRE(ur2.self_mask_shares.size() == 1);
  REQUIRE(ur2.key_shares.size() == 1);
  CHECK(ur2.self_mask_shares[0].owner == 1);
  CHECK(ur2.self_mask_shares[0].share.y == std::vector<std::uint64_t>{11, 12});
  CHECK(ur2.key_shares[0].owner == 2);
  CHECK(ur2.key_shares[0].share.x == me);
  CHECK(ur2.key_shares[0].share.y == std::vector<std::uint64_t>{13});
}

TEST_CASE("wire: a node message that claims another client's id is refused") {
  const agg::ShareKeys sk{1, 2, {}};
  const agg::MaskedInput mi{1, 2, {5}};
  const agg::UnmaskResponse ur{1, 2, {}, {}};
  CHECK_THROWS_WITH(wire::from_wire(wire::to_wire(sk), 1, 3), Catch::Contains("shareKeys.sender is client 2"));
  CHECK_THROWS_WITH(wire::from_wire(wire::to_wire(mi), 1, 3, 1), Catch::Contains("maskedInput.sender is client 2"));
  CHECK_THROWS_WITH(wire::from_wire(wire::to_wire(ur), 1, 3), Catch::Contains("unmaskResponse.sender is client 2"));
}

TEST_CASE("wire: coordinator messages round-trip, the unmask request lists who dropped") {
  const agg::KeysBroadcast kb{4, 2, {{1, key(3), key(4)}, {3, key(5), key(6)}}};
  const agg::KeysBroadcast kb2 = wire::from_wire(over_the_wire(wire::to_wire(kb), 0), 4);
  CHECK(kb2.round == 4);
  CHECK(kb2.recipient == 2);
  REQUIRE(kb2.neighbours.size() == 2);
  CHECK(kb2.neighbours[0].c_public == key(3));
  CHECK(kb2.neighbours[1].id == 3);
  CHECK(kb2.neighbours[1].s_public == key(6));

  const agg::SharesDelivery sd{4, 2, {{1, 2, box(42)}}};
  const agg::SharesDelivery sd2 = wire::from_wire(over_the_wire(wire::to_wire(sd), 0), 4);
  REQUIRE(sd2.shares.size() == 1);
  CHECK(sd2.shares[0].from == 1);
  CHECK(sd2.shares[0].box == box(42));

  const protocol::UnmaskRequestBody req = over_the_wire(wire::to_wire(agg::UnmaskRequest{4, {1, 3, 4}}, 5), 0);
  protocol::PartReader reader(req.part);
  auto r = reader.root<schema::UnmaskRequest>();
  REQUIRE(r.getDropped().size() == 2);
  CHECK(r.getDropped()[0] == 2);
  CHECK(r.getDropped()[1] == 5);
  CHECK(wire::from_wire(req, 4).survivors == std::vector<std::uint32_t>{1, 3, 4});
}

TEST_CASE("wire: every field a peer sends is checked, naming the field") {
  auto advertise = [](std::size_t c_bytes, std::size_t signature_bytes) {
    const std::vector<std::uint8_t> c(c_bytes, 1), s(32, 2), sig(signature_bytes, 3);
    return protocol::AdvertiseKeysBody{protocol::make_part<schema::AdvertiseKeys>([&](schema::AdvertiseKeys::Builder b) {
      b.setCPublic(data_of(c));
      b.setSPublic(data_of(s));
      b.setSignature(data_of(sig));
    })};
  };
  CHECK_NOTHROW(wire::from_wire(advertise(32, 64), 1, 1));
  CHECK_THAT(refusal_of([&] { wire::from_wire(advertise(31, 0), 1, 1); }),
             Catch::Contains("advertiseKeys.cPublic: must be exactly 32 bytes, got 31"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(advertise(32, 63), 1, 1); }),
             Catch::Contains("advertiseKeys.signature: must be empty or 64 bytes, got 63"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(protocol::AdvertiseKeysBody{}, 1, 1); }),
             Catch::Contains("advertiseKeys: is missing"));

  // A share box of any other size than a share box's.
  CHECK_THAT(refusal_of([&] { wire::from_wire(wire::to_wire(agg::ShareKeys{1, 1, {{1, 2, {1, 2, 3}}}}), 1, 1); }),
             Catch::Contains("shareKeys.shares.box: 3 bytes, a share box has"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(wire::to_wire(agg::SharesDelivery{1, 1, {{2, 1, {}}}}), 1); }),
             Catch::Contains("sharesDelivery.shares.box: 0 bytes"));

  // A masked vector of another length than the plan's d, refused before it is copied.
  CHECK_THAT(refusal_of([&] { wire::from_wire(wire::to_wire(agg::MaskedInput{1, 1, {1, 2}}), 1, 1, 3); }),
             Catch::Contains("maskedInput.masked: 8 bytes, but the round plan's vectorLength 3 needs 12"));

  auto response = [](schema::SecretKind kind, std::uint32_t x, unsigned y_count) {
    return protocol::UnmaskResponseBody{
        protocol::make_part<schema::UnmaskResponse>([&](schema::UnmaskResponse::Builder b) {
          b.setSender(1);
          auto s = b.initShares(1)[0];
          s.setOwner(2);
          s.setKind(kind);
          s.setX(x);
          s.initY(y_count);
        })};
  };
  CHECK_NOTHROW(wire::from_wire(response(schema::SecretKind::PAIRWISE_KEY, 1, 2), 1, 1));
  CHECK_THAT(refusal_of([&] { wire::from_wire(response(static_cast<schema::SecretKind>(2), 1, 2), 1, 1); }),
             Catch::Contains("unmaskResponse.shares.kind: unknown value 2"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(response(schema::SecretKind::SELF_MASK, 0, 2), 1, 1); }),
             Catch::Contains("unmaskResponse.shares.x: Shamir x-coordinate 0"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(response(schema::SecretKind::SELF_MASK, 1, 0), 1, 1); }),
             Catch::Contains("unmaskResponse.shares.y: is empty"));

  const agg::KeysBroadcast twice{1, 2, {{1, key(3), key(4)}, {1, key(5), key(6)}}};
  CHECK_THAT(refusal_of([&] { wire::from_wire(wire::to_wire(twice), 1); }),
             Catch::Contains("keysBroadcast.neighbours.id: id 1 appears twice"));

  const auto both = protocol::UnmaskRequestBody{protocol::make_part<schema::UnmaskRequest>([](auto b) {
    b.initSurvivors(2).set(0, 1);
    b.initDropped(1).set(0, 1);
  })};
  CHECK_THAT(refusal_of([&] { wire::from_wire(both, 1); }), Catch::Contains("unmaskRequest.dropped: id 1 appears twice"));
}

TEST_CASE("wire: a part that is not a well-formed struct is refused, not read") {
  // A struct pointer whose data section runs far past the part's one word.
  const std::uint64_t hostile = (std::uint64_t{1000} << 32) | 0;
  auto part = protocol::OpaquePart{protocol::Payload<std::uint64_t>::own({hostile})};
  CHECK_THAT(refusal_of([&] { wire::from_wire(protocol::MaskedInputBody{part}, 1, 1, 1); }),
             Catch::Contains("maskedInput: malformed"));
}

TEST_CASE("wire: the plan's secure-aggregation block carries the SecAgg parameters and the encoding") {
  const protocol::RoundPlan plan = secure_plan({kParams, 20, 0.5, 99});
  const wire::SecureSettings back = wire::secure_settings(over_the_wire(plan, 0));
  CHECK(back.params.num_clients == 5);
  CHECK(back.params.threshold == 4);
  CHECK(back.params.degree == 4);
  CHECK(back.params.vector_length == 12);
  CHECK(back.params.graph_seed == key(7));
  CHECK(back.params.prg == privacy::PrgKind::kAes256Ctr);
  CHECK(back.quant_bits == 20);
  CHECK(back.clip_range == 0.5);
  CHECK(back.noise_bound == 99);
  agg::SecAggParams chacha = kParams;
  chacha.prg = privacy::PrgKind::kChaCha20;
  CHECK(wire::secure_settings(secure_plan({chacha, 20, 0.5, 0})).params.prg == privacy::PrgKind::kChaCha20);

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
  CHECK(e.min_survivors == kParams.threshold);  // distributed noise is split over t
  CHECK(e.vector_length() == kParams.vector_length);
}

TEST_CASE("wire: a secure plan's settings are checked against the plan, naming the field") {
  auto refused = [](agg::SecAggParams p, std::uint32_t bits = 20, double clip = 0.5) {
    return refusal_of([&] { wire::secure_settings(secure_plan({p, bits, clip, 0})); });
  };
  agg::SecAggParams p = kParams;
  p.threshold = 6;
  CHECK_THAT(refused(p), Catch::Contains("roundPlan.secagg.threshold: threshold 6 is outside 1..5"));
  p = kParams;
  p.num_clients = 4;
  CHECK_THAT(refused(p), Catch::Contains("roundPlan.secagg.numClients: 4 clients, but 5 nodes are selected"));
  p = kParams;
  p.degree = 5;
  CHECK_THAT(refused(p), Catch::Contains("roundPlan.secagg.degree: degree 5 is outside 1..4"));
  p = kParams;
  p.vector_length = 99;
  CHECK_THAT(refused(p), Catch::Contains("roundPlan.secagg.vectorLength: 99"));
  CHECK_THAT(refused(kParams, 33), Catch::Contains("roundPlan.secagg.quantBits: 33 is outside 2..32"));
  CHECK_THAT(refused(kParams, 20, std::numeric_limits<double>::quiet_NaN()),
             Catch::Contains("roundPlan.secagg.clipRange"));

  protocol::RoundPlan plan = secure_plan({kParams, 20, 0.5, 0});
  plan.secagg = protocol::make_part<schema::SecAggParams>([](schema::SecAggParams::Builder b) {
    b.setNumClients(5);
    b.setGraphSeed(data_of(std::vector<std::uint8_t>(31, 1)));
  });
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan); }),
             Catch::Contains("roundPlan.secagg.graphSeed: must be exactly 32 bytes, got 31"));
  plan.secagg = protocol::make_part<schema::SecAggParams>([](schema::SecAggParams::Builder b) {
    b.setNumClients(5);
    b.setGraphSeed(data_of(std::vector<std::uint8_t>(32, 1)));
    b.setPrg(static_cast<schema::MaskPrg>(7));
  });
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan); }),
             Catch::Contains("roundPlan.secagg.prg: unknown value 7"));
  plan.secagg = {};
  CHECK_THAT(refusal_of([&] { wire::update_encoding(plan); }), Catch::Contains("roundPlan.secagg: is missing"));
}

TEST_CASE("wire: malicious-mode fields and the consistency round round-trip") {
  privacy::Signature sig{};
  sig.fill(0x5A);
  const agg::AdvertiseKeys ak{7, 3, key(1), key(2), sig};
  CHECK(wire::from_wire(over_the_wire(wire::to_wire(ak), 12), 7, 3).signature == sig);

  const agg::KeysBroadcast kb{4, 2, {{1, key(3), key(4), sig}}, key(9)};
  const agg::KeysBroadcast kb2 = wire::from_wire(over_the_wire(wire::to_wire(kb), 0), 4);
  CHECK(kb2.graph_seed == key(9));
  REQUIRE(kb2.neighbours.size() == 1);
  CHECK(kb2.neighbours[0].signature == sig);

  const agg::ConsistencyCheck cc{4, {1, 3, 4}};
  CHECK(wire::from_wire(over_the_wire(wire::to_wire(cc), 0), 4).survivors == cc.survivors);

  const agg::SurvivorSignature ss{4, 3, sig};
  const agg::SurvivorSignature ss2 = wire::from_wire(over_the_wire(wire::to_wire(ss), 12), 4, 3);
  CHECK(ss2.sender == 3);
  CHECK(ss2.signature == sig);

  const agg::UnmaskRequest ur{4, {1, 3, 4}, {{4, 1, sig}, {4, 3, sig}}};
  const agg::UnmaskRequest ur2 = wire::from_wire(over_the_wire(wire::to_wire(ur, 5), 0), 4);
  REQUIRE(ur2.signatures.size() == 2);
  CHECK(ur2.signatures[1].sender == 3);
  CHECK(ur2.signatures[1].signature == sig);

  // Semi-honest messages carry no signature or seed field, as before the mode existed.
  const protocol::AdvertiseKeysBody plain = wire::to_wire(agg::AdvertiseKeys{7, 3, key(1), key(2)});
  protocol::PartReader reader(plain.part);
  CHECK_FALSE(reader.root<schema::AdvertiseKeys>().hasSignature());
}

TEST_CASE("wire: a malicious plan commits to the graph seed and never carries it") {
  wire::SecureSettings s{kParams, 16, 0.5, 0};
  s.params.mode = agg::SecAggMode::kMalicious;
  s.params.graph_seed_commitment = agg::commit_graph_seed(s.params.graph_seed);
  const protocol::RoundPlan plan = secure_plan(s);
  const agg::SecAggParams back = wire::secure_settings(plan).params;
  CHECK(back.mode == agg::SecAggMode::kMalicious);
  CHECK(back.graph_seed == privacy::Key32{});
  CHECK(back.graph_seed_commitment == s.params.graph_seed_commitment);
  CHECK(wire::secure_settings(secure_plan({kParams, 16, 0.5, 0})).params.mode == agg::SecAggMode::kSemiHonest);
}

TEST_CASE("wire: malicious-mode fields a peer sends are checked, naming the field") {
  const auto signature_body = [](std::uint32_t sender, std::size_t bytes) {
    const std::vector<std::uint8_t> sig(bytes, 1);
    return protocol::SurvivorSignatureBody{
        protocol::make_part<schema::SurvivorSignature>([&](schema::SurvivorSignature::Builder b) {
          b.setSender(sender);
          b.setSignature(data_of(sig));
        })};
  };
  CHECK_NOTHROW(wire::from_wire(signature_body(2, 64), 1, 2));
  CHECK_THAT(refusal_of([&] { wire::from_wire(signature_body(2, 63), 1, 2); }),
             Catch::Contains("survivorSignature.signature: must be exactly 64 bytes (Ed25519), got 63"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(signature_body(2, 0), 1, 2); }),
             Catch::Contains("survivorSignature.signature: must be exactly 64 bytes (Ed25519), got 0"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(signature_body(2, 64), 1, 3); }),
             Catch::Contains("survivorSignature.sender is client 2, but this node is client 3"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(protocol::SurvivorSignatureBody{}, 1, 2); }),
             Catch::Contains("survivorSignature: is missing"));

  const auto check_of = [](std::vector<std::uint32_t> ids) {
    return protocol::ConsistencyCheckBody{
        protocol::make_part<schema::ConsistencyCheck>([&](schema::ConsistencyCheck::Builder b) {
          auto list = b.initSurvivors(static_cast<unsigned>(ids.size()));
          for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
        })};
  };
  CHECK_THAT(refusal_of([&] { wire::from_wire(check_of({1, 3, 3}), 1); }),
             Catch::Contains("consistencyCheck.survivors: ids must be sorted and unique (3 then 3)"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(check_of({4, 2}), 1); }),
             Catch::Contains("consistencyCheck.survivors: ids must be sorted and unique (4 then 2)"));
  CHECK_THAT(refusal_of([&] { wire::from_wire(protocol::ConsistencyCheckBody{}, 1); }),
             Catch::Contains("consistencyCheck: is missing"));

  const auto request_with = [](std::size_t sig_bytes) {
    const std::vector<std::uint8_t> sig(sig_bytes, 1);
    return protocol::UnmaskRequestBody{protocol::make_part<schema::UnmaskRequest>([&](schema::UnmaskRequest::Builder b) {
      b.initSurvivors(1).set(0, 1);
      auto s = b.initSignatures(1)[0];
      s.setSender(1);
      s.setSignature(data_of(sig));
    })};
  };
  CHECK_THAT(refusal_of([&] { wire::from_wire(request_with(65), 1); }),
             Catch::Contains("unmaskRequest.signatures.signature: must be exactly 64 bytes (Ed25519), got 65"));

  const auto broadcast_with_seed = [](std::size_t seed_bytes) {
    const std::vector<std::uint8_t> seed(seed_bytes, 1);
    return protocol::KeysBroadcastBody{protocol::make_part<schema::KeysBroadcast>([&](schema::KeysBroadcast::Builder b) {
      b.setRecipient(1);
      b.setGraphSeed(data_of(seed));
    })};
  };
  CHECK_THAT(refusal_of([&] { wire::from_wire(broadcast_with_seed(31), 1); }),
             Catch::Contains("keysBroadcast.graphSeed: must be exactly 32 bytes, got 31"));
  const auto sig_bytes = std::vector<std::uint8_t>(10, 1);
  const auto body = protocol::KeysBroadcastBody{protocol::make_part<schema::KeysBroadcast>([&](schema::KeysBroadcast::Builder b) {
    b.setRecipient(2);
    auto p = b.initNeighbours(1)[0];
    p.setId(1);
    p.setCPublic(data_of(std::vector<std::uint8_t>(32, 3)));
    p.setSPublic(data_of(std::vector<std::uint8_t>(32, 4)));
    p.setSignature(data_of(sig_bytes));
  })};
  CHECK_THAT(refusal_of([&] { wire::from_wire(body, 1); }),
             Catch::Contains("keysBroadcast.neighbours.signature: must be empty or 64 bytes, got 10"));
}

TEST_CASE("wire: a plan's mode and commitment are checked, naming the field") {
  auto plan_with = [](std::uint16_t mode, std::size_t commitment_bytes) {
    protocol::RoundPlan plan = secure_plan({kParams, 16, 0.5, 0});
    const std::vector<std::uint8_t> commitment(commitment_bytes, 1);
    plan.secagg = protocol::make_part<schema::SecAggParams>([&](schema::SecAggParams::Builder b) {
      b.setNumClients(5);
      b.setThreshold(4);
      b.setDegree(4);
      b.setVectorLength(12);
      b.setGraphSeed(data_of(std::vector<std::uint8_t>(32, 0)));
      b.setQuantBits(16);
      b.setClipRange(0.5);
      b.setMode(static_cast<schema::SecAggMode>(mode));
      if (commitment_bytes) b.setGraphSeedCommitment(data_of(commitment));
    });
    return plan;
  };
  CHECK_NOTHROW(wire::secure_settings(plan_with(1, 32)));
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan_with(2, 32)); }),
             Catch::Contains("roundPlan.secagg.mode: unknown value 2 (known: 0..1)"));
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan_with(1, 0)); }),
             Catch::Contains("roundPlan.secagg.graphSeedCommitment: must be exactly 32 bytes, got 0"));
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan_with(1, 33)); }),
             Catch::Contains("roundPlan.secagg.graphSeedCommitment: must be exactly 32 bytes, got 33"));
  CHECK_THAT(refusal_of([&] { wire::secure_settings(plan_with(0, 32)); }),
             Catch::Contains("roundPlan.secagg.graphSeedCommitment: is set, but the mode is semi-honest"));
}
