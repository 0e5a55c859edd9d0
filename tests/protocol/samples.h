// One sample Envelope of every message type, with distinctive field values,
// shared by the codec and transport tests.
#pragma once

#include <cstring>
#include <numeric>
#include <vector>

#include "fedge/protocol/codec.h"
#include "fedge/protocol/opaque.h"

namespace fedge::protocol::test {

inline Key32 key_of(std::uint8_t seed) {
  Key32 k;
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed + 7 * i);
  return k;
}

inline std::vector<std::uint8_t> bytes_of(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(seed ^ (i * 31));
  return v;
}

inline capnp::Data::Reader data_of(const std::vector<std::uint8_t>& v) { return {v.data(), v.size()}; }
inline capnp::Data::Reader data_of(const Key32& k) { return {k.data(), k.size()}; }

// The secure-aggregation parts, written in their schema form as federation/wire
// writes them (protocol only carries them).
inline OpaquePart sample_secagg_settings() {
  return make_part<wire::SecAggParams>([](wire::SecAggParams::Builder b) {
    b.setNumClients(4);
    b.setThreshold(3);
    b.setDegree(3);
    b.setVectorLength(1002);
    b.setGraphSeed(data_of(key_of(9)));
    b.setQuantBits(16);
    b.setClipRange(0.5);
    b.setNoiseBound(12);
    b.setPrg(wire::MaskPrg::AES256_CTR);
  });
}

template <class Schema>
inline void set_shares(Schema b, std::uint32_t to_or_from, bool from_fixed) {
  auto list = b.initShares(2);
  for (unsigned i = 0; i < 2; ++i) {
    list[i].setFrom(from_fixed ? to_or_from : i + 1);
    list[i].setTo(from_fixed ? i * 2 + 1 : to_or_from);
    auto box = bytes_of(120, static_cast<std::uint8_t>(i + 1));
    list[i].setBox(data_of(box));
  }
}

inline Body sample_secagg_body(SecAggStep step) {
  switch (step) {
    case SecAggStep::kAdvertiseKeys:
      return AdvertiseKeysBody{make_part<wire::AdvertiseKeys>([](wire::AdvertiseKeys::Builder b) {
        b.setCPublic(data_of(key_of(2)));
        b.setSPublic(data_of(key_of(3)));
        auto sig = bytes_of(64, 4);
        b.setSignature(data_of(sig));
      })};
    case SecAggStep::kKeysBroadcast:
      return KeysBroadcastBody{make_part<wire::KeysBroadcast>([](wire::KeysBroadcast::Builder b) {
        b.setRecipient(2);
        auto list = b.initNeighbours(2);
        list[0].setId(1);
        list[0].setCPublic(data_of(key_of(5)));
        list[0].setSPublic(data_of(key_of(6)));
        list[1].setId(3);
        list[1].setCPublic(data_of(key_of(7)));
        list[1].setSPublic(data_of(key_of(8)));
      })};
    case SecAggStep::kShareKeys:
      return ShareKeysBody{make_part<wire::ShareKeys>([](wire::ShareKeys::Builder b) {
        b.setSender(2);
        set_shares(b, 2, true);
      })};
    case SecAggStep::kSharesDelivery:
      return SharesDeliveryBody{make_part<wire::SharesDelivery>([](wire::SharesDelivery::Builder b) {
        b.setRecipient(3);
        set_shares(b, 3, false);
      })};
    case SecAggStep::kMaskedInput:
      return MaskedInputBody{make_part<wire::MaskedInput>([](wire::MaskedInput::Builder b) {
        b.setSender(2);
        std::vector<std::uint32_t> masked(1000);
        for (std::size_t i = 0; i < masked.size(); ++i) masked[i] = static_cast<std::uint32_t>(i * 2654435761u);
        b.setMasked({reinterpret_cast<const capnp::byte*>(masked.data()), masked.size() * 4});
      })};
    case SecAggStep::kUnmaskRequest:
      return UnmaskRequestBody{make_part<wire::UnmaskRequest>([](wire::UnmaskRequest::Builder b) {
        auto survivors = b.initSurvivors(3);
        for (unsigned i = 0; i < 3; ++i) survivors.set(i, i == 2 ? 4 : i + 1);
        b.initDropped(1).set(0, 3);
      })};
    case SecAggStep::kUnmaskResponse:
      return UnmaskResponseBody{make_part<wire::UnmaskResponse>([](wire::UnmaskResponse::Builder b) {
        b.setSender(2);
        auto list = b.initShares(2);
        list[0].setOwner(1);
        list[0].setKind(wire::SecretKind::SELF_MASK);
        list[0].setX(2);
        auto y0 = list[0].initY(5);
        for (unsigned i = 0; i < 5; ++i) y0.set(i, i + 1);
        list[1].setOwner(3);
        list[1].setKind(wire::SecretKind::PAIRWISE_KEY);
        list[1].setX(2);
        auto y1 = list[1].initY(2);
        y1.set(0, ~0ull);
        y1.set(1, 7);
      })};
    case SecAggStep::kConsistencyCheck:
      return ConsistencyCheckBody{make_part<wire::ConsistencyCheck>([](wire::ConsistencyCheck::Builder b) {
        auto survivors = b.initSurvivors(3);
        for (unsigned i = 0; i < 3; ++i) survivors.set(i, i == 2 ? 4 : i + 1);
      })};
    case SecAggStep::kSurvivorSignature:
      return SurvivorSignatureBody{make_part<wire::SurvivorSignature>([](wire::SurvivorSignature::Builder b) {
        b.setSender(2);
        auto sig = bytes_of(64, 9);
        b.setSignature(data_of(sig));
      })};
  }
  return {};
}

inline Envelope envelope(Body body, std::uint32_t sender, std::uint64_t round = 42) {
  Envelope e;
  e.round = round;
  e.sender = sender;
  e.body = std::move(body);
  e.attempt = round != 0 ? 3 : 0;  // round messages carry their attempt; round trips check it
  return e;
}

inline RoundPlan sample_plan() {
  RoundPlan p;
  p.global_version = 7;
  p.hyper = {25, 0.001f, 8, 0.01f};
  p.deadlines = {60000, 2000, 3000, 4000, 5000};
  p.secure = true;
  p.secagg = sample_secagg_settings();
  p.dp = {DpMode::kDistributed, 1.25, 0.8};
  p.selected = {11, 12, 13, 14};
  p.update_length = 1000;
  p.example_scale = 250;
  p.loss_cap = 32;
  return p;
}

// Every Body alternative, in index order; bulk payloads own their storage.
inline std::vector<Envelope> all_samples() {
  std::vector<Envelope> out;
  out.push_back(envelope(Register{11, "site-a", key_of(1), {"rpi5", 12345, "tiny-llama", 4, 8ull << 30}}, 11, 0));
  out.push_back(envelope(RegisterAck{11, 1500, 6}, 0, 0));
  out.push_back(envelope(Heartbeat{1700000000123ull, NodeState::kTraining, 6}, 11, 0));
  out.push_back(envelope(sample_plan(), 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kAdvertiseKeys), 12));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kKeysBroadcast), 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kShareKeys), 12));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kSharesDelivery), 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kMaskedInput), 12));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kUnmaskRequest), 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kUnmaskResponse), 12));
  std::vector<float> update(1000);
  std::iota(update.begin(), update.end(), -500.25f);
  out.push_back(envelope(PlainUpdate{321, Payload<float>::own(update), 1.5f}, 12));
  std::vector<float> model(2 * 3 + 4);
  std::iota(model.begin(), model.end(), 0.5f);
  std::vector<std::uint8_t> model_bytes(model.size() * 4);
  std::memcpy(model_bytes.data(), model.data(), model_bytes.size());
  out.push_back(envelope(
      GlobalModel{8, ModelFormat::kFlatF32, Payload<std::uint8_t>::own(model_bytes), {{"a.lora_A", {2, 3}}, {"b", {4}}}},
      0));
  out.push_back(envelope(Metrics{{{"loss", 0.125}, {"accuracy", 0.75}, {"bytes_up", 1e9}}}, 12));
  out.push_back(envelope(InferenceRequest{99, "Hello, well 7", 64, 0.7f, 0.9f, 1234, AdapterChoice::kLocal, true}, 12, 0));
  out.push_back(envelope(InferenceResponse{99, "production rose", 4, 2, FinishReason::kLength, true, "peer down"}, 13, 0));
  out.push_back(envelope(TokenChunk{99, 3, 257, " rose", true, FinishReason::kStop}, 13, 0));
  std::vector<float> hidden(2 * 8);
  std::iota(hidden.begin(), hidden.end(), 1.0f);
  out.push_back(envelope(HiddenStates{99, HiddenKind::kActivations, 4, 10, {2, 8}, Payload<float>::own(hidden)}, 12, 0));
  out.push_back(envelope(ErrorReply{ErrorCode::kWrongStage, "maskedInput before shareKeys", 8}, 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kConsistencyCheck), 0));
  out.push_back(envelope(sample_secagg_body(SecAggStep::kSurvivorSignature), 12));
  return out;
}

}  // namespace fedge::protocol::test
