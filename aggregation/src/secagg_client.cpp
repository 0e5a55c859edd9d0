#include <algorithm>
#include <set>

#include "fedge/privacy/prg.h"
#include "secagg_internal.h"

namespace fedge::aggregation {

using namespace detail;
using privacy::Share;

SecAggClient::SecAggClient(const RoundSetup& setup, ClientId id)
    : setup_(setup), id_(id), graph_((validate(setup.params), setup.params.num_clients),
                                      setup.params.degree, setup.params.graph_seed) {
  if (id == 0 || id > setup.params.num_clients)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: client id " + std::to_string(id) +
                                              " is outside 1.." + std::to_string(setup.params.num_clients));
}

void SecAggClient::expect(Stage s, const char* what) const {
  if (stage_ != s) protocol_error(who(id_) + " got " + what + " out of order");
}

void SecAggClient::check_round(std::uint64_t round, const char* what) const {
  if (round != setup_.round)
    protocol_error(who(id_) + ": " + what + " is for round " + std::to_string(round) + ", this is round " +
                   std::to_string(setup_.round));
}

AdvertiseKeys SecAggClient::advertise_keys() {
  expect(Stage::kAdvertise, "advertise_keys");
  c_ = privacy::generate_keypair();
  s_ = privacy::generate_keypair();
  b_ = privacy::random_key();
  stage_ = Stage::kShareKeys;
  return {setup_.round, id_, c_.public_key, s_.public_key};
}

ShareKeys SecAggClient::share_keys(const KeysBroadcast& keys) {
  check_round(keys.round, "KeysBroadcast");
  expect(Stage::kShareKeys, "KeysBroadcast");
  if (keys.recipient != id_) protocol_error(who(id_) + " got a KeysBroadcast for " + who(keys.recipient));
  std::set<ClientId> ids;
  std::set<Key32> pks = {c_.public_key, s_.public_key};
  for (const PeerKeys& p : keys.neighbours) {
    if (!graph_.adjacent(id_, p.id)) protocol_error(who(id_) + " got keys of non-neighbour " + who(p.id));
    if (!ids.insert(p.id).second) protocol_error(who(id_) + " got keys of " + who(p.id) + " twice");
    if (!pks.insert(p.c_public).second || !pks.insert(p.s_public).second)
      protocol_error(who(id_) + " got a repeated public key from " + who(p.id));
  }
  std::vector<ClientId> holders(ids.begin(), ids.end());
  holders.push_back(id_);
  std::sort(holders.begin(), holders.end());
  if (holders.size() < setup_.params.threshold)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + " has " +
                                         std::to_string(holders.size()) + " share holders, fewer than threshold " +
                                         std::to_string(setup_.params.threshold) + "; aborting the round");
  const auto b_shares = privacy::shamir_split(b_, setup_.params.threshold, holders);
  const auto s_shares = privacy::shamir_split(s_.secret_key, setup_.params.threshold, holders);
  ShareKeys out{setup_.round, id_, {}};
  peers_.clear();
  for (std::size_t h = 0; h < holders.size(); ++h) {
    if (holders[h] == id_) {
      own_b_share_ = b_shares[h];
      own_s_share_ = s_shares[h];
      continue;
    }
    const PeerKeys& peer = *std::find_if(keys.neighbours.begin(), keys.neighbours.end(),
                                         [&](const PeerKeys& p) { return p.id == holders[h]; });
    peers_.push_back(peer);
    std::vector<std::uint8_t> plain = privacy::share_to_bytes(b_shares[h]);
    const auto s_bytes = privacy::share_to_bytes(s_shares[h]);
    plain.insert(plain.end(), s_bytes.begin(), s_bytes.end());
    const auto ad = share_ad(setup_.round, id_, peer.id);
    out.shares.push_back({id_, peer.id, privacy::aead_encrypt(share_key(c_, peer.c_public, setup_.round),
                                                              plain, ad)});
    privacy::wipe(plain);
  }
  stage_ = Stage::kMaskedInput;
  return out;
}

MaskedInput SecAggClient::masked_input(const SharesDelivery& delivery, std::span<const std::uint32_t> input) {
  check_round(delivery.round, "SharesDelivery");
  expect(Stage::kMaskedInput, "SharesDelivery");
  if (delivery.recipient != id_) protocol_error(who(id_) + " got a SharesDelivery for " + who(delivery.recipient));
  if (input.size() != setup_.params.vector_length)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: " + who(id_) + " input has " +
                                              std::to_string(input.size()) + " elements, the round expects " +
                                              std::to_string(setup_.params.vector_length));
  std::vector<const EncryptedShare*> boxes;
  std::set<ClientId> seen;
  for (const EncryptedShare& e : delivery.shares) {
    if (e.to != id_) protocol_error(who(id_) + " was delivered a share addressed to " + who(e.to));
    if (!seen.insert(e.from).second) protocol_error(who(id_) + " got two shares from " + who(e.from));
    if (std::none_of(peers_.begin(), peers_.end(), [&](const PeerKeys& p) { return p.id == e.from; }))
      protocol_error(who(id_) + " got a share from " + who(e.from) + ", which is not a neighbour with keys");
    if (e.box.size() != share_box_bytes())
      protocol_error(who(id_) + " got a share box of " + std::to_string(e.box.size()) + " bytes from " +
                     who(e.from) + ", expected " + std::to_string(share_box_bytes()));
    boxes.push_back(&e);
  }
  if (boxes.size() + 1 < setup_.params.threshold)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: only " + std::to_string(boxes.size()) +
                                         " neighbours of " + who(id_) + " shared keys, fewer than threshold " +
                                         std::to_string(setup_.params.threshold) + " - 1; aborting the round");
  std::sort(boxes.begin(), boxes.end(), [](auto* a, auto* b) { return a->from < b->from; });
  const std::size_t chunks = privacy::shamir_chunks(kSecretBytes);
  const std::size_t one = 4 + 8 * chunks;
  std::vector<ClientId> mask_peers;
  std::vector<Share> held_b, held_s;
  std::vector<privacy::MaskJob> jobs;
  jobs.push_back({b_, false});
  for (const EncryptedShare* e : boxes) {
    const PeerKeys& peer = *std::find_if(peers_.begin(), peers_.end(), [&](const PeerKeys& p) { return p.id == e->from; });
    const auto ad = share_ad(setup_.round, e->from, id_);
    auto plain = privacy::aead_decrypt(share_key(c_, peer.c_public, setup_.round), e->box, ad);
    if (plain.size() != 2 * one) protocol_error(who(id_) + " decrypted a malformed share from " + who(e->from));
    Share bs = privacy::share_from_bytes(std::span(plain).first(one), chunks);
    Share ss = privacy::share_from_bytes(std::span(plain).subspan(one), chunks);
    privacy::wipe(plain);
    if (bs.x != id_ || ss.x != id_) protocol_error(who(e->from) + " sent " + who(id_) + " a share for another x");
    mask_peers.push_back(e->from);
    held_b.push_back(std::move(bs));
    held_s.push_back(std::move(ss));
    // + for the lower id, - for the higher: the pair's masks cancel in the sum.
    jobs.push_back({pairwise_seed(s_.secret_key, s_.public_key, peer.s_public, setup_.round), id_ > e->from});
  }
  MaskedInput out{setup_.round, id_, std::vector<std::uint32_t>(input.begin(), input.end())};
  privacy::prg_add_many(out.masked, jobs, 1, setup_.params.prg);
  for (auto& j : jobs) privacy::wipe(j.seed);
  mask_peers_ = std::move(mask_peers);
  held_b_ = std::move(held_b);
  held_s_ = std::move(held_s);
  stage_ = Stage::kUnmask;
  return out;
}

UnmaskResponse SecAggClient::unmask(const UnmaskRequest& request) {
  check_round(request.round, "UnmaskRequest");
  expect(Stage::kUnmask, "UnmaskRequest");
  const auto& sv = request.survivors;
  for (std::size_t i = 0; i < sv.size(); ++i)
    if (sv[i] == 0 || sv[i] > setup_.params.num_clients || (i > 0 && sv[i] <= sv[i - 1]))
      protocol_error(who(id_) + " got a survivor list that is not sorted, unique ids in range");
  auto survived = [&](ClientId c) { return std::binary_search(sv.begin(), sv.end(), c); };
  if (!survived(id_))
    throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) +
                                         " is not listed as a survivor; refusing to reveal shares");
  std::size_t live = 1;
  for (ClientId p : mask_peers_) live += survived(p);
  if (live < setup_.params.threshold)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: only " + std::to_string(live) + " of " + who(id_) +
                                         "'s neighbourhood survived, fewer than threshold " +
                                         std::to_string(setup_.params.threshold) + "; refusing to unmask");
  UnmaskResponse out{setup_.round, id_, {}, {}};
  out.self_mask_shares.push_back({id_, own_b_share_});
  for (std::size_t i = 0; i < mask_peers_.size(); ++i) {
    // Exactly one kind per peer: b if it survived, its mask key if it dropped.
    if (survived(mask_peers_[i]))
      out.self_mask_shares.push_back({mask_peers_[i], held_b_[i]});
    else
      out.key_shares.push_back({mask_peers_[i], held_s_[i]});
  }
  stage_ = Stage::kDone;
  privacy::wipe(b_);
  privacy::wipe(s_.secret_key);
  privacy::wipe(c_.secret_key);
  return out;
}

}  // namespace fedge::aggregation
