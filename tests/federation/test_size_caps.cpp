// Per-message size caps (issue 16, finding 8): each message type has its own
// cap from the round plan, and decode refuses a message over it before it
// reads (let alone copies) any field. The round trips in test_round_trip.cpp
// check that the caps fit every real message (Net::size_refusals).
#include <catch2/catch.hpp>

#include <cstring>
#include <optional>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/size_caps.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/codec.h"

using namespace fedge;
namespace agg = fedge::aggregation;
namespace wire = fedge::federation::wire;
using protocol::ErrorCode;

namespace {

protocol::Envelope from_node(protocol::NodeId node, protocol::Body body) {
  protocol::Envelope env;
  env.round = 1;
  env.attempt = 1;
  env.sender = node;
  env.body = std::move(body);
  return env;
}

// A well-formed message made `extra` words longer: its one segment claims
// them, nothing points into them (Cap'n Proto accepts it; only a size cap can
// tell that a heartbeat does not need them).
protocol::Bytes padded(const protocol::Envelope& env, std::uint32_t extra_words) {
  const protocol::Bytes bytes = protocol::encode(env);
  std::vector<std::uint8_t> out(bytes.span().begin(), bytes.span().end());
  std::uint32_t segments_minus_one = 0, words = 0;
  std::memcpy(&segments_minus_one, out.data(), 4);
  REQUIRE(segments_minus_one == 0);
  std::memcpy(&words, out.data() + 4, 4);
  words += extra_words;
  std::memcpy(out.data() + 4, &words, 4);
  out.resize(out.size() + std::size_t{extra_words} * 8, 0);
  return protocol::Bytes::copy_of(out);
}

std::optional<ErrorCode> refusal_code(const protocol::Bytes& bytes, const protocol::Expectations& expect, std::string* what) {
  try {
    protocol::decode(bytes, protocol::Limits{}, expect);
  } catch (const protocol::DecodeError& e) {
    *what = e.what();
    return e.code();
  }
  return std::nullopt;  // accepted
}

protocol::RoundPlan secure_plan(std::uint64_t length, std::uint32_t n, std::uint32_t degree) {
  agg::SecAggParams params{n, degree, degree, length + 2, privacy::Key32{}, privacy::PrgKind::kChaCha20};
  params.threshold = agg::min_threshold(degree, 0.0);
  protocol::RoundPlan plan;
  plan.update_length = length;
  plan.secure = true;
  plan.secagg = wire::to_wire(wire::SecureSettings{params, 16, 1.0, 0});
  plan.example_scale = 1;
  for (std::uint32_t i = 1; i <= n; ++i) plan.selected.push_back(i);
  return plan;
}

}  // namespace

TEST_CASE("size caps: a heartbeat padded to 1 MiB is refused by its own cap, not the 512 MiB limit") {
  const protocol::Bytes big = padded(from_node(3, protocol::Heartbeat{1, protocol::NodeState::kIdle, 0}), 1 << 17);
  REQUIRE(big.size() > (std::size_t{1} << 20));
  protocol::Expectations none;
  std::string what;
  CHECK(refusal_code(big, none, &what) == std::nullopt);  // within Limits: what every receiver did before
  protocol::Expectations coordinator;
  coordinator.size_caps = federation::coordinator_size_caps(nullptr, 100, protocol::Limits{});
  CHECK(refusal_code(big, coordinator, &what) == ErrorCode::kTooLarge);
  CHECK_THAT(what, Catch::Contains("heartbeat") && Catch::Contains("cap of 512 bytes"));
  // An honest heartbeat fits.
  const protocol::Bytes small = protocol::encode(from_node(3, protocol::Heartbeat{1, protocol::NodeState::kIdle, 0}));
  CHECK(refusal_code(small, coordinator, &what) == std::nullopt);
}

TEST_CASE("size caps: a masked input longer than the plan's update is refused before it is copied") {
  const protocol::RoundPlan plan = secure_plan(1000, 5, 4);
  protocol::Expectations expect;
  expect.size_caps = federation::coordinator_size_caps(&plan, 1000, protocol::Limits{});
  auto masked = [](std::size_t elements) {
    return from_node(2, wire::to_wire(agg::MaskedInput{1, 2, std::vector<std::uint32_t>(elements, 7)}));
  };
  std::string what;
  CHECK(refusal_code(protocol::encode(masked(1002)), expect, &what) == std::nullopt);
  CHECK(refusal_code(protocol::encode(masked(1002 + 200)), expect, &what) == ErrorCode::kTooLarge);
  CHECK_THAT(what, Catch::Contains("maskedInput"));
  // A plain update is held to the update length the same way.
  auto plain = [](std::size_t n) {
    return from_node(2, protocol::PlainUpdate{5, protocol::Payload<float>::own(std::vector<float>(n, 0.5F)), 0.1F});
  };
  CHECK(refusal_code(protocol::encode(plain(1000)), expect, &what) == std::nullopt);
  CHECK(refusal_code(protocol::encode(plain(1000 + 200)), expect, &what) == ErrorCode::kTooLarge);
}

TEST_CASE("size caps: share lists are held to the plan's degree, on both sides") {
  const protocol::RoundPlan plan = secure_plan(10, 9, 4);
  auto shares = [](std::size_t count) {
    std::vector<agg::EncryptedShare> out;
    for (std::size_t i = 0; i < count; ++i)
      out.push_back({2, static_cast<agg::ClientId>(i + 3), std::vector<std::uint8_t>(agg::share_box_bytes(), 1)});
    return out;
  };
  protocol::Expectations coordinator;
  coordinator.size_caps = federation::coordinator_size_caps(&plan, 10, protocol::Limits{});
  std::string what;
  CHECK(refusal_code(protocol::encode(from_node(2, wire::to_wire(agg::ShareKeys{1, 2, shares(4)}))), coordinator,
                     &what) == std::nullopt);
  CHECK(refusal_code(protocol::encode(from_node(2, wire::to_wire(agg::ShareKeys{1, 2, shares(12)}))), coordinator,
                     &what) == ErrorCode::kTooLarge);
  CHECK_THAT(what, Catch::Contains("shareKeys"));

  protocol::Expectations node;
  node.size_caps = federation::node_size_caps(&plan, 10, protocol::Limits{});
  auto delivery = [&](std::size_t count) {
    protocol::Envelope env = from_node(0, wire::to_wire(agg::SharesDelivery{1, 2, shares(count)}));
    env.sender = protocol::kCoordinatorId;
    return protocol::encode(env);
  };
  CHECK(refusal_code(delivery(4), node, &what) == std::nullopt);
  CHECK(refusal_code(delivery(12), node, &what) == ErrorCode::kTooLarge);
}

TEST_CASE("size caps: messages a node never sends are small at the coordinator, and 0 means only the limits") {
  const auto caps = federation::coordinator_size_caps(nullptr, 100, protocol::Limits{});
  CHECK(caps.of<protocol::GlobalModel>() == federation::kSmallMessageBytes);
  CHECK(caps.of<protocol::RoundPlan>() == federation::kSmallMessageBytes);
  CHECK(caps.of<protocol::InferenceRequest>() == federation::kSmallMessageBytes);
  CHECK(caps.of<protocol::Register>() > federation::kMaxProfileBytes);
  // The largest cap bounds what ZeroMQ reads in at all.
  CHECK(federation::largest_cap(caps) >= caps.of<protocol::PlainUpdate>());
  CHECK(federation::largest_cap(caps) < protocol::Limits{}.max_message_bytes);
  const auto node = federation::node_size_caps(nullptr, 0, protocol::Limits{});
  CHECK(node.of<protocol::GlobalModel>() == 0);  // the node does not know its model's size yet
  CHECK(federation::largest_cap(node) == 0);
  CHECK(federation::node_size_caps(nullptr, 100, protocol::Limits{}).of<protocol::GlobalModel>() > 400);
}
