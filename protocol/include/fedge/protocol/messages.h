// Plain C++ forms of every wire message (protocol/schema/fedge.capnp). The
// codec (codec.h) turns an Envelope into bytes and back, validating every field.
// Ids inside secure-aggregation messages are client ids 1..n (a node's client id
// is its index in RoundPlan::selected plus one); Envelope::sender is a node id.
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
// The secure-aggregation mask generator (privacy::PrgKind on the wire).
enum class MaskPrg : std::uint16_t { kChaCha20, kAes256Ctr };
enum class SecretKind : std::uint16_t { kSelfMask, kPairwiseKey };
enum class ModelFormat : std::uint16_t { kFlatF32, kSafetensors };
enum class AdapterChoice : std::uint16_t { kGlobal, kLocal, kNone };
enum class FinishReason : std::uint16_t { kStop, kLength, kError, kCancelled };
enum class HiddenKind : std::uint16_t { kActivations, kLogits };

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
struct SecAggParams {
  std::uint32_t num_clients = 0;
  std::uint32_t threshold = 0;
  std::uint32_t degree = 0;
  std::uint64_t vector_length = 0;
  Key32 graph_seed{};
  std::uint32_t quant_bits = 0;
  double clip_range = 0;
  std::uint64_t noise_bound = 0;
  MaskPrg prg = MaskPrg::kChaCha20;
  bool operator==(const SecAggParams&) const = default;
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
  SecAggParams secagg;  // meaningful when secure
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
struct AdvertiseKeys {
  Key32 c_public{}, s_public{};
  std::vector<std::uint8_t> signature;  // empty or 64 bytes
  bool operator==(const AdvertiseKeys&) const = default;
};
struct PeerKeys {
  std::uint32_t id = 0;
  Key32 c_public{}, s_public{};
  std::vector<std::uint8_t> signature;
  bool operator==(const PeerKeys&) const = default;
};
struct KeysBroadcast {
  std::uint32_t recipient = 0;
  std::vector<PeerKeys> neighbours;
  bool operator==(const KeysBroadcast&) const = default;
};
struct EncryptedShare {
  std::uint32_t from = 0, to = 0;
  std::vector<std::uint8_t> box;
  bool operator==(const EncryptedShare&) const = default;
};
struct ShareKeys {
  std::uint32_t sender = 0;
  std::vector<EncryptedShare> shares;
  bool operator==(const ShareKeys&) const = default;
};
struct SharesDelivery {
  std::uint32_t recipient = 0;
  std::vector<EncryptedShare> shares;
  bool operator==(const SharesDelivery&) const = default;
};
struct MaskedInput {
  std::uint32_t sender = 0;
  Payload<std::uint32_t> masked;  // d ring elements
  bool operator==(const MaskedInput&) const = default;
};
struct UnmaskRequest {
  std::vector<std::uint32_t> survivors, dropped;
  bool operator==(const UnmaskRequest&) const = default;
};
struct RevealedShare {
  std::uint32_t owner = 0;
  SecretKind kind = SecretKind::kSelfMask;
  std::uint32_t x = 0;
  std::vector<std::uint64_t> y;
  bool operator==(const RevealedShare&) const = default;
};
struct UnmaskResponse {
  std::uint32_t sender = 0;
  std::vector<RevealedShare> shares;
  bool operator==(const UnmaskResponse&) const = default;
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
using Body = std::variant<Register, RegisterAck, Heartbeat, RoundPlan, AdvertiseKeys, KeysBroadcast, ShareKeys,
                          SharesDelivery, MaskedInput, UnmaskRequest, UnmaskResponse, PlainUpdate, GlobalModel,
                          Metrics, InferenceRequest, InferenceResponse, TokenChunk, HiddenStates, ErrorReply>;

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
