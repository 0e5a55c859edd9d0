#include <cstring>
#include <random>

#include <catch2/catch.hpp>
#include <capnp/serialize.h>

#include "samples.h"

using namespace fedge::protocol;
using fedge::protocol::test::all_samples;
using fedge::protocol::test::envelope;

namespace {

// Runs decode and returns the DecodeError it throws (failing the test if it
// does not throw, or throws anything else).
DecodeError decode_error(const Bytes& bytes, const Limits& limits = {}, const Expectations& expect = {}) {
  try {
    decode(bytes, limits, expect);
  } catch (const DecodeError& e) {
    CHECK(e.kind() == fedge::ErrorKind::kProtocol);
    return e;
  }
  FAIL("decode accepted a message it should refuse");
  throw;  // unreachable
}

std::vector<std::uint8_t> raw(const Envelope& e) {
  auto b = encode(e);
  return {b.data(), b.data() + b.size()};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("every message type round-trips with exact field values") {
  auto samples = all_samples();
  REQUIRE(samples.size() == std::variant_size_v<Body>);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    INFO("message " << body_name(samples[i].body));
    REQUIRE(samples[i].body.index() == i);
    Bytes bytes = encode(samples[i]);
    bool zero_copy = false;
    Envelope back = decode(bytes, Limits{}, {}, &zero_copy);
    CHECK(zero_copy);
    CHECK(back == samples[i]);
    CHECK(back.version == kProtocolVersion);
  }
}

TEST_CASE("bulk payloads point into the received bytes and outlive them") {
  auto sample = all_samples()[11];  // plainUpdate
  Payload<float> kept;
  {
    Bytes bytes = encode(sample);
    auto back = decode(bytes, {});
    const auto& m = std::get<PlainUpdate>(back.body).update;
    CHECK(reinterpret_cast<const std::uint8_t*>(m.data()) >= bytes.data());
    CHECK(reinterpret_cast<const std::uint8_t*>(m.data() + m.size()) <= bytes.data() + bytes.size());
    kept = m;
  }
  CHECK(kept == std::get<PlainUpdate>(sample.body).update);  // storage kept alive by the payload

  // Unaligned input: decoded from an aligned copy, same values.
  auto bytes = raw(sample);
  std::vector<std::uint8_t> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  Bytes unaligned = Bytes::adopt(nullptr, shifted.data() + 1, bytes.size());
  bool zero_copy = true;
  auto back = decode(unaligned, {}, {}, &zero_copy);
  CHECK_FALSE(zero_copy);
  CHECK(std::get<PlainUpdate>(back.body).update == std::get<PlainUpdate>(sample.body).update);
}

TEST_CASE("borrowed unaligned payloads encode by copy") {
  std::vector<float> values(11);
  std::iota(values.begin(), values.end(), 3.0f);
  auto e = envelope(PlainUpdate{5, Payload<float>::borrow(std::span<const float>(values).subspan(1)), 0.f}, 3);
  auto back = decode(encode(e), {});
  CHECK(std::get<PlainUpdate>(back.body).update.to_vector() == std::vector<float>(values.begin() + 1, values.end()));
}

TEST_CASE("truncated messages are refused at every cut point") {
  for (const auto& sample : all_samples()) {
    auto bytes = raw(sample);
    for (std::size_t cut = 0; cut < bytes.size(); cut += (cut < 64 ? 1 : 8)) {
      INFO(body_name(sample.body) << " cut at " << cut << " of " << bytes.size());
      auto e = decode_error(Bytes::copy_of({bytes.data(), cut}));
      CHECK(e.code() == ErrorCode::kMalformed);
    }
  }
}

TEST_CASE("trailing bytes after a message are refused") {
  auto bytes = raw(all_samples()[2]);
  bytes.resize(bytes.size() + 8, 0);
  auto e = decode_error(Bytes::copy_of(bytes));
  CHECK(contains(e.what(), "after the end of the message"));
}

TEST_CASE("random garbage and random mutations never crash") {
  std::mt19937_64 rng(20240607);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::uint8_t> bytes(8 * (rng() % 64));
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    try {
      decode(Bytes::copy_of(bytes), {});
    } catch (const DecodeError&) {
      ++refused;
    }
  }
  CHECK(refused > 2900);  // random bytes almost never form a valid envelope
  auto samples = all_samples();
  for (int i = 0; i < 6000; ++i) {
    auto bytes = raw(samples[i % samples.size()]);
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    try {
      decode(Bytes::copy_of(bytes), {});
    } catch (const DecodeError&) {
    }
  }
}

TEST_CASE("a message over the size limit is refused before parsing") {
  Limits limits;
  limits.max_message_bytes = 1024;
  auto e = decode_error(encode(all_samples()[8]), limits);
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "max_message_bytes"));
}

TEST_CASE("list and vector lengths over the limits are refused, naming the field") {
  Limits limits;
  limits.max_list_length = 3;
  Metrics m;
  for (int i = 0; i < 4; ++i) m.entries.push_back({"m" + std::to_string(i), 1.0});
  auto e = decode_error(encode(envelope(m, 5)), limits);
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "metrics.entries: 4 entries, limit 3"));

  limits = {};
  limits.max_vector_length = 999;
  e = decode_error(encode(all_samples()[11]), limits);  // plainUpdate of 1000
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "plainUpdate.update: 1000 elements, limit 999"));
}

TEST_CASE("traversal and nesting limits from Limits apply") {
  Limits limits;
  limits.traversal_limit_words = 50;
  auto e = decode_error(encode(all_samples()[11]), limits);  // 1000 floats = 500 words
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "plainUpdate.update"));
  CHECK(contains(e.what(), "limit"));

  limits = {};
  limits.nesting_limit = 2;  // envelope -> unmaskResponse -> shares -> y is deeper
  e = decode_error(encode(all_samples()[10]), limits);
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "unmaskResponse.shares"));
}

TEST_CASE("a hostile list length claiming billions of empty elements hits the traversal limit") {
  // Metrics with one entry; then rewrite the composite-list tag word to claim
  // 2^29-1 elements of zero size, which costs no bytes on the wire.
  auto bytes = raw(envelope(Metrics{{{"x", 1.0}}}, 5));
  const std::uint64_t tag = (1ull << 2) | (1ull << 32) | (1ull << 48);  // 1 element, 1 data word, 1 pointer
  std::size_t at = bytes.size();
  for (std::size_t i = 8; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    if (w == tag) at = i;
  }
  REQUIRE(at < bytes.size());
  const std::uint64_t hostile = (((1ull << 29) - 1) << 2);
  std::memcpy(bytes.data() + at, &hostile, 8);
  auto e = decode_error(Bytes::copy_of(bytes));
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "metrics.entries"));
}

TEST_CASE("a list pointer past the end of the segment is refused") {
  auto bytes = raw(all_samples()[3]);  // roundPlan: 4 selected ids
  // Bump every pointer's count field is too blunt; instead cut the segment size in the table.
  std::uint32_t words;
  std::memcpy(&words, bytes.data() + 4, 4);
  words -= 2;
  std::memcpy(bytes.data() + 4, &words, 4);
  bytes.resize(bytes.size() - 16);
  auto e = decode_error(Bytes::copy_of(bytes));
  CHECK(e.code() == ErrorCode::kMalformed);
}

TEST_CASE("wrong version, round, union and enum values are specific errors") {
  auto sample = all_samples()[2];  // heartbeat
  sample.version = 2;
  auto e = decode_error(encode(sample));
  CHECK(e.code() == ErrorCode::kBadVersion);
  CHECK(contains(e.what(), "protocol version 2, this build speaks version 1"));

  Expectations expect;
  expect.round = 43;
  e = decode_error(encode(all_samples()[8]), {}, expect);
  CHECK(e.code() == ErrorCode::kWrongRound);
  CHECK(contains(e.what(), "round 42, expected round 43"));

  // Layout (single segment): [table][root ptr][envelope data: version u16, tag u16, sender u32][round]...
  auto bytes = raw(all_samples()[2]);
  std::uint16_t version, tag;
  std::memcpy(&version, bytes.data() + 16, 2);
  std::memcpy(&tag, bytes.data() + 18, 2);
  REQUIRE(version == kProtocolVersion);
  REQUIRE(tag == 2);
  const std::uint16_t unknown_tag = 77;
  auto patched = bytes;
  std::memcpy(patched.data() + 18, &unknown_tag, 2);
  e = decode_error(Bytes::copy_of(patched));
  CHECK(e.code() == ErrorCode::kUnsupported);
  CHECK(contains(e.what(), "unknown message type 77"));

  // Heartbeat struct follows the envelope (3 data words with the attempt, 1
  // pointer): unixMs at +0, state at +8.
  std::uint64_t unix_ms;
  std::memcpy(&unix_ms, bytes.data() + 48, 8);
  REQUIRE(unix_ms == 1700000000123ull);
  const std::uint16_t bad_state = 9;
  std::memcpy(bytes.data() + 56, &bad_state, 2);
  e = decode_error(Bytes::copy_of(bytes));
  CHECK(e.code() == ErrorCode::kMalformed);
  CHECK(contains(e.what(), "heartbeat.state: unknown value 9"));
}

TEST_CASE("register ids are checked") {
  auto e = decode_error(encode(envelope(Register{4, "n", test::key_of(1), {}}, 5)));
  CHECK(contains(e.what(), "register.nodeId 4 differs from sender 5"));
}

// The fields of secure-aggregation bodies are federation/wire's to check
// (tests/federation/test_wire.cpp); their structure is checked here.
TEST_CASE("a secure-aggregation body whose pointer runs past the message is refused") {
  // Encode AdvertiseKeys, then grow the cPublic Data pointer's length from 32 to 4000.
  auto bytes = raw(envelope(test::sample_secagg_body(SecAggStep::kAdvertiseKeys), 3));
  // A byte-list pointer to 32 bytes: kind 1, element size 2 (byte), count 32 in the top 29 bits.
  std::size_t found = 0;
  for (std::size_t i = 8; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    if ((w & 3) == 1 && ((w >> 32) & 7) == 2 && (w >> 35) == 32 && !found) {
      w = (w & ((1ull << 35) - 1)) | (4000ull << 35);
      std::memcpy(bytes.data() + i, &w, 8);
      found = i;
    }
  }
  REQUIRE(found != 0);
  auto e = decode_error(Bytes::copy_of(bytes));
  CHECK(e.code() == ErrorCode::kMalformed);
  CHECK(contains(e.what(), "advertiseKeys"));
}

TEST_CASE("a secure plan must carry its secure-aggregation settings") {
  // encode() always writes the settings struct, so the hostile plan is built by hand.
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::Envelope>();
  root.setVersion(kProtocolVersion);
  root.setRound(1);
  root.setAttempt(1);
  auto plan = root.initBody().initRoundPlan();
  plan.setSecure(true);
  auto selected = plan.initSelected(3);
  for (unsigned i = 0; i < 3; ++i) selected.set(i, i + 1);
  const auto flat = capnp::messageToFlatArray(message);
  auto e = decode_error(Bytes::copy_of({reinterpret_cast<const std::uint8_t*>(flat.begin()), flat.size() * 8}));
  INFO(e.what());
  CHECK(contains(e.what(), "roundPlan.secagg: a secure plan must carry its secure-aggregation settings"));
}

TEST_CASE("update lengths must match the plan when known") {
  Expectations expect;
  expect.update_length = 1001;
  auto e = decode_error(encode(all_samples()[11]), {}, expect);
  CHECK(contains(e.what(), "plainUpdate.update: 1000 elements"));
  expect.update_length = 1000;
  CHECK_NOTHROW(decode(encode(all_samples()[11]), {}, expect));
}

TEST_CASE("value ranges and roles are checked") {
  auto plan = test::sample_plan();
  plan.selected = {1, 2, 2, 3};
  auto e = decode_error(encode(envelope(plan, 0)));
  CHECK(contains(e.what(), "roundPlan.selected: id 2 appears twice"));

  plan = test::sample_plan();
  plan.hyper.learning_rate = std::numeric_limits<float>::quiet_NaN();
  e = decode_error(encode(envelope(plan, 0)));
  CHECK(contains(e.what(), "roundPlan.hyper.learningRate"));

  plan = test::sample_plan();
  plan.loss_cap = -std::numeric_limits<double>::infinity();  // appended field, checked like the others
  e = decode_error(encode(envelope(plan, 0)));
  CHECK(contains(e.what(), "roundPlan.lossCap"));

  plan = test::sample_plan();
  e = decode_error(encode(envelope(plan, 3)));  // a node may not send a plan
  CHECK(contains(e.what(), "roundPlan comes only from the coordinator"));

  e = decode_error(encode(envelope(all_samples()[8].body, 0)));  // nor the coordinator a masked input
  CHECK(contains(e.what(), "maskedInput comes only from a node"));

  HiddenStates h{1, HiddenKind::kLogits, 0, 0, {2, 3}, Payload<float>::own(std::vector<float>(5))};
  e = decode_error(encode(envelope(h, 3)));
  CHECK(contains(e.what(), "hiddenStates.data: 5 elements, but the shape says 6"));

  GlobalModel g{1, ModelFormat::kFlatF32, Payload<std::uint8_t>::own(std::vector<std::uint8_t>(12)), {{"w", {4}}}};
  e = decode_error(encode(envelope(g, 0)));
  CHECK(contains(e.what(), "globalModel.data: 12 bytes, but the layout's tensors need 16 bytes"));
}

TEST_CASE("texts with NUL bytes round-trip whole") {
  using namespace fedge::protocol;
  Envelope env;
  env.sender = 3;
  InferenceResponse r;
  r.request_id = 9;
  r.text = std::string("a\0b", 3);
  r.note = std::string("\0", 1);
  env.body = r;
  const auto back = decode(encode(env), Limits{});
  const auto& got = std::get<InferenceResponse>(back.body);
  CHECK(got.text == std::string("a\0b", 3));
  CHECK(got.note.size() == 1);
}

// Found by fuzz_protocol: a list of zero-sized elements costs a word per element
// to walk and none to store, so a decoded part that the receiver's traversal
// limit allowed must not be refused when it is read or encoded again.
TEST_CASE("a decoded part of many empty list elements encodes and decodes again") {
  // Default elements, in canonical form: a list of 5000 zero-sized structs.
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::UnmaskResponse>();
  root.setSender(2);
  root.initShares(5000);
  const auto canonical = capnp::canonicalize(root.asReader());
  REQUIRE(canonical.size() < 16);
  std::vector<std::uint64_t> words(canonical.size());
  std::memcpy(words.data(), canonical.begin(), canonical.size() * 8);
  const auto body = UnmaskResponseBody{OpaquePart{Payload<std::uint64_t>::own(std::move(words))}};
  const auto back = decode(encode(envelope(body, 12)), {});
  CHECK(back.body == Body{body});
  PartReader reader(std::get<UnmaskResponseBody>(back.body).part);
  CHECK(reader.root<wire::UnmaskResponse>().getShares().size() == 5000);
}

TEST_CASE("consistency-round messages: list limits, roles and truncation are checked (malicious SecAgg)") {
  Limits limits;
  limits.max_list_length = 3;
  const auto survivors = [](unsigned n) {
    return ConsistencyCheckBody{make_part<wire::ConsistencyCheck>([&](wire::ConsistencyCheck::Builder b) {
      auto list = b.initSurvivors(n);
      for (unsigned i = 0; i < n; ++i) list.set(i, i + 1);
    })};
  };
  auto e = decode_error(encode(envelope(survivors(4), 0)), limits);
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "consistencyCheck.survivors: 4 entries, limit 3"));
  const auto signatures = UnmaskRequestBody{make_part<wire::UnmaskRequest>([](wire::UnmaskRequest::Builder b) {
    b.initSurvivors(1).set(0, 1);
    b.initSignatures(4);
  })};
  e = decode_error(encode(envelope(signatures, 0)), limits);
  CHECK(e.code() == ErrorCode::kTooLarge);
  CHECK(contains(e.what(), "unmaskRequest.signatures: 4 entries, limit 3"));

  // Roles: the coordinator asks, nodes sign.
  e = decode_error(encode(envelope(test::sample_secagg_body(SecAggStep::kConsistencyCheck), 12)));
  CHECK(contains(e.what(), "consistencyCheck comes only from the coordinator"));
  e = decode_error(encode(envelope(test::sample_secagg_body(SecAggStep::kSurvivorSignature), 0)));
  CHECK(contains(e.what(), "survivorSignature comes only from a node"));

  // Truncation at every cut point: all_samples() has both ("truncated messages are refused ...").
}
