#include "fedge/federation/size_caps.h"

#include <algorithm>

#include "fedge/aggregation/secagg.h"
#include "fedge/federation/membership.h"
#include "fedge/federation/wire.h"
#include "fedge/privacy/shamir.h"

namespace fedge::federation {
namespace {

using namespace protocol;

// SecAgg+ needs: how many peers one node exchanges with (degree k; its
// shares go to k neighbours and k + 1 holders reveal), and the node count.
struct RoundShape {
  std::size_t degree = 0;
  std::size_t nodes = 0;
};

RoundShape shape_of(const RoundPlan* plan, const Limits& limits) {
  if (plan && plan->secure) {
    const auto params = wire::secure_settings(*plan).params;
    return {params.degree, params.num_clients};
  }
  if (plan) return {0, plan->selected.size()};
  return {limits.max_list_length, limits.max_list_length};
}

// The masked vector's length: the plan's SecAgg vectorLength (update, weight,
// loss and HetLoRA's rank-wise weights), else the update plus its two.
std::uint64_t masked_length(const RoundPlan* plan, std::uint64_t length) {
  if (plan && plan->secure) return wire::secure_settings(*plan).params.vector_length;
  return length + 2;
}

std::size_t floats(std::uint64_t n) { return static_cast<std::size_t>(n) * 4 + 8; }

// One revealed Shamir share: owner, kind, x and one word per chunk of a 32-byte secret.
std::size_t revealed_share_bytes() { return 64 + 8 * privacy::shamir_chunks(32); }

// One encrypted share: the AEAD box and room for its ids and pointers.
std::size_t encrypted_share_bytes() { return aggregation::share_box_bytes() + kShareEntryBytes; }

SizeCaps small_for_all() {
  SizeCaps caps;
  caps.bytes.fill(kSmallMessageBytes);
  return caps;
}

}  // namespace

SizeCaps coordinator_size_caps(const RoundPlan* plan, std::uint64_t update_length, const Limits& limits) {
  const RoundShape s = shape_of(plan, limits);
  const std::uint64_t length = plan ? plan->update_length : update_length;
  SizeCaps caps = small_for_all();
  // Register: the name and profile the core accepts, a model name and a key.
  caps.set<Register>(kEnvelopeBytes + kMaxNodeNameBytes + kMaxProfileBytes + 4096);
  caps.set<Heartbeat>(kEnvelopeBytes);
  caps.set<Metrics>(kEnvelopeBytes + 64 * 1024);
  caps.set<ErrorReply>(kEnvelopeBytes + 16 * 1024);
  caps.set<AdvertiseKeysBody>(kEnvelopeBytes + kPeerKeysBytes);
  caps.set<ShareKeysBody>(kEnvelopeBytes + s.degree * encrypted_share_bytes());
  caps.set<MaskedInputBody>(kEnvelopeBytes + floats(masked_length(plan, length)));  // u32 ring elements
  caps.set<UnmaskResponseBody>(kEnvelopeBytes + (s.degree + 1) * revealed_share_bytes());
  caps.set<SurvivorSignatureBody>(kEnvelopeBytes + kSignatureEntryBytes);
  caps.set<PlainUpdate>(kEnvelopeBytes + floats(length));
  return caps;
}

SizeCaps node_size_caps(const RoundPlan* plan, std::uint64_t update_length, const Limits& limits) {
  const RoundShape s = shape_of(plan, limits);
  SizeCaps caps = small_for_all();
  // The plan lists the selected nodes and carries the model's layout (names
  // and shapes of up to max_list_length tensors): only the limits bound it.
  caps.set<RoundPlan>(0);
  caps.set<RegisterAck>(kEnvelopeBytes + 1024);
  caps.set<KeysBroadcastBody>(kEnvelopeBytes + s.degree * kPeerKeysBytes);
  caps.set<SharesDeliveryBody>(kEnvelopeBytes + s.degree * encrypted_share_bytes());
  // Survivors and dropped ids, and in malicious mode a t-quorum of survivor
  // signatures (t <= degree + 1); the consistency check lists the survivors.
  caps.set<UnmaskRequestBody>(kEnvelopeBytes + 2 * floats(s.nodes) + (s.degree + 1) * kSignatureEntryBytes);
  caps.set<ConsistencyCheckBody>(kEnvelopeBytes + floats(s.nodes));
  // The model and its layout (a tensor name and shape per entry).
  caps.set<GlobalModel>(update_length ? kEnvelopeBytes + floats(update_length) + kLayoutBytes : 0);
  caps.set<ErrorReply>(kEnvelopeBytes + 16 * 1024);
  return caps;
}

std::size_t largest_cap(const SizeCaps& caps) {
  if (std::find(caps.bytes.begin(), caps.bytes.end(), std::size_t{0}) != caps.bytes.end()) return 0;
  return *std::max_element(caps.bytes.begin(), caps.bytes.end());
}

}  // namespace fedge::federation
