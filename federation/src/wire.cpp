#include "fedge/federation/wire.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "fedge/common/error.h"
#include "fedge/protocol/opaque.h"

namespace fedge::federation::wire {
namespace {

namespace schema = fedge::protocol::wire;
using protocol::OpaquePart;

std::string num(std::uint64_t v) { return std::to_string(v); }

// A refused field, named as protocol's decoder names fields ("shareKeys.shares.box").
[[noreturn]] void refuse(const std::string& field, const std::string& what) {
  throw Error(ErrorKind::kProtocol, field + ": " + what);
}

void require(bool ok, const std::string& field, const std::string& what) {
  if (!ok) refuse(field, what);
}

// Opens `part` as schema struct `Schema` and hands it to read(); structural
// damage (possible only in a part built by hand) becomes a refusal too.
template <class Schema, class Read>
auto read_part(const OpaquePart& part, const char* message, Read read) {
  require(!part.empty(), message, "is missing");
  try {
    protocol::PartReader reader(part);
    return read(reader.root<Schema>());
  } catch (const kj::Exception& e) {
    refuse(message, std::string("malformed: ") + e.getDescription().cStr());
  }
}

capnp::Data::Reader data_of(const void* p, std::size_t n) { return {static_cast<const capnp::byte*>(p), n}; }
capnp::Data::Reader data_of(const privacy::Key32& k) { return data_of(k.data(), k.size()); }

privacy::Key32 key32(capnp::Data::Reader data, const std::string& field) {
  require(data.size() == 32, field, "must be exactly 32 bytes, got " + num(data.size()));
  privacy::Key32 key;
  std::memcpy(key.data(), data.begin(), 32);
  return key;
}

// Signatures belong to the malicious-server mode: 64 bytes there, empty in
// semi-honest rounds (read as all zero, which never verifies).
privacy::Signature signature_of(capnp::Data::Reader data, const std::string& field) {
  require(data.size() == 0 || data.size() == 64, field, "must be empty or 64 bytes, got " + num(data.size()));
  privacy::Signature sig{};
  if (data.size() == 64) std::memcpy(sig.data(), data.begin(), 64);
  return sig;
}

// An all-zero signature is "none": semi-honest messages carry no signature
// field at all, as before the malicious mode existed.
template <class Builder>
void set_signature(Builder b, const privacy::Signature& sig) {
  if (sig != privacy::Signature{}) b.setSignature(data_of(sig.data(), sig.size()));
}


// A node's message names its own client id; the coordinator knows it from the
// authenticated sender, so a mismatch is a node speaking for a peer.
void check_sender(const char* message, std::uint32_t claimed, agg::ClientId sender) {
  if (claimed != sender)
    throw Error(ErrorKind::kProtocol, std::string(message) + ".sender is client " + num(claimed) +
                                          ", but this node is client " + num(sender));
}

void unique_ids(const std::vector<std::uint32_t>& ids, const std::string& field) {
  std::set<std::uint32_t> seen;
  for (auto id : ids) require(seen.insert(id).second, field, "id " + num(id) + " appears twice");
}

template <class T>
std::vector<T> values_of(typename capnp::List<T>::Reader list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (T v : list) out.push_back(v);
  return out;
}

// Survivor lists (ConsistencyCheck, UnmaskRequest): ids 1..n, sorted, unique
// (the client checks the range against its round).
std::vector<std::uint32_t> read_survivors(capnp::List<std::uint32_t>::Reader list, const std::string& field) {
  std::vector<std::uint32_t> ids = values_of<std::uint32_t>(list);
  for (std::size_t i = 1; i < ids.size(); ++i)
    require(ids[i - 1] < ids[i], field, "ids must be sorted and unique (" + num(ids[i - 1]) + " then " + num(ids[i]) + ")");
  return ids;
}

void set_ids(capnp::List<std::uint32_t>::Builder list, const std::vector<std::uint32_t>& ids) {
  for (unsigned i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
}

// ---- encrypted shares (ShareKeys, SharesDelivery) ----

void write_shares(capnp::List<schema::EncryptedShare>::Builder list, const std::vector<agg::EncryptedShare>& shares) {
  for (unsigned i = 0; i < shares.size(); ++i) {
    list[i].setFrom(shares[i].from);
    list[i].setTo(shares[i].to);
    list[i].setBox(data_of(shares[i].box.data(), shares[i].box.size()));
  }
}

// Words a list of shares takes (for make_part's one segment): per share its
// struct, list tag and padded box.
std::size_t shares_words(const std::vector<agg::EncryptedShare>& shares) {
  std::size_t words = 16;
  for (const auto& s : shares) words += 4 + (s.box.size() + 7) / 8;
  return words;
}

// Every box has the one size a share box has, checked before it is copied.
std::vector<agg::EncryptedShare> read_shares(capnp::List<schema::EncryptedShare>::Reader list, const char* message) {
  const std::string field = std::string(message) + ".shares.box";
  std::vector<agg::EncryptedShare> out;
  out.reserve(list.size());
  for (auto s : list) {
    auto box = s.getBox();
    require(box.size() == agg::share_box_bytes(), field,
            num(box.size()) + " bytes, a share box has " + num(agg::share_box_bytes()));
    out.push_back({s.getFrom(), s.getTo(), {box.begin(), box.end()}});
  }
  return out;
}

agg::SecAggMode mode_from_wire(schema::SecAggMode mode) {
  switch (mode) {
    case schema::SecAggMode::SEMI_HONEST: return agg::SecAggMode::kSemiHonest;
    case schema::SecAggMode::MALICIOUS: return agg::SecAggMode::kMalicious;
  }
  refuse("roundPlan.secagg.mode", "unknown value " + num(static_cast<std::uint16_t>(mode)) + " (known: 0..1)");
}

privacy::PrgKind prg_from_wire(schema::MaskPrg prg) {
  switch (prg) {
    case schema::MaskPrg::CHACHA20: return privacy::PrgKind::kChaCha20;
    case schema::MaskPrg::AES256_CTR: return privacy::PrgKind::kAes256Ctr;
  }
  refuse("roundPlan.secagg.prg", "unknown value " + num(static_cast<std::uint16_t>(prg)) + " (known: 0..1)");
}

schema::MaskPrg prg_to_wire(privacy::PrgKind kind) {
  return kind == privacy::PrgKind::kAes256Ctr ? schema::MaskPrg::AES256_CTR : schema::MaskPrg::CHACHA20;
}

}  // namespace

// ---- a secure plan's settings ----

OpaquePart to_wire(const SecureSettings& s) {
  return protocol::make_part<schema::SecAggParams>([&](schema::SecAggParams::Builder b) {
    b.setNumClients(s.params.num_clients);
    b.setThreshold(s.params.threshold);
    b.setDegree(s.params.degree);
    b.setVectorLength(s.params.vector_length);
    const bool malicious = s.params.mode == agg::SecAggMode::kMalicious;
    // Malicious mode: the plan commits to the seed and never carries it; it
    // is revealed in KeysBroadcast, after the keys are in.
    b.setGraphSeed(data_of(malicious ? privacy::Key32{} : s.params.graph_seed));
    b.setQuantBits(s.quant_bits);
    b.setClipRange(s.clip_range);
    b.setNoiseBound(s.noise_bound);
    b.setPrg(prg_to_wire(s.params.prg));
    if (malicious) {
      b.setMode(schema::SecAggMode::MALICIOUS);
      b.setGraphSeedCommitment(data_of(s.params.graph_seed_commitment));
    }
  });
}

SecureSettings secure_settings(const protocol::RoundPlan& plan) {
  const std::uint64_t selected = plan.selected.size();
  return read_part<schema::SecAggParams>(plan.secagg, "roundPlan.secagg", [&](schema::SecAggParams::Reader r) {
    const std::string f = "roundPlan.secagg.";
    SecureSettings s;
    s.params.num_clients = r.getNumClients();
    s.params.threshold = r.getThreshold();
    s.params.degree = r.getDegree();
    s.params.vector_length = r.getVectorLength();
    s.params.graph_seed = key32(r.getGraphSeed(), f + "graphSeed");
    s.params.prg = prg_from_wire(r.getPrg());
    s.params.mode = mode_from_wire(r.getMode());
    if (s.params.mode == agg::SecAggMode::kMalicious)
      s.params.graph_seed_commitment = key32(r.getGraphSeedCommitment(), f + "graphSeedCommitment");
    else
      require(r.getGraphSeedCommitment().size() == 0, f + "graphSeedCommitment", "is set, but the mode is semi-honest");
    s.quant_bits = r.getQuantBits();
    s.clip_range = r.getClipRange();
    s.noise_bound = r.getNoiseBound();
    const auto n = s.params.num_clients;
    require(n == selected, f + "numClients", num(n) + " clients, but " + num(selected) + " nodes are selected");
    require(s.params.threshold >= 1 && s.params.threshold <= n, f + "threshold",
            "threshold " + num(s.params.threshold) + " is outside 1.." + num(n));
    require(s.params.degree >= 1 && s.params.degree < n, f + "degree",
            "degree " + num(s.params.degree) + " is outside 1.." + num(n - 1));
    // HetLoRA appends one rank-wise weight per rank index (update_codec.h):
    // R <= updateLength / 2, since each rank index has an A row and a B column.
    const std::uint64_t most_slots = std::min<std::uint64_t>(kMaxRankSlots, plan.update_length / 2);
    require(s.params.vector_length >= plan.update_length + 2 &&
                s.params.vector_length - plan.update_length - 2 <= most_slots,
            f + "vectorLength",
            num(s.params.vector_length) + ", but an update of " + num(plan.update_length) +
                " values travels as updateLength + 2 (weight, loss), plus under HetLoRA at most " + num(most_slots) +
                " rank-wise weights");
    require(s.quant_bits >= 2 && s.quant_bits <= 32, f + "quantBits", num(s.quant_bits) + " is outside 2..32");
    require(std::isfinite(s.clip_range) && s.clip_range >= 1e-30 && s.clip_range <= 1e30, f + "clipRange",
            "value " + std::to_string(s.clip_range) + " is outside [1e-30, 1e30]");
    return s;
  });
}

UpdateEncoding update_encoding(const protocol::RoundPlan& plan) {
  UpdateEncoding e;
  e.update_length = plan.update_length;
  // Plain plans carry no secagg block: the coordinator clips elementwise on
  // receipt, so the node applies only the DP L2 clip there.
  e.clip_range = 1e30;
  if (plan.secure) {
    const SecureSettings s = secure_settings(plan);
    e.clip_range = s.clip_range;
    e.quant_bits = s.quant_bits;
    // t_min: a secure round fails with fewer survivors than its threshold, so
    // each node's share of distributed noise is 1/t of the target.
    e.min_survivors = s.params.threshold;
    e.rank_slots = static_cast<std::uint32_t>(s.params.vector_length - plan.update_length - 2);
  }
  e.example_scale = plan.example_scale;
  e.loss_cap = plan.loss_cap;
  e.dp = plan.dp.mode;
  e.dp_clip_norm = plan.dp.clip_norm;
  e.noise_multiplier = plan.dp.noise_multiplier;
  e.num_clients = static_cast<std::uint32_t>(plan.selected.size());
  return e;
}

std::vector<std::uint8_t> signing_context(std::uint64_t round, std::uint32_t attempt,
                                          const std::vector<protocol::NodeId>& selected) {
  std::vector<std::uint8_t> out;
  auto put = [&](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  put(round, 8);
  put(attempt, 4);
  put(selected.size(), 4);
  for (protocol::NodeId id : selected) put(id, 4);
  return out;
}

// ---- node -> coordinator ----

protocol::AdvertiseKeysBody to_wire(const agg::AdvertiseKeys& m) {
  return {protocol::make_part<schema::AdvertiseKeys>([&](schema::AdvertiseKeys::Builder b) {
    b.setCPublic(data_of(m.c_public));
    b.setSPublic(data_of(m.s_public));
    set_signature(b, m.signature);
  })};
}

agg::AdvertiseKeys from_wire(const protocol::AdvertiseKeysBody& body, std::uint64_t round, agg::ClientId sender) {
  return read_part<schema::AdvertiseKeys>(body.part, "advertiseKeys", [&](schema::AdvertiseKeys::Reader r) {
    return agg::AdvertiseKeys{round, sender, key32(r.getCPublic(), "advertiseKeys.cPublic"),
                              key32(r.getSPublic(), "advertiseKeys.sPublic"),
                              signature_of(r.getSignature(), "advertiseKeys.signature")};
  });
}

protocol::ShareKeysBody to_wire(const agg::ShareKeys& m) {
  return {protocol::make_part<schema::ShareKeys>(
      [&](schema::ShareKeys::Builder b) {
        b.setSender(m.sender);
        write_shares(b.initShares(static_cast<unsigned>(m.shares.size())), m.shares);
      },
      shares_words(m.shares))};
}

agg::ShareKeys from_wire(const protocol::ShareKeysBody& body, std::uint64_t round, agg::ClientId sender) {
  return read_part<schema::ShareKeys>(body.part, "shareKeys", [&](schema::ShareKeys::Reader r) {
    check_sender("shareKeys", r.getSender(), sender);
    return agg::ShareKeys{round, sender, read_shares(r.getShares(), "shareKeys")};
  });
}

protocol::MaskedInputBody to_wire(const agg::MaskedInput& m) {
  return {protocol::make_part<schema::MaskedInput>(
      [&](schema::MaskedInput::Builder b) {
        b.setSender(m.sender);
        b.setMasked(data_of(m.masked.data(), m.masked.size() * sizeof(std::uint32_t)));
      },
      m.masked.size() / 2 + 16)};
}

agg::MaskedInput from_wire(const protocol::MaskedInputBody& body, std::uint64_t round, agg::ClientId sender,
                           std::uint64_t vector_length) {
  return read_part<schema::MaskedInput>(body.part, "maskedInput", [&](schema::MaskedInput::Reader r) {
    check_sender("maskedInput", r.getSender(), sender);
    auto data = r.getMasked();
    require(data.size() == vector_length * sizeof(std::uint32_t), "maskedInput.masked",
            num(data.size()) + " bytes, but the round plan's vectorLength " + num(vector_length) + " needs " +
                num(vector_length * sizeof(std::uint32_t)));
    std::vector<std::uint32_t> masked(vector_length);
    if (!masked.empty()) std::memcpy(masked.data(), data.begin(), data.size());
    return agg::MaskedInput{round, sender, std::move(masked)};
  });
}

protocol::UnmaskResponseBody to_wire(const agg::UnmaskResponse& m) {
  return {protocol::make_part<schema::UnmaskResponse>([&](schema::UnmaskResponse::Builder b) {
    b.setSender(m.sender);
    auto list = b.initShares(static_cast<unsigned>(m.self_mask_shares.size() + m.key_shares.size()));
    unsigned i = 0;
    auto put = [&](const agg::RevealedShare& s, schema::SecretKind kind) {
      auto out = list[i++];
      out.setOwner(s.owner);
      out.setKind(kind);
      out.setX(s.share.x);
      auto y = out.initY(static_cast<unsigned>(s.share.y.size()));
      for (unsigned j = 0; j < s.share.y.size(); ++j) y.set(j, s.share.y[j]);
    };
    for (const auto& s : m.self_mask_shares) put(s, schema::SecretKind::SELF_MASK);
    for (const auto& s : m.key_shares) put(s, schema::SecretKind::PAIRWISE_KEY);
  })};
}

agg::UnmaskResponse from_wire(const protocol::UnmaskResponseBody& body, std::uint64_t round, agg::ClientId sender) {
  return read_part<schema::UnmaskResponse>(body.part, "unmaskResponse", [&](schema::UnmaskResponse::Reader r) {
    check_sender("unmaskResponse", r.getSender(), sender);
    agg::UnmaskResponse out{round, sender, {}, {}};
    for (auto s : r.getShares()) {
      const auto kind = s.getKind();
      require(kind == schema::SecretKind::SELF_MASK || kind == schema::SecretKind::PAIRWISE_KEY,
              "unmaskResponse.shares.kind", "unknown value " + num(static_cast<std::uint16_t>(kind)) + " (known: 0..1)");
      require(s.getX() != 0, "unmaskResponse.shares.x", "Shamir x-coordinate 0 is never a holder");
      auto y = s.getY();
      require(y.size() != 0, "unmaskResponse.shares.y", "is empty");
      agg::RevealedShare revealed{s.getOwner(), privacy::Share{s.getX(), values_of<std::uint64_t>(y)}};
      (kind == schema::SecretKind::SELF_MASK ? out.self_mask_shares : out.key_shares).push_back(std::move(revealed));
    }
    return out;
  });
}

// ---- coordinator -> node ----

protocol::KeysBroadcastBody to_wire(const agg::KeysBroadcast& m) {
  return {protocol::make_part<schema::KeysBroadcast>([&](schema::KeysBroadcast::Builder b) {
    b.setRecipient(m.recipient);
    auto list = b.initNeighbours(static_cast<unsigned>(m.neighbours.size()));
    for (unsigned i = 0; i < m.neighbours.size(); ++i) {
      list[i].setId(m.neighbours[i].id);
      list[i].setCPublic(data_of(m.neighbours[i].c_public));
      list[i].setSPublic(data_of(m.neighbours[i].s_public));
      set_signature(list[i], m.neighbours[i].signature);
    }
    if (m.graph_seed != privacy::Key32{}) b.setGraphSeed(data_of(m.graph_seed));
  })};
}

agg::KeysBroadcast from_wire(const protocol::KeysBroadcastBody& body, std::uint64_t round) {
  return read_part<schema::KeysBroadcast>(body.part, "keysBroadcast", [&](schema::KeysBroadcast::Reader r) {
    agg::KeysBroadcast out{round, r.getRecipient(), {}, {}};
    if (r.getGraphSeed().size() != 0) out.graph_seed = key32(r.getGraphSeed(), "keysBroadcast.graphSeed");
    std::vector<std::uint32_t> ids;
    for (auto k : r.getNeighbours()) {
      out.neighbours.push_back({k.getId(), key32(k.getCPublic(), "keysBroadcast.neighbours.cPublic"),
                                key32(k.getSPublic(), "keysBroadcast.neighbours.sPublic"),
                                signature_of(k.getSignature(), "keysBroadcast.neighbours.signature")});
      ids.push_back(k.getId());
    }
    unique_ids(ids, "keysBroadcast.neighbours.id");
    return out;
  });
}

protocol::SharesDeliveryBody to_wire(const agg::SharesDelivery& m) {
  return {protocol::make_part<schema::SharesDelivery>(
      [&](schema::SharesDelivery::Builder b) {
        b.setRecipient(m.recipient);
        write_shares(b.initShares(static_cast<unsigned>(m.shares.size())), m.shares);
      },
      shares_words(m.shares))};
}

agg::SharesDelivery from_wire(const protocol::SharesDeliveryBody& body, std::uint64_t round) {
  return read_part<schema::SharesDelivery>(body.part, "sharesDelivery", [&](schema::SharesDelivery::Reader r) {
    return agg::SharesDelivery{round, r.getRecipient(), read_shares(r.getShares(), "sharesDelivery")};
  });
}

protocol::UnmaskRequestBody to_wire(const agg::UnmaskRequest& m, std::uint32_t num_clients) {
  std::vector<std::uint32_t> dropped;
  for (std::uint32_t c = 1; c <= num_clients; ++c)
    if (!std::binary_search(m.survivors.begin(), m.survivors.end(), c)) dropped.push_back(c);
  return {protocol::make_part<schema::UnmaskRequest>([&](schema::UnmaskRequest::Builder b) {
    set_ids(b.initSurvivors(static_cast<unsigned>(m.survivors.size())), m.survivors);
    set_ids(b.initDropped(static_cast<unsigned>(dropped.size())), dropped);
    if (m.signatures.empty()) return;  // semi-honest: as before the malicious mode
    auto sigs = b.initSignatures(static_cast<unsigned>(m.signatures.size()));
    for (unsigned i = 0; i < m.signatures.size(); ++i) {
      sigs[i].setSender(m.signatures[i].sender);
      sigs[i].setSignature(data_of(m.signatures[i].signature.data(), 64));
    }
  })};
}

agg::UnmaskRequest from_wire(const protocol::UnmaskRequestBody& body, std::uint64_t round) {
  return read_part<schema::UnmaskRequest>(body.part, "unmaskRequest", [&](schema::UnmaskRequest::Reader r) {
    std::vector<std::uint32_t> survivors = values_of<std::uint32_t>(r.getSurvivors());
    std::vector<std::uint32_t> all = survivors;
    for (auto id : r.getDropped()) all.push_back(id);
    unique_ids(all, "unmaskRequest.dropped");  // a client is a survivor or dropped, once
    agg::UnmaskRequest out{round, std::move(survivors), {}};
    for (auto sig : r.getSignatures()) {
      require(sig.getSignature().size() == 64, "unmaskRequest.signatures.signature",
              "must be exactly 64 bytes (Ed25519), got " + num(sig.getSignature().size()));
      out.signatures.push_back({round, sig.getSender(), signature_of(sig.getSignature(), "unmaskRequest.signatures.signature")});
    }
    return out;
  });
}

// ---- the consistency round (malicious mode) ----

protocol::ConsistencyCheckBody to_wire(const agg::ConsistencyCheck& m) {
  return {protocol::make_part<schema::ConsistencyCheck>([&](schema::ConsistencyCheck::Builder b) {
    set_ids(b.initSurvivors(static_cast<unsigned>(m.survivors.size())), m.survivors);
  })};
}

agg::ConsistencyCheck from_wire(const protocol::ConsistencyCheckBody& body, std::uint64_t round) {
  return read_part<schema::ConsistencyCheck>(body.part, "consistencyCheck", [&](schema::ConsistencyCheck::Reader r) {
    return agg::ConsistencyCheck{round, read_survivors(r.getSurvivors(), "consistencyCheck.survivors")};
  });
}

protocol::SurvivorSignatureBody to_wire(const agg::SurvivorSignature& m) {
  return {protocol::make_part<schema::SurvivorSignature>([&](schema::SurvivorSignature::Builder b) {
    b.setSender(m.sender);
    b.setSignature(data_of(m.signature.data(), m.signature.size()));
  })};
}

agg::SurvivorSignature from_wire(const protocol::SurvivorSignatureBody& body, std::uint64_t round,
                                 agg::ClientId sender) {
  return read_part<schema::SurvivorSignature>(body.part, "survivorSignature", [&](schema::SurvivorSignature::Reader r) {
    check_sender("survivorSignature", r.getSender(), sender);
    require(r.getSignature().size() == 64, "survivorSignature.signature",
            "must be exactly 64 bytes (Ed25519), got " + num(r.getSignature().size()));
    return agg::SurvivorSignature{round, sender, signature_of(r.getSignature(), "survivorSignature.signature")};
  });
}

}  // namespace fedge::federation::wire
