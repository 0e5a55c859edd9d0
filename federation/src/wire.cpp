#include "fedge/federation/wire.h"

#include <algorithm>
#include <string>

#include "fedge/common/error.h"

namespace fedge::federation::wire {
namespace {

// A node's message names its own client id; the coordinator knows it from the
// authenticated sender, so a mismatch is a node speaking for a peer.
void check_sender(const char* message, std::uint32_t claimed, agg::ClientId sender) {
  if (claimed != sender)
    throw Error(ErrorKind::kProtocol, std::string(message) + ".sender is client " + std::to_string(claimed) +
                                          ", but this node is client " + std::to_string(sender));
}

std::vector<protocol::EncryptedShare> shares_to_wire(std::vector<agg::EncryptedShare> shares) {
  std::vector<protocol::EncryptedShare> out;
  out.reserve(shares.size());
  for (auto& s : shares) out.push_back({s.from, s.to, std::move(s.box)});
  return out;
}

std::vector<agg::EncryptedShare> shares_from_wire(const std::vector<protocol::EncryptedShare>& shares) {
  std::vector<agg::EncryptedShare> out;
  out.reserve(shares.size());
  for (const auto& s : shares) out.push_back({s.from, s.to, s.box});
  return out;
}

}  // namespace

protocol::MaskPrg to_wire(privacy::PrgKind kind) {
  return kind == privacy::PrgKind::kAes256Ctr ? protocol::MaskPrg::kAes256Ctr : protocol::MaskPrg::kChaCha20;
}

privacy::PrgKind from_wire(protocol::MaskPrg prg) {
  return prg == protocol::MaskPrg::kAes256Ctr ? privacy::PrgKind::kAes256Ctr : privacy::PrgKind::kChaCha20;
}

UpdateEncoding update_encoding(const protocol::RoundPlan& plan) {
  UpdateEncoding e;
  e.update_length = plan.update_length;
  // Plain plans carry no secagg block: the coordinator clips elementwise on
  // receipt, so the node applies only the DP L2 clip there.
  e.clip_range = plan.secure ? plan.secagg.clip_range : 1e30;
  e.quant_bits = plan.secagg.quant_bits;
  e.example_scale = plan.example_scale;
  e.loss_cap = plan.loss_cap;
  e.dp = plan.dp.mode;
  e.dp_clip_norm = plan.dp.clip_norm;
  e.noise_multiplier = plan.dp.noise_multiplier;
  e.num_clients = static_cast<std::uint32_t>(plan.selected.size());
  return e;
}

protocol::SecAggParams to_wire(const agg::SecAggParams& p, const UpdateEncoding& enc, std::uint64_t noise_bound) {
  return {p.num_clients, p.threshold,     p.degree,    p.vector_length, p.graph_seed,
          enc.quant_bits, enc.clip_range, noise_bound, to_wire(p.prg)};
}

agg::SecAggParams from_wire(const protocol::SecAggParams& p) {
  agg::SecAggParams out;
  out.num_clients = p.num_clients;
  out.threshold = p.threshold;
  out.degree = p.degree;
  out.vector_length = p.vector_length;
  out.graph_seed = p.graph_seed;
  out.prg = from_wire(p.prg);
  return out;
}

// ---- node -> coordinator ----
protocol::AdvertiseKeys to_wire(const agg::AdvertiseKeys& m) { return {m.c_public, m.s_public, {}}; }

agg::AdvertiseKeys from_wire(const protocol::AdvertiseKeys& m, std::uint64_t round, agg::ClientId sender) {
  return {round, sender, m.c_public, m.s_public};
}

protocol::ShareKeys to_wire(agg::ShareKeys m) { return {m.sender, shares_to_wire(std::move(m.shares))}; }

agg::ShareKeys from_wire(const protocol::ShareKeys& m, std::uint64_t round, agg::ClientId sender) {
  check_sender("shareKeys", m.sender, sender);
  return {round, sender, shares_from_wire(m.shares)};
}

protocol::MaskedInput to_wire(agg::MaskedInput m) {
  return {m.sender, protocol::Payload<std::uint32_t>::own(std::move(m.masked))};
}

agg::MaskedInput from_wire(const protocol::MaskedInput& m, std::uint64_t round, agg::ClientId sender) {
  check_sender("maskedInput", m.sender, sender);
  return {round, sender, m.masked.to_vector()};
}

protocol::UnmaskResponse to_wire(const agg::UnmaskResponse& m) {
  protocol::UnmaskResponse out{m.sender, {}};
  out.shares.reserve(m.self_mask_shares.size() + m.key_shares.size());
  for (const auto& s : m.self_mask_shares)
    out.shares.push_back({s.owner, protocol::SecretKind::kSelfMask, s.share.x, s.share.y});
  for (const auto& s : m.key_shares)
    out.shares.push_back({s.owner, protocol::SecretKind::kPairwiseKey, s.share.x, s.share.y});
  return out;
}

agg::UnmaskResponse from_wire(const protocol::UnmaskResponse& m, std::uint64_t round, agg::ClientId sender) {
  check_sender("unmaskResponse", m.sender, sender);
  agg::UnmaskResponse out{round, sender, {}, {}};
  for (const auto& s : m.shares) {
    agg::RevealedShare revealed{s.owner, privacy::Share{s.x, s.y}};
    (s.kind == protocol::SecretKind::kSelfMask ? out.self_mask_shares : out.key_shares).push_back(std::move(revealed));
  }
  return out;
}

// ---- coordinator -> node ----
protocol::KeysBroadcast to_wire(const agg::KeysBroadcast& m) {
  protocol::KeysBroadcast out{m.recipient, {}};
  out.neighbours.reserve(m.neighbours.size());
  for (const auto& p : m.neighbours) out.neighbours.push_back({p.id, p.c_public, p.s_public, {}});
  return out;
}

agg::KeysBroadcast from_wire(const protocol::KeysBroadcast& m, std::uint64_t round) {
  agg::KeysBroadcast out{round, m.recipient, {}};
  out.neighbours.reserve(m.neighbours.size());
  for (const auto& p : m.neighbours) out.neighbours.push_back({p.id, p.c_public, p.s_public});
  return out;
}

protocol::SharesDelivery to_wire(agg::SharesDelivery m) {
  return {m.recipient, shares_to_wire(std::move(m.shares))};
}

agg::SharesDelivery from_wire(const protocol::SharesDelivery& m, std::uint64_t round) {
  return {round, m.recipient, shares_from_wire(m.shares)};
}

protocol::UnmaskRequest to_wire(const agg::UnmaskRequest& m, std::uint32_t num_clients) {
  protocol::UnmaskRequest out{m.survivors, {}};
  for (std::uint32_t c = 1; c <= num_clients; ++c)
    if (!std::binary_search(m.survivors.begin(), m.survivors.end(), c)) out.dropped.push_back(c);
  return out;
}

agg::UnmaskRequest from_wire(const protocol::UnmaskRequest& m, std::uint64_t round) { return {round, m.survivors}; }

}  // namespace fedge::federation::wire
