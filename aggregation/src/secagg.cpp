// SecAgg+ (aggregation/secagg.h): the client's and the server's state
// machines, one after the other. Helpers both use are in secagg_internal.h.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "fedge/privacy/prg.h"
#include "secagg_internal.h"

namespace fedge::aggregation {

using namespace detail;
using privacy::Share;

// ---------------- client ----------------

// ---------------- signed bytes (malicious mode) ----------------

namespace {
void append(std::vector<std::uint8_t>& out, std::span<const std::uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}
void append_u64(std::vector<std::uint8_t>& out, std::uint64_t v) { append(out, round_bytes(v)); }
void append_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
// label || 0 || len(context) || context: what each signature starts with, so
// a signature of one kind can never stand for another.
std::vector<std::uint8_t> signing_prefix(std::string_view label, std::span<const std::uint8_t> context) {
  std::vector<std::uint8_t> out(label.begin(), label.end());
  out.push_back(0);
  append_u64(out, context.size());
  append(out, context);
  return out;
}
}  // namespace

std::vector<std::uint8_t> advertise_signing_bytes(std::span<const std::uint8_t> context, std::uint64_t round,
                                                  const Key32& graph_seed_commitment, ClientId sender,
                                                  const Key32& c_public, const Key32& s_public) {
  auto out = signing_prefix("fedge/secagg/advertise-keys/v1", context);
  append_u64(out, round);
  append(out, graph_seed_commitment);
  append_u32(out, sender);
  append(out, c_public);
  append(out, s_public);
  return out;
}

std::vector<std::uint8_t> survivor_signing_bytes(std::span<const std::uint8_t> context, std::uint64_t round,
                                                 std::span<const ClientId> survivors) {
  auto out = signing_prefix("fedge/secagg/survivor-set/v1", context);
  append_u64(out, round);
  append_u64(out, survivors.size());
  for (ClientId c : survivors) append_u32(out, c);
  return out;
}

// ---------------- client ----------------

SecAggClient::SecAggClient(const RoundSetup& setup, ClientId id, std::optional<ClientAuth> auth)
    : setup_(setup), id_(id), auth_(std::move(auth)) {
  validate(setup.params);
  const std::string n = std::to_string(setup.params.num_clients);
  if (id == 0 || id > setup.params.num_clients)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: client id " + std::to_string(id) + " is outside 1.." + n);
  if (malicious()) {
    if (!auth_)
      throw Error(ErrorKind::kInvalidInput, "secure aggregation: malicious mode needs this client's signing key and "
                                            "the roster of its peers' verification keys");
    if (auth_->roster.size() != setup.params.num_clients)
      throw Error(ErrorKind::kInvalidInput, "secure aggregation: the roster has " + std::to_string(auth_->roster.size()) +
                                                " keys for " + n + " clients");
    if (auth_->roster[id - 1] != auth_->signing.public_key)
      throw Error(ErrorKind::kInvalidInput, "secure aggregation: the roster's key for " + who(id) +
                                                " is not this client's signing key");
  } else {
    if (auth_)
      throw Error(ErrorKind::kInvalidInput, "secure aggregation: signing keys are for malicious mode; the round is semi-honest");
    graph_.emplace(setup.params.num_clients, setup.params.degree, setup.params.graph_seed);
  }
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
  AdvertiseKeys out{setup_.round, id_, c_.public_key, s_.public_key, {}};
  if (malicious())
    out.signature = privacy::sign(auth_->signing, advertise_signing_bytes(auth_->context, setup_.round,
                                                                          setup_.params.graph_seed_commitment, id_,
                                                                          c_.public_key, s_.public_key));
  return out;
}

// Malicious mode: the graph seed must open the commitment the setup carried
// (the server fixed the graph before it saw any key), and every neighbour's
// keys must carry that neighbour's signature (the server cannot substitute
// keys: the roster came from the operator).
void SecAggClient::check_graph_seed(const KeysBroadcast& keys) const {
  if (commit_graph_seed(keys.graph_seed) != setup_.params.graph_seed_commitment)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) +
                                         " got a graph seed that does not match the commitment in the round setup; "
                                         "the server changed the neighbour graph after seeing keys - refusing the round");
}

void SecAggClient::check_peer_signatures(const KeysBroadcast& keys) const {
  for (const PeerKeys& p : keys.neighbours) {  // ids already checked: distinct neighbours
    const auto bytes = advertise_signing_bytes(auth_->context, setup_.round, setup_.params.graph_seed_commitment, p.id,
                                               p.c_public, p.s_public);
    if (!privacy::verify_signature(auth_->roster[p.id - 1], bytes, p.signature))
      throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + ": the keys of neighbour " + who(p.id) +
                                           " (cPublic, sPublic) do not carry its roster key's signature; the server "
                                           "substituted or altered them - refusing the round");
  }
}

ShareKeys SecAggClient::share_keys(const KeysBroadcast& keys) {
  check_round(keys.round, "KeysBroadcast");
  expect(Stage::kShareKeys, "KeysBroadcast");
  if (keys.recipient != id_) protocol_error(who(id_) + " got a KeysBroadcast for " + who(keys.recipient));
  if (malicious()) {
    check_graph_seed(keys);
    graph_.emplace(setup_.params.num_clients, setup_.params.degree, keys.graph_seed);
  }
  std::set<ClientId> ids;
  std::set<Key32> pks = {c_.public_key, s_.public_key};
  for (const PeerKeys& p : keys.neighbours) {
    if (!graph_->adjacent(id_, p.id)) protocol_error(who(id_) + " got keys of non-neighbour " + who(p.id));
    if (!ids.insert(p.id).second) protocol_error(who(id_) + " got keys of " + who(p.id) + " twice");
    if (!pks.insert(p.c_public).second || !pks.insert(p.s_public).second)
      protocol_error(who(id_) + " got a repeated public key from " + who(p.id));
  }
  if (malicious()) check_peer_signatures(keys);
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
  stage_ = malicious() ? Stage::kConsistency : Stage::kUnmask;
  return out;
}

void SecAggClient::check_survivors(const std::vector<ClientId>& sv) const {
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
}

SurvivorSignature SecAggClient::sign_survivors(const ConsistencyCheck& check) {
  check_round(check.round, "ConsistencyCheck");
  expect(Stage::kConsistency, "ConsistencyCheck");
  check_survivors(check.survivors);
  signed_survivors_ = check.survivors;
  stage_ = Stage::kUnmask;
  return {setup_.round, id_,
          privacy::sign(auth_->signing, survivor_signing_bytes(auth_->context, setup_.round, signed_survivors_))};
}

// Malicious mode: the consistency check. The server must show this client at
// least t distinct survivors' signatures on exactly the set it signed; a
// server that told different clients different sets cannot (honest clients
// sign one set each), and a signature that does not verify means it tried.
void SecAggClient::check_survivor_signatures(const UnmaskRequest& request) const {
  if (request.survivors != signed_survivors_)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + " is asked to unmask for a survivor set (" +
                                         std::to_string(request.survivors.size()) +
                                         " clients) other than the one it signed (" +
                                         std::to_string(signed_survivors_.size()) + "); refusing to reveal shares");
  const auto bytes = survivor_signing_bytes(auth_->context, setup_.round, signed_survivors_);
  std::set<ClientId> signers;
  for (const SurvivorSignature& sig : request.signatures) {
    if (!std::binary_search(signed_survivors_.begin(), signed_survivors_.end(), sig.sender))
      throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + " got a survivor-set signature from " +
                                           who(sig.sender) + ", which is not a survivor; refusing to reveal shares");
    if (!signers.insert(sig.sender).second)
      throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + " got two survivor-set signatures from " +
                                           who(sig.sender) + "; refusing to reveal shares");
    if (!privacy::verify_signature(auth_->roster[sig.sender - 1], bytes, sig.signature))
      throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + ": the survivor-set signature of " +
                                           who(sig.sender) + " does not verify on the set this client was told; the "
                                           "server told clients different survivor sets - refusing to reveal shares");
  }
  if (signers.size() < setup_.params.threshold)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: " + who(id_) + " got " + std::to_string(signers.size()) +
                                         " survivor-set signatures, fewer than threshold " +
                                         std::to_string(setup_.params.threshold) + "; refusing to reveal shares");
}

UnmaskResponse SecAggClient::unmask(const UnmaskRequest& request) {
  check_round(request.round, "UnmaskRequest");
  expect(Stage::kUnmask, "UnmaskRequest");
  if (malicious())
    check_survivor_signatures(request);
  else
    check_survivors(request.survivors);
  const auto& sv = request.survivors;
  auto survived = [&](ClientId c) { return std::binary_search(sv.begin(), sv.end(), c); };
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

// ---------------- server ----------------

namespace {
const char* stage_name(SecAggServer::Stage s) {
  switch (s) {
    case SecAggServer::Stage::kAdvertise: return "AdvertiseKeys";
    case SecAggServer::Stage::kShareKeys: return "ShareKeys";
    case SecAggServer::Stage::kMaskedInput: return "MaskedInput";
    case SecAggServer::Stage::kConsistency: return "ConsistencyCheck";
    case SecAggServer::Stage::kUnmask: return "Unmask";
    case SecAggServer::Stage::kDone: return "done";
    case SecAggServer::Stage::kFailed: return "failed";
  }
  return "?";
}
}  // namespace

SecAggServer::SecAggServer(std::uint64_t round, const SecAggParams& params, int threads, std::optional<ServerAuth> auth)
    : round_(round), params_((validate(params), params)), threads_(threads), auth_(std::move(auth)),
      graph_(params.num_clients, params.degree, params.graph_seed) {
  const std::size_t n = params.num_clients;
  if (malicious() && commit_graph_seed(params.graph_seed) != params.graph_seed_commitment)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: the graph-seed commitment does not commit to the seed");
  if (auth_ && (!malicious() || auth_->roster.size() != n))
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: server signature checks need malicious mode and one "
                                          "roster key per client (" + std::to_string(auth_->roster.size()) + " for " +
                                          std::to_string(n) + ")");
  keys_.resize(n);
  in_u1_.assign(n, 0);
  in_u2_.assign(n, 0);
  in_u3_.assign(n, 0);
  in_u4_.assign(n, 0);
  inbox_.resize(n);
  b_shares_.resize(n);
  s_shares_.resize(n);
}

RoundSetup SecAggServer::setup() const {
  RoundSetup out{round_, params_};
  if (malicious()) out.params.graph_seed = Key32{};  // revealed in KeysBroadcast, after the keys
  return out;
}

void SecAggServer::expect(Stage s, const char* what) const {
  if (stage_ != s)
    protocol_error(std::string(what) + " arrived while the round is in stage " + stage_name(stage_) +
                   "; it belongs to stage " + stage_name(s));
}

void SecAggServer::check_sender(std::uint64_t round, ClientId sender, const char* what) const {
  if (round != round_)
    protocol_error(std::string(what) + " from " + who(sender) + " is for round " + std::to_string(round) +
                   ", the current round is " + std::to_string(round_));
  if (sender == 0 || sender > params_.num_clients)
    protocol_error(std::string(what) + " from unknown sender " + std::to_string(sender) + " (ids are 1.." +
                   std::to_string(params_.num_clients) + ")");
}

void SecAggServer::fail(const std::string& why) {
  stage_ = Stage::kFailed;
  sum_ = {};
  inbox_ = {};
  b_shares_ = {};
  s_shares_ = {};
  throw Error(ErrorKind::kPrivacy, "secure aggregation round " + std::to_string(round_) + " failed: " + why);
}

std::vector<ClientId> SecAggServer::members(const std::vector<std::uint8_t>& flags) const {
  std::vector<ClientId> out;
  for (std::size_t i = 0; i < flags.size(); ++i)
    if (flags[i]) out.push_back(static_cast<ClientId>(i + 1));
  return out;
}

void SecAggServer::receive(const AdvertiseKeys& msg) {
  expect(Stage::kAdvertise, "AdvertiseKeys");
  check_sender(msg.round, msg.sender, "AdvertiseKeys");
  if (in_u1_[msg.sender - 1]) protocol_error("duplicate AdvertiseKeys from " + who(msg.sender));
  if (msg.c_public == msg.s_public) protocol_error(who(msg.sender) + " advertised the same key twice");
  for (std::size_t i = 0; i < keys_.size(); ++i)
    if (in_u1_[i] && (keys_[i].c_public == msg.c_public || keys_[i].s_public == msg.s_public ||
                      keys_[i].c_public == msg.s_public || keys_[i].s_public == msg.c_public))
      protocol_error(who(msg.sender) + " advertised a public key already used by " + who(i + 1));
  if (auth_ && !privacy::verify_signature(auth_->roster[msg.sender - 1],
                                          advertise_signing_bytes(auth_->context, round_, params_.graph_seed_commitment,
                                                                  msg.sender, msg.c_public, msg.s_public),
                                          msg.signature))
    protocol_error("AdvertiseKeys from " + who(msg.sender) + ": the signature does not verify against its roster key");
  keys_[msg.sender - 1] = {msg.sender, msg.c_public, msg.s_public, msg.signature};
  in_u1_[msg.sender - 1] = 1;
}

std::vector<KeysBroadcast> SecAggServer::finish_advertise() {
  expect(Stage::kAdvertise, "finish_advertise");
  const auto u1 = members(in_u1_);
  if (u1.size() < params_.threshold)
    fail(std::to_string(u1.size()) + " clients advertised keys, fewer than threshold " +
         std::to_string(params_.threshold));
  std::vector<KeysBroadcast> out;
  for (ClientId i : u1) {
    KeysBroadcast kb{round_, i, {}, malicious() ? params_.graph_seed : Key32{}};
    for (ClientId j : graph_.neighbours(i))
      if (in_u1_[j - 1]) kb.neighbours.push_back(keys_[j - 1]);
    out.push_back(std::move(kb));
  }
  stage_ = Stage::kShareKeys;
  return out;
}

void SecAggServer::receive(const ShareKeys& msg) {
  expect(Stage::kShareKeys, "ShareKeys");
  check_sender(msg.round, msg.sender, "ShareKeys");
  const ClientId s = msg.sender;
  if (!in_u1_[s - 1]) protocol_error("ShareKeys from " + who(s) + ", which did not advertise keys");
  if (in_u2_[s - 1]) protocol_error("duplicate ShareKeys from " + who(s));
  std::size_t expected = 0;
  for (ClientId j : graph_.neighbours(s)) expected += in_u1_[j - 1];
  if (msg.shares.size() != expected)
    protocol_error("ShareKeys from " + who(s) + " has " + std::to_string(msg.shares.size()) +
                   " shares, expected one per neighbour with keys (" + std::to_string(expected) + ")");
  std::set<ClientId> to;
  for (const EncryptedShare& e : msg.shares) {
    if (e.from != s) protocol_error("ShareKeys from " + who(s) + " carries a share claiming to be from " + who(e.from));
    if (e.to == 0 || e.to > params_.num_clients || !in_u1_[e.to - 1] || !graph_.adjacent(s, e.to))
      protocol_error("ShareKeys from " + who(s) + " addresses " + who(e.to) + ", not a neighbour with keys");
    if (!to.insert(e.to).second) protocol_error("ShareKeys from " + who(s) + " addresses " + who(e.to) + " twice");
    if (e.box.size() != share_box_bytes())
      protocol_error("ShareKeys from " + who(s) + ": share box of " + std::to_string(e.box.size()) +
                     " bytes, expected " + std::to_string(share_box_bytes()));
  }
  for (const EncryptedShare& e : msg.shares) inbox_[e.to - 1].push_back(e);
  in_u2_[s - 1] = 1;
}

std::vector<SharesDelivery> SecAggServer::finish_share_keys() {
  expect(Stage::kShareKeys, "finish_share_keys");
  const auto u2 = members(in_u2_);
  if (u2.size() < params_.threshold)
    fail(std::to_string(u2.size()) + " clients shared keys, fewer than threshold " +
         std::to_string(params_.threshold));
  std::vector<SharesDelivery> out;
  for (ClientId i : u2) out.push_back({round_, i, std::move(inbox_[i - 1])});
  inbox_ = {};
  sum_.assign(params_.vector_length, 0);
  stage_ = Stage::kMaskedInput;
  return out;
}

void SecAggServer::receive(const MaskedInput& msg) {
  expect(Stage::kMaskedInput, "MaskedInput");
  check_sender(msg.round, msg.sender, "MaskedInput");
  if (!in_u2_[msg.sender - 1]) protocol_error("MaskedInput from " + who(msg.sender) + ", which did not share keys");
  if (in_u3_[msg.sender - 1]) protocol_error("duplicate MaskedInput from " + who(msg.sender));
  if (msg.masked.size() != params_.vector_length)
    protocol_error("MaskedInput from " + who(msg.sender) + " has " + std::to_string(msg.masked.size()) +
                   " elements, the round expects " + std::to_string(params_.vector_length));
  std::uint32_t* __restrict acc = sum_.data();
  const std::uint32_t* __restrict in = msg.masked.data();
  for (std::size_t i = 0; i < sum_.size(); ++i) acc[i] += in[i];
  in_u3_[msg.sender - 1] = 1;
}

UnmaskRequest SecAggServer::finish_masked_input() {
  if (malicious()) protocol_error("malicious mode: the survivor set is signed first (open_consistency_check)");
  return close_masked_input();
}

ConsistencyCheck SecAggServer::open_consistency_check() {
  if (!malicious()) protocol_error("semi-honest mode has no consistency check (finish_masked_input)");
  UnmaskRequest u3 = close_masked_input();
  survivors_ = u3.survivors;
  stage_ = Stage::kConsistency;
  return {round_, std::move(u3.survivors)};
}

void SecAggServer::receive(const SurvivorSignature& msg) {
  expect(Stage::kConsistency, "SurvivorSignature");
  check_sender(msg.round, msg.sender, "SurvivorSignature");
  if (!in_u3_[msg.sender - 1]) protocol_error("SurvivorSignature from " + who(msg.sender) + ", which is not a survivor");
  if (std::any_of(survivor_sigs_.begin(), survivor_sigs_.end(), [&](const auto& s) { return s.sender == msg.sender; }))
    protocol_error("duplicate SurvivorSignature from " + who(msg.sender));
  if (auth_ && !privacy::verify_signature(auth_->roster[msg.sender - 1],
                                          survivor_signing_bytes(auth_->context, round_, survivors_), msg.signature))
    protocol_error("SurvivorSignature from " + who(msg.sender) + " does not verify on the survivor set it was sent");
  survivor_sigs_.push_back(msg);
}

UnmaskRequest SecAggServer::finish_consistency_check() {
  expect(Stage::kConsistency, "finish_consistency_check");
  if (survivor_sigs_.size() < params_.threshold)
    fail(std::to_string(survivor_sigs_.size()) + " survivors signed the survivor set, fewer than threshold " +
         std::to_string(params_.threshold));
  std::sort(survivor_sigs_.begin(), survivor_sigs_.end(), [](const auto& a, const auto& b) { return a.sender < b.sender; });
  // A quorum of t is all a client needs (and checks); forwarding exactly t
  // keeps each client's work at t verifications and the message at t
  // signatures, whatever the number of survivors.
  std::vector<SurvivorSignature> quorum(survivor_sigs_.begin(), survivor_sigs_.begin() + params_.threshold);
  stage_ = Stage::kUnmask;
  return {round_, survivors_, std::move(quorum)};
}

UnmaskRequest SecAggServer::close_masked_input() {
  expect(Stage::kMaskedInput, "finish_masked_input");
  auto u3 = members(in_u3_);
  // The sum covers exactly U3: with fewer than kMinSurvivors each survivor
  // could subtract its own input and read another's (validate() already keeps
  // t >= kMinSurvivors; this says so where the round finishes).
  if (u3.size() < std::max(params_.threshold, kMinSurvivors))
    fail(std::to_string(u3.size()) + " masked inputs arrived, fewer than threshold " +
         std::to_string(params_.threshold));
  stage_ = Stage::kUnmask;
  return {round_, std::move(u3), {}};
}

void SecAggServer::receive(const UnmaskResponse& msg) {
  expect(Stage::kUnmask, "UnmaskResponse");
  check_sender(msg.round, msg.sender, "UnmaskResponse");
  const ClientId s = msg.sender;
  if (!in_u3_[s - 1]) protocol_error("UnmaskResponse from " + who(s) + ", which sent no masked input");
  if (in_u4_[s - 1]) protocol_error("duplicate UnmaskResponse from " + who(s));
  const std::size_t chunks = privacy::shamir_chunks(kSecretBytes);
  std::set<ClientId> owners;
  auto check = [&](const RevealedShare& r, bool want_survivor, const char* kind) {
    const ClientId o = r.owner;
    if (o == 0 || o > params_.num_clients || !in_u2_[o - 1] || (o != s && !graph_.adjacent(o, s)))
      protocol_error("UnmaskResponse from " + who(s) + " reveals a " + kind + " share of " + who(o) +
                     ", which is not a neighbour in this round");
    if (static_cast<bool>(in_u3_[o - 1]) != want_survivor)
      protocol_error("UnmaskResponse from " + who(s) + " reveals a " + kind + " share of " + who(o) +
                     (want_survivor ? ", which dropped out" : ", which survived"));
    if (!owners.insert(o).second)
      protocol_error("UnmaskResponse from " + who(s) + " reveals two shares of " + who(o));
    if (r.share.x != s || r.share.y.size() != chunks)
      protocol_error("UnmaskResponse from " + who(s) + ": share of " + who(o) + " has the wrong x or size");
    for (std::uint64_t y : r.share.y)
      if (y >= privacy::Fp61::kP) protocol_error("UnmaskResponse from " + who(s) + ": unreduced share element");
  };
  for (const auto& r : msg.self_mask_shares) check(r, true, "self-mask");
  for (const auto& r : msg.key_shares) check(r, false, "mask-key");
  for (const auto& r : msg.self_mask_shares) b_shares_[r.owner - 1].push_back(r.share);
  for (const auto& r : msg.key_shares) s_shares_[r.owner - 1].push_back(r.share);
  in_u4_[s - 1] = 1;
}

namespace {

// Reconstructs a 32-byte secret from the t shares with the smallest x, reusing
// Lagrange coefficients across owners whose share holders coincide.
Key32 reconstruct(std::vector<Share>& shares, std::uint32_t t,
                  std::map<std::vector<std::uint32_t>, std::vector<std::uint64_t>>& cache) {
  std::sort(shares.begin(), shares.end(), [](const Share& a, const Share& b) { return a.x < b.x; });
  std::vector<std::uint32_t> xs;
  for (std::uint32_t i = 0; i < t; ++i) xs.push_back(shares[i].x);
  auto it = cache.find(xs);
  if (it == cache.end()) it = cache.emplace(xs, privacy::lagrange_at_zero(xs)).first;
  const auto& lc = it->second;
  Key32 out{};
  const std::size_t chunks = shares[0].y.size();
  for (std::size_t c = 0; c < chunks; ++c) {
    std::uint64_t v = 0;
    for (std::uint32_t i = 0; i < t; ++i) v = privacy::Fp61::add(v, privacy::Fp61::mul(lc[i], shares[i].y[c]));
    const std::size_t bytes = std::min(privacy::kShamirChunkBytes, out.size() - c * privacy::kShamirChunkBytes);
    if (v >> (8 * bytes)) throw Error(ErrorKind::kProtocol, "inconsistent shares");
    for (std::size_t b = 0; b < bytes; ++b) out[c * privacy::kShamirChunkBytes + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
  return out;
}

}  // namespace

SecAggResult SecAggServer::finish_unmask() {
  expect(Stage::kUnmask, "finish_unmask");
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  const std::uint32_t t = params_.threshold;
  const auto u3 = members(in_u3_);
  std::map<std::vector<std::uint32_t>, std::vector<std::uint64_t>> cache;
  std::vector<privacy::MaskJob> jobs;
  for (ClientId v : u3) {
    auto& sh = b_shares_[v - 1];
    if (sh.size() < t)
      fail("only " + std::to_string(sh.size()) + " self-mask shares of " + who(v) + " arrived, threshold is " +
           std::to_string(t));
    try {
      jobs.push_back({reconstruct(sh, t, cache), true});
    } catch (const Error&) {
      fail("the self-mask shares of " + who(v) + " are inconsistent");
    }
  }
  // Dropped clients that shared keys: their masks with surviving neighbours stay
  // in the sum; reconstruct their mask key and re-derive those masks.
  struct Edge {
    Key32 s_secret;
    ClientId dropped, survivor;
  };
  std::vector<Edge> edges;
  for (ClientId u : members(in_u2_)) {
    if (in_u3_[u - 1]) continue;
    std::vector<ClientId> partners;
    for (ClientId v : graph_.neighbours(u))
      if (in_u3_[v - 1]) partners.push_back(v);
    if (partners.empty()) continue;
    auto& sh = s_shares_[u - 1];
    if (sh.size() < t)
      fail("only " + std::to_string(sh.size()) + " mask-key shares of dropped " + who(u) +
           " arrived, threshold is " + std::to_string(t));
    Key32 sk{};
    try {
      sk = reconstruct(sh, t, cache);
    } catch (const Error&) {
      fail("the mask-key shares of dropped " + who(u) + " are inconsistent");
    }
    if (privacy::public_key_of(sk) != keys_[u - 1].s_public)
      fail("the mask-key shares of dropped " + who(u) + " do not match its advertised key");
    for (ClientId v : partners) edges.push_back({sk, u, v});
  }
  const auto t_seeds = Clock::now();
  const std::size_t base = jobs.size();
  jobs.resize(base + edges.size());
  const int threads = threads_ > 0 ? threads_ : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) if (edges.size() > 64)
  for (std::size_t e = 0; e < edges.size(); ++e) {
    const Edge& ed = edges[e];
    // Survivor v added +mask if v < u, -mask otherwise; undo it.
    jobs[base + e] = {pairwise_seed(ed.s_secret, keys_[ed.dropped - 1].s_public, keys_[ed.survivor - 1].s_public, round_), ed.survivor < ed.dropped};
  }
  const auto t_masks = Clock::now();
  privacy::prg_add_many(sum_, jobs, threads, params_.prg);
  const auto t_end = Clock::now();
  for (auto& j : jobs) privacy::wipe(j.seed);
  for (auto& e : edges) privacy::wipe(e.s_secret);
  auto sec = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  SecAggResult out{std::move(sum_), u3, sec(t_start, t_seeds), sec(t_seeds, t_masks), sec(t_masks, t_end)};
  sum_ = {};
  b_shares_ = {};
  s_shares_ = {};
  stage_ = Stage::kDone;
  return out;
}

}  // namespace fedge::aggregation
