// One sample Envelope of every message type, with distinctive field values,
// shared by the codec and transport tests.
#pragma once

#include <cstring>
#include <numeric>
#include <vector>

#include "fedge/protocol/codec.h"

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
  p.secagg = {4, 3, 3, 1000, key_of(9), 16, 0.5, 12, MaskPrg::kAes256Ctr};
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
  out.push_back(envelope(AdvertiseKeys{key_of(2), key_of(3), bytes_of(64, 4)}, 12));
  out.push_back(envelope(KeysBroadcast{2, {{1, key_of(5), key_of(6), {}}, {3, key_of(7), key_of(8), bytes_of(64, 1)}}}, 0));
  out.push_back(envelope(ShareKeys{2, {{2, 1, bytes_of(120, 1)}, {2, 3, bytes_of(120, 2)}}}, 12));
  out.push_back(envelope(SharesDelivery{3, {{1, 3, bytes_of(120, 3)}, {2, 3, bytes_of(120, 4)}}}, 0));
  std::vector<std::uint32_t> masked(1000);
  for (std::size_t i = 0; i < masked.size(); ++i) masked[i] = static_cast<std::uint32_t>(i * 2654435761u);
  out.push_back(envelope(MaskedInput{2, Payload<std::uint32_t>::own(masked)}, 12));
  out.push_back(envelope(UnmaskRequest{{1, 2, 4}, {3}}, 0));
  out.push_back(envelope(
      UnmaskResponse{2, {{1, SecretKind::kSelfMask, 2, {1, 2, 3, 4, 5}}, {3, SecretKind::kPairwiseKey, 2, {~0ull, 7}}}},
      12));
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
  return out;
}

}  // namespace fedge::protocol::test
