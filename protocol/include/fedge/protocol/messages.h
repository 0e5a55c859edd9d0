// Plain C++ forms of the wire messages (protocol/schema/fedge.capnp). The codec
// (codec.h) turns an Envelope into bytes and back, validating every field. The
// round's secure-aggregation messages are the exception: protocol carries them
// as OpaqueParts, whose one C++ form is aggregation's (see OpaquePart).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace fedge::protocol {

// Bumped on any change an older peer cannot read; equals wire::protocolVersion.
inline constexpr std::uint16_t kProtocolVersion = 1;
inline constexpr std::uint32_t kCoordinatorId = 0;  // Envelope::sender of the coordinator

using NodeId = std::uint32_t;
using Key32 = std::array<std::uint8_t, 32>;

// A bulk array (update, masked vector, model bytes, hidden states). It either
// borrows caller memory (for encoding: the caller keeps it alive until encode()
// returns) or shares ownership of the storage it points into (decoded messages
// point straight into the received buffer, without a copy, when it is aligned).
template <class T>
class Payload {
 public:
  Payload() = default;
  static Payload borrow(std::span<const T> view) { return Payload(view, nullptr); }
  static Payload own(std::vector<T> values) {
    auto storage = std::make_shared<const std::vector<T>>(std::move(values));
    return Payload(std::span<const T>(*storage), storage);
  }
  static Payload shared(std::span<const T> view, std::shared_ptr<const void> keep) {
    return Payload(view, std::move(keep));
  }
  std::span<const T> span() const { return view_; }
  const T* data() const { return view_.data(); }
  std::size_t size() const { return view_.size(); }
  bool empty() const { return view_.empty(); }
  std::vector<T> to_vector() const { return {view_.begin(), view_.end()}; }
  // True when this payload keeps its storage alive (owned or decoded).
  bool owns_storage() const { return keep_ != nullptr; }
  friend bool operator==(const Payload& a, const Payload& b) {
    return a.size() == b.size() && std::equal(a.view_.begin(), a.view_.end(), b.view_.begin());
  }

 private:
  Payload(std::span<const T> view, std::shared_ptr<const void> keep) : view_(view), keep_(std::move(keep)) {}
  std::span<const T> view_;
  std::shared_ptr<const void> keep_;
};

enum class ErrorCode : std::uint16_t {
  kUnknown, kBadVersion, kMalformed, kTooLarge, kWrongRound, kWrongStage, kNotAllowed,
  kUnknownSender, kDuplicate, kDeadlineMissed, kUnsupported, kInternal, kOverloaded,
};
enum class NodeState : std::uint16_t { kIdle, kTraining, kAggregating, kServing, kDraining };
enum class DpMode : std::uint16_t { kNone, kCentral, kDistributed };
enum class ModelFormat : std::uint16_t { kFlatF32, kSafetensors };
enum class AdapterChoice : std::uint16_t { kGlobal, kLocal, kNone };
enum class FinishReason : std::uint16_t { kStop, kLength, kError, kCancelled };
enum class HiddenKind : std::uint16_t { kActivations, kLogits };

// A part of a round message that protocol carries but does not define: the
// secure-aggregation messages and a secure plan's settings. Their one C++ form
// is aggregation's (aggregation/secagg.h) and their one converter
// federation/wire.h (which reads and writes them with protocol/opaque.h).
// protocol holds such a part as the Cap'n Proto words of its schema struct
// (protocol/schema/fedge.capnp), at the size the schema writes it, so a part
// takes on the wire what the struct written in place would: decode() has
// checked its structure (bounds, traversal and nesting limits), federation
// checks its fields.
struct OpaquePart {
  Payload<std::uint64_t> words;  // one Cap'n Proto segment, root pointer first; empty: the part is absent
  bool empty() const { return words.empty(); }
  // Same content: equal in Cap'n Proto's canonical form (protocol/src/opaque.cpp).
  friend bool operator==(const OpaquePart& a, const OpaquePart& b);
};

// The secure-aggregation steps that travel as Envelope bodies (the last two
// only in the malicious-server mode's consistency round).
enum class SecAggStep : std::uint8_t {
  kAdvertiseKeys, kKeysBroadcast, kShareKeys, kSharesDelivery, kMaskedInput, kUnmaskRequest, kUnmaskResponse,
  kConsistencyCheck, kSurvivorSignature,
};
template <SecAggStep Step>
struct SecAggBody {
  static constexpr SecAggStep kStep = Step;
  OpaquePart part;
  bool operator==(const SecAggBody&) const = default;
};
using AdvertiseKeysBody = SecAggBody<SecAggStep::kAdvertiseKeys>;    // node -> coordinator
using KeysBroadcastBody = SecAggBody<SecAggStep::kKeysBroadcast>;    // coordinator -> node
using ShareKeysBody = SecAggBody<SecAggStep::kShareKeys>;            // node -> coordinator
using SharesDeliveryBody = SecAggBody<SecAggStep::kSharesDelivery>;  // coordinator -> node
using MaskedInputBody = SecAggBody<SecAggStep::kMaskedInput>;        // node -> coordinator
using UnmaskRequestBody = SecAggBody<SecAggStep::kUnmaskRequest>;    // coordinator -> node
using UnmaskResponseBody = SecAggBody<SecAggStep::kUnmaskResponse>;  // node -> coordinator
using ConsistencyCheckBody = SecAggBody<SecAggStep::kConsistencyCheck>;    // coordinator -> node
using SurvivorSignatureBody = SecAggBody<SecAggStep::kSurvivorSignature>;  // node -> coordinator

struct Capabilities {
  std::string device_profile;
  std::uint64_t num_examples = 0;
  std::string model_name;
  std::uint32_t threads = 0;
  std::uint64_t memory_bytes = 0;
  bool operator==(const Capabilities&) const = default;
};
struct Register {
  NodeId node_id = 0;
  std::string name;
  Key32 public_key{};  // CurveZMQ public key (binary)
  Capabilities capabilities;
  bool operator==(const Register&) const = default;
};
struct RegisterAck {
  NodeId node_id = 0;
  std::uint32_t heartbeat_interval_ms = 0;
  std::uint64_t global_version = 0;
  bool operator==(const RegisterAck&) const = default;
};
struct Heartbeat {
  std::uint64_t unix_ms = 0;
  NodeState state = NodeState::kIdle;
  std::uint64_t global_version = 0;
  bool operator==(const Heartbeat&) const = default;
};
struct HyperParams {
  std::uint32_t local_steps = 0;
  float learning_rate = 0;
  std::uint32_t batch_size = 0;
  float fedprox_mu = 0;
  bool operator==(const HyperParams&) const = default;
};
struct Deadlines {
  std::uint32_t train_ms = 0, advertise_keys_ms = 0, share_keys_ms = 0, masked_input_ms = 0, unmask_ms = 0;
  bool operator==(const Deadlines&) const = default;
};
struct DpParams {
  DpMode mode = DpMode::kNone;
  double clip_norm = 0;
  double noise_multiplier = 0;
  bool operator==(const DpParams&) const = default;
};
struct RoundPlan {
  std::uint64_t global_version = 0;
  HyperParams hyper;
  Deadlines deadlines;
  bool secure = false;
  // When secure: the schema's SecAggParams (the SecAgg+ parameters, the
  // quantiser and the noise bound), read and written by federation/wire.h.
  OpaquePart secagg;
  DpParams dp;
  std::vector<NodeId> selected;
  std::uint64_t update_length = 0;
  // Update encoding (docs/FEDERATION.md): a node's weight is
  // min(num_examples, example_scale) / example_scale, so it lies in [0, 1];
  // train losses are clamped to [0, loss_cap] (0: the loss is not reported).
  std::uint64_t example_scale = 0;
  double loss_cap = 0;
  bool operator==(const RoundPlan&) const = default;
};
struct PlainUpdate {
  std::uint64_t num_examples = 0;
  Payload<float> update;
  float train_loss = 0;
  bool operator==(const PlainUpdate&) const = default;
};
struct TensorLayout {
  std::string name;
  std::vector<std::uint64_t> shape;
  bool operator==(const TensorLayout&) const = default;
};
struct GlobalModel {
  std::uint64_t version = 0;
  ModelFormat format = ModelFormat::kFlatF32;
  Payload<std::uint8_t> data;  // flat f32 (LE) or a safetensors file
  std::vector<TensorLayout> layout;
  bool operator==(const GlobalModel&) const = default;
};
struct Metric {
  std::string name;
  double value = 0;
  bool operator==(const Metric&) const = default;
};
struct Metrics {
  std::vector<Metric> entries;
  bool operator==(const Metrics&) const = default;
};
struct InferenceRequest {
  std::uint64_t request_id = 0;
  std::string prompt;
  std::uint32_t max_tokens = 0;
  float temperature = 0, top_p = 0;
  std::uint64_t seed = 0;
  AdapterChoice adapter = AdapterChoice::kGlobal;
  bool stream = false;
  bool operator==(const InferenceRequest&) const = default;
};
struct InferenceResponse {
  std::uint64_t request_id = 0;
  std::string text;
  std::uint32_t prompt_tokens = 0, completion_tokens = 0;
  FinishReason finish = FinishReason::kStop;
  bool fell_back_to_local = false;
  std::string note;
  bool operator==(const InferenceResponse&) const = default;
};
struct TokenChunk {
  std::uint64_t request_id = 0;
  std::uint32_t index = 0, token_id = 0;
  std::string text;
  bool last = false;
  FinishReason finish = FinishReason::kStop;
  bool operator==(const TokenChunk&) const = default;
};
struct HiddenStates {
  std::uint64_t request_id = 0;
  HiddenKind kind = HiddenKind::kActivations;
  std::uint32_t layer = 0, position = 0;
  std::vector<std::uint64_t> shape;
  Payload<float> data;  // product(shape) elements
  bool operator==(const HiddenStates&) const = default;
};
struct ErrorReply {
  ErrorCode code = ErrorCode::kUnknown;
  std::string message;
  std::uint16_t in_reply_to = 0xffff;  // Body index of the refused message
  bool operator==(const ErrorReply&) const = default;
};

// Alternatives are in the schema's union order, so Body::index() equals the
// wire discriminant.
using Body = std::variant<Register, RegisterAck, Heartbeat, RoundPlan, AdvertiseKeysBody, KeysBroadcastBody,
                          ShareKeysBody, SharesDeliveryBody, MaskedInputBody, UnmaskRequestBody, UnmaskResponseBody,
                          PlainUpdate, GlobalModel, Metrics, InferenceRequest, InferenceResponse, TokenChunk,
                          HiddenStates, ErrorReply, ConsistencyCheckBody, SurvivorSignatureBody>;

struct Envelope {
  std::uint16_t version = kProtocolVersion;
  std::uint64_t round = 0;
  NodeId sender = kCoordinatorId;
  Body body;
  std::uint32_t attempt = 0;  // of `round` (1-based) on round messages; 0 outside rounds
  bool operator==(const Envelope&) const = default;
};

// Body::index() of message type T (its wire discriminant), for code that must
// name a message kind by number (ErrorReply::in_reply_to).
template <class T>
constexpr std::size_t body_index() {
  return []<class... Ts>(std::variant<Ts...>*) {
    std::size_t index = 0;
    (void)((std::is_same_v<T, Ts> ? true : (++index, false)) || ...);
    return index;
  }(static_cast<Body*>(nullptr));
}

// Schema name of a body alternative ("roundPlan", "maskedInput", ...), for logs and errors.
const char* body_name(std::size_t index);
inline const char* body_name(const Body& body) { return body_name(body.index()); }

}  // namespace fedge::protocol
