// libFuzzer target for the wire: protocol's decoder (every message type) and,
// for what it accepts, federation/wire's readers of the secure-aggregation parts
// and a secure plan's settings. Built and run by scripts/fuzz.sh.
// Every input must either be refused with a protocol::DecodeError, or decode;
// then it must encode again to bytes that decode to an envelope that encodes to
// the same bytes, and each opaque part must be read by federation/wire or be
// refused with a fedge::Error; what wire reads must write and read back to the
// same message. Anything else (a crash, another exception, a sanitizer report) is
// a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "fedge/common/error.h"
#include "fedge/federation/wire.h"
#include "fedge/protocol/codec.h"
#include "fedge/protocol/opaque.h"

namespace {

using namespace fedge;
namespace wire = fedge::federation::wire;
namespace schema = fedge::protocol::wire;

void check(bool ok) {
  if (!ok) std::abort();
}

// Runs `read`, which may refuse its input with a fedge::Error (naming the
// field at fault): the one outcome besides success that is not a bug. True
// when it read.
template <class Read>
bool read_or_refuse(Read read) {
  try {
    read();
    return true;
  } catch (const Error&) {
    return false;
  }
}

// What wire reads, it writes in a form that it reads back to the same message
// (compared as the parts they write: a null list and an empty one read alike).
template <class Body, class Read, class Write>
void round_trip(const Body& body, Read read, Write write) {
  Body written;
  if (!read_or_refuse([&] { written = write(read(body)); })) return;
  check(write(read(written)).part == written.part);  // an Error here is a bug: wire refuses what it wrote
}

// A part's own sender field (1 when the part cannot be read that far), so the
// reader's sender check passes and the fuzzer reaches the fields behind it.
template <class Schema>
std::uint32_t claimed_sender(const protocol::OpaquePart& part) {
  try {
    return protocol::PartReader(part).root<Schema>().getSender();
  } catch (const kj::Exception&) {
    return 1;
  }
}

std::uint64_t masked_length(const protocol::OpaquePart& part) {
  try {
    return protocol::PartReader(part).root<schema::MaskedInput>().getMasked().size() / 4;
  } catch (const kj::Exception&) {
    return 0;
  }
}

void read_plan(const protocol::RoundPlan& plan) {
  read_or_refuse([&] {
    (void)wire::update_encoding(plan);
    if (!plan.secure) return;
    protocol::RoundPlan written = plan;
    written.secagg = wire::to_wire(wire::secure_settings(plan));
    check(wire::to_wire(wire::secure_settings(written)) == written.secagg);
  });
}

void read_parts(const protocol::Envelope& env) {
  const std::uint64_t round = env.round;
  const auto to_wire = [](const auto& m) { return wire::to_wire(m); };
  if (const auto* plan = std::get_if<protocol::RoundPlan>(&env.body)) {
    read_plan(*plan);
  } else if (const auto* ak = std::get_if<protocol::AdvertiseKeysBody>(&env.body)) {
    // A signature is checked and not kept, so the part is not written back.
    read_or_refuse([&] { (void)wire::from_wire(*ak, round, 1); });
  } else if (const auto* kb = std::get_if<protocol::KeysBroadcastBody>(&env.body)) {
    read_or_refuse([&] { (void)wire::from_wire(*kb, round); });
  } else if (const auto* sk = std::get_if<protocol::ShareKeysBody>(&env.body)) {
    const auto me = claimed_sender<schema::ShareKeys>(sk->part);
    round_trip(*sk, [&](const auto& b) { return wire::from_wire(b, round, me); }, to_wire);
  } else if (const auto* sd = std::get_if<protocol::SharesDeliveryBody>(&env.body)) {
    round_trip(*sd, [&](const auto& b) { return wire::from_wire(b, round); }, to_wire);
  } else if (const auto* mi = std::get_if<protocol::MaskedInputBody>(&env.body)) {
    const auto me = claimed_sender<schema::MaskedInput>(mi->part);
    const std::uint64_t d = masked_length(mi->part);
    round_trip(*mi, [&](const auto& b) { return wire::from_wire(b, round, me, d); }, to_wire);
    // The wrong length is refused, before any copy.
    check(!read_or_refuse([&] { (void)wire::from_wire(*mi, round, me, d + 1); }));
  } else if (const auto* ur = std::get_if<protocol::UnmaskRequestBody>(&env.body)) {
    read_or_refuse([&] { (void)wire::from_wire(*ur, round); });
  } else if (const auto* resp = std::get_if<protocol::UnmaskResponseBody>(&env.body)) {
    const auto me = claimed_sender<schema::UnmaskResponse>(resp->part);
    read_or_refuse([&] { (void)wire::from_wire(*resp, round, me); });
  } else if (const auto* cc = std::get_if<protocol::ConsistencyCheckBody>(&env.body)) {
    round_trip(*cc, [&](const auto& b) { return wire::from_wire(b, round); }, to_wire);
  } else if (const auto* ss = std::get_if<protocol::SurvivorSignatureBody>(&env.body)) {
    const auto me = claimed_sender<schema::SurvivorSignature>(ss->part);
    round_trip(*ss, [&](const auto& b) { return wire::from_wire(b, round, me); }, to_wire);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  protocol::Limits limits;
  limits.max_message_bytes = 1 << 20;  // small limits keep each run fast
  limits.max_vector_length = 1 << 16;
  protocol::Envelope env;
  try {
    env = protocol::decode(protocol::Bytes::copy_of({data, size}), limits);
  } catch (const protocol::DecodeError&) {
    return 0;
  }
  const protocol::Bytes once = protocol::encode(env);
  const protocol::Envelope again = protocol::decode(once, limits);  // what we wrote, we read
  const protocol::Bytes twice = protocol::encode(again);
  check(once.size() == twice.size() && std::equal(once.data(), once.data() + once.size(), twice.data()));
  read_parts(env);
  return 0;
}
