// Bytes -> validated Envelope. Every field a peer controls is checked here, and
// every kj::Exception that Cap'n Proto raises for malformed bytes is caught at
// this boundary and turned into a DecodeError naming the field being read.
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <set>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "fedge.capnp.h"
#include "fedge/protocol/codec.h"
#include "fedge/protocol/decode_path.h"
#include "fedge/protocol/opaque.h"

namespace fedge::protocol {
namespace {

// What is being read, and the receiver's limits and expectations.
struct Ctx {
  const Limits& limits;
  const Expectations& expect;
  std::shared_ptr<const void> keep;  // storage that decoded payloads point into
  std::size_t message_words = 0;     // the whole message: room enough for a copy of any part of it
  DecodePath path{"protocol", "envelope"};

  [[noreturn]] void fail(ErrorCode code, const std::string& what) const { path.fail(code, what); }
};

class Field : public FieldGuard {
 public:
  Field(Ctx& ctx, const char* name) : FieldGuard(ctx.path, name) {}
};

std::string num(std::uint64_t v) { return std::to_string(v); }

template <class Get>
Key32 key32(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  capnp::Data::Reader data = get();
  if (data.size() != 32) ctx.fail(ErrorCode::kMalformed, "must be exactly 32 bytes, got " + num(data.size()));
  Key32 key;
  std::memcpy(key.data(), data.begin(), 32);
  return key;
}

template <class Get>
std::string text(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  capnp::Text::Reader t = get();
  if (t.size() > ctx.limits.max_text_bytes) {
    ctx.fail(ErrorCode::kTooLarge, num(t.size()) + " bytes of text, limit " + num(ctx.limits.max_text_bytes));
  }
  return {t.begin(), t.size()};
}

void check_length(Ctx& ctx, std::size_t n) {
  if (n > ctx.limits.max_list_length) {
    ctx.fail(ErrorCode::kTooLarge, num(n) + " entries, limit " + num(ctx.limits.max_list_length));
  }
}

template <class T, class Get>
std::vector<T> prims(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  typename capnp::List<T>::Reader list = get();
  check_length(ctx, list.size());
  std::vector<T> out;
  out.reserve(list.size());
  for (auto v : list) out.push_back(v);
  return out;
}

// Bulk payload of T: a view into the message when aligned (always, for an
// aligned buffer: capnp Data starts on a word boundary), else a copy.
template <class T, class Get>
Payload<T> bulk(Ctx& ctx, const char* name, Get get, std::optional<std::uint64_t> expected,
                const char* expected_from) {
  Field f(ctx, name);
  capnp::Data::Reader data = get();
  if (data.size() % sizeof(T) != 0) {
    ctx.fail(ErrorCode::kMalformed, num(data.size()) + " bytes is not a whole number of " + num(sizeof(T)) +
                                        "-byte elements");
  }
  const std::size_t n = data.size() / sizeof(T);
  if (n > ctx.limits.max_vector_length) {
    ctx.fail(ErrorCode::kTooLarge, num(n) + " elements, limit " + num(ctx.limits.max_vector_length));
  }
  if (expected && n != *expected) {
    ctx.fail(ErrorCode::kMalformed, num(n) + " elements, but " + expected_from + " says " + num(*expected));
  }
  if (reinterpret_cast<std::uintptr_t>(data.begin()) % alignof(T) != 0) {
    std::vector<T> copy(n);
    if (n) std::memcpy(copy.data(), data.begin(), data.size());
    return Payload<T>::own(std::move(copy));
  }
  return Payload<T>::shared({reinterpret_cast<const T*>(data.begin()), n}, ctx.keep);
}

// Cap'n Proto hands out unknown enum values as-is; refuse them.
template <class E, class W>
E enum_value(Ctx& ctx, const char* name, W value, std::uint16_t count) {
  Field f(ctx, name);
  auto raw = static_cast<std::uint16_t>(value);
  if (raw >= count) ctx.fail(ErrorCode::kMalformed, "unknown value " + num(raw) + " (known: 0.." + num(count - 1) + ")");
  return static_cast<E>(raw);
}

void finite(Ctx& ctx, const char* name, double v, double lo, double hi) {
  Field f(ctx, name);
  if (!std::isfinite(v) || v < lo || v > hi) {
    ctx.fail(ErrorCode::kMalformed, "value " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "]");
  }
}

void require(Ctx& ctx, bool ok, const char* name, const std::string& what) {
  if (ok) return;
  Field f(ctx, name);
  ctx.fail(ErrorCode::kMalformed, what);
}

void unique_ids(Ctx& ctx, const char* name, const std::vector<std::uint32_t>& ids) {
  std::set<std::uint32_t> seen;
  for (auto id : ids) require(ctx, seen.insert(id).second, name, "id " + num(id) + " appears twice");
}

// A part whose fields federation/wire.h reads: copied out, which walks every
// pointer in it within the reader's bounds, traversal and nesting limits, so a
// part that decodes is well formed.
template <class Get>
OpaquePart opaque(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  return part_of(get(), ctx.message_words);
}

// The receiver's size limits apply to opaque parts too: their lists and
// vectors are measured (a pointer read, no copy) before the part is copied.
template <class Get>
void list_limit(Ctx& ctx, const char* body, const char* field, Get get) {
  Field b(ctx, body);
  Field f(ctx, field);
  check_length(ctx, get().size());
}

void check_part_sizes(Ctx& ctx, wire::Envelope::Body::Reader b) {
  using W = wire::Envelope::Body;
  switch (b.which()) {
    case W::KEYS_BROADCAST:
      return list_limit(ctx, "keysBroadcast", "neighbours", [&] { return b.getKeysBroadcast().getNeighbours(); });
    case W::SHARE_KEYS: return list_limit(ctx, "shareKeys", "shares", [&] { return b.getShareKeys().getShares(); });
    case W::SHARES_DELIVERY:
      return list_limit(ctx, "sharesDelivery", "shares", [&] { return b.getSharesDelivery().getShares(); });
    case W::UNMASK_REQUEST:
      list_limit(ctx, "unmaskRequest", "survivors", [&] { return b.getUnmaskRequest().getSurvivors(); });
      list_limit(ctx, "unmaskRequest", "signatures", [&] { return b.getUnmaskRequest().getSignatures(); });
      return list_limit(ctx, "unmaskRequest", "dropped", [&] { return b.getUnmaskRequest().getDropped(); });
    case W::CONSISTENCY_CHECK:
      return list_limit(ctx, "consistencyCheck", "survivors", [&] { return b.getConsistencyCheck().getSurvivors(); });
    case W::UNMASK_RESPONSE:
      return list_limit(ctx, "unmaskResponse", "shares", [&] { return b.getUnmaskResponse().getShares(); });
    case W::MASKED_INPUT: {
      Field body(ctx, "maskedInput");
      Field f(ctx, "masked");
      const std::size_t n = b.getMaskedInput().getMasked().size() / sizeof(std::uint32_t);
      if (n > ctx.limits.max_vector_length)
        ctx.fail(ErrorCode::kTooLarge, num(n) + " elements, limit " + num(ctx.limits.max_vector_length));
      return;
    }
    default: return;
  }
}

// ---- one reader per message ----

Register read(Ctx& ctx, wire::Register::Reader r) {
  Register m;
  m.node_id = r.getNodeId();
  m.name = text(ctx, "name", [&] { return r.getName(); });
  m.public_key = key32(ctx, "publicKey", [&] { return r.getPublicKey(); });
  Field f(ctx, "capabilities");
  auto c = r.getCapabilities();
  m.capabilities.device_profile = text(ctx, "deviceProfile", [&] { return c.getDeviceProfile(); });
  m.capabilities.num_examples = c.getNumExamples();
  m.capabilities.model_name = text(ctx, "modelName", [&] { return c.getModelName(); });
  m.capabilities.threads = c.getThreads();
  m.capabilities.memory_bytes = c.getMemoryBytes();
  return m;
}

RegisterAck read(Ctx&, wire::RegisterAck::Reader r) {
  return {r.getNodeId(), r.getHeartbeatIntervalMs(), r.getGlobalVersion()};
}

Heartbeat read(Ctx& ctx, wire::Heartbeat::Reader r) {
  return {r.getUnixMs(), enum_value<NodeState>(ctx, "state", r.getState(), 5), r.getGlobalVersion()};
}

RoundPlan read(Ctx& ctx, wire::RoundPlan::Reader r) {
  RoundPlan m;
  m.global_version = r.getGlobalVersion();
  {
    Field f(ctx, "hyper");
    auto h = r.getHyper();
    m.hyper = {h.getLocalSteps(), h.getLearningRate(), h.getBatchSize(), h.getFedproxMu()};
    finite(ctx, "learningRate", m.hyper.learning_rate, 0, 1e6);
    finite(ctx, "fedproxMu", m.hyper.fedprox_mu, 0, 1e6);
  }
  {
    Field f(ctx, "deadlines");
    auto d = r.getDeadlines();
    m.deadlines = {d.getTrainMs(), d.getAdvertiseKeysMs(), d.getShareKeysMs(), d.getMaskedInputMs(), d.getUnmaskMs()};
  }
  m.secure = r.getSecure();
  m.selected = prims<std::uint32_t>(ctx, "selected", [&] { return r.getSelected(); });
  unique_ids(ctx, "selected", m.selected);
  m.update_length = r.getUpdateLength();
  require(ctx, m.update_length <= ctx.limits.max_vector_length, "updateLength",
          num(m.update_length) + " elements, limit " + num(ctx.limits.max_vector_length));
  if (m.secure) {
    require(ctx, r.hasSecagg(), "secagg", "a secure plan must carry its secure-aggregation settings");
    m.secagg = opaque(ctx, "secagg", [&] { return r.getSecagg(); });
  }
  {
    Field f(ctx, "dp");
    auto p = r.getDp();
    m.dp = {enum_value<DpMode>(ctx, "mode", p.getMode(), 3), p.getClipNorm(), p.getNoiseMultiplier()};
    finite(ctx, "clipNorm", m.dp.clip_norm, 0, 1e30);
    finite(ctx, "noiseMultiplier", m.dp.noise_multiplier, 0, 1e6);
  }
  m.example_scale = r.getExampleScale();
  m.loss_cap = r.getLossCap();
  finite(ctx, "lossCap", m.loss_cap, 0, 1e30);
  return m;
}

PlainUpdate read(Ctx& ctx, wire::PlainUpdate::Reader r) {
  PlainUpdate m;
  m.num_examples = r.getNumExamples();
  m.update = bulk<float>(ctx, "update", [&] { return r.getUpdate(); }, ctx.expect.update_length, "the round plan's updateLength");
  m.train_loss = r.getTrainLoss();
  return m;
}

std::uint64_t shape_elements(Ctx& ctx, const char* name, const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (auto s : shape) {
    require(ctx, s == 0 || n <= ctx.limits.max_vector_length / s, name, "element count overflows the vector limit");
    n *= s;
  }
  return n;
}

GlobalModel read(Ctx& ctx, wire::GlobalModel::Reader r) {
  GlobalModel m;
  m.version = r.getVersion();
  m.format = enum_value<ModelFormat>(ctx, "format", r.getFormat(), 2);
  {
    Field f(ctx, "layout");
    auto list = r.getLayout();
    check_length(ctx, list.size());
    for (auto t : list) m.layout.push_back({text(ctx, "name", [&] { return t.getName(); }), prims<std::uint64_t>(ctx, "shape", [&] { return t.getShape(); })});
  }
  m.data = bulk<std::uint8_t>(ctx, "data", [&] { return r.getData(); }, std::nullopt, "");
  if (m.format == ModelFormat::kFlatF32) {
    std::uint64_t total = 0;
    for (const auto& t : m.layout) {
      total += shape_elements(ctx, "layout", t.shape);
      require(ctx, total <= ctx.limits.max_vector_length, "layout", "element count over the vector limit");
    }
    require(ctx, m.data.size() == total * 4, "data",
            num(m.data.size()) + " bytes, but the layout's tensors need " + num(total * 4) + " bytes of float32");
  } else {
    require(ctx, m.data.size() >= 8, "data", "is too short for a safetensors file");
  }
  return m;
}

Metrics read(Ctx& ctx, wire::Metrics::Reader r) {
  Metrics m;
  Field f(ctx, "entries");
  auto list = r.getEntries();
  check_length(ctx, list.size());
  for (auto e : list) {
    m.entries.push_back({text(ctx, "name", [&] { return e.getName(); }), e.getValue()});
    require(ctx, !m.entries.back().name.empty(), "name", "is empty");
  }
  return m;
}

InferenceRequest read(Ctx& ctx, wire::InferenceRequest::Reader r) {
  InferenceRequest m{r.getRequestId(), text(ctx, "prompt", [&] { return r.getPrompt(); }), r.getMaxTokens(), r.getTemperature(),
                     r.getTopP(), r.getSeed(), enum_value<AdapterChoice>(ctx, "adapter", r.getAdapter(), 3),
                     r.getStream()};
  finite(ctx, "temperature", m.temperature, 0, 100);
  finite(ctx, "topP", m.top_p, 0, 1);
  return m;
}

InferenceResponse read(Ctx& ctx, wire::InferenceResponse::Reader r) {
  return {r.getRequestId(), text(ctx, "text", [&] { return r.getText(); }), r.getPromptTokens(), r.getCompletionTokens(),
          enum_value<FinishReason>(ctx, "finish", r.getFinish(), 4), r.getFellBackToLocal(),
          text(ctx, "note", [&] { return r.getNote(); })};
}

TokenChunk read(Ctx& ctx, wire::TokenChunk::Reader r) {
  return {r.getRequestId(), r.getIndex(), r.getTokenId(), text(ctx, "text", [&] { return r.getText(); }), r.getLast(),
          enum_value<FinishReason>(ctx, "finish", r.getFinish(), 4)};
}

HiddenStates read(Ctx& ctx, wire::HiddenStates::Reader r) {
  HiddenStates m;
  m.request_id = r.getRequestId();
  m.kind = enum_value<HiddenKind>(ctx, "kind", r.getKind(), 2);
  m.layer = r.getLayer();
  m.position = r.getPosition();
  m.shape = prims<std::uint64_t>(ctx, "shape", [&] { return r.getShape(); });
  require(ctx, !m.shape.empty() && m.shape.size() <= 8, "shape", num(m.shape.size()) + " dimensions, expected 1..8");
  m.data = bulk<float>(ctx, "data", [&] { return r.getData(); }, shape_elements(ctx, "shape", m.shape), "the shape");
  return m;
}

ErrorReply read(Ctx& ctx, wire::ErrorReply::Reader r) {
  return {enum_value<ErrorCode>(ctx, "code", r.getCode(), 13), text(ctx, "message", [&] { return r.getMessage(); }), r.getInReplyTo()};
}

// Which messages only the coordinator sends, and which only nodes send.
enum class From { kCoordinator, kNode, kAny };
From sender_role(std::size_t index) {
  switch (index) {
    case 1: case 3: case 5: case 7: case 9: case 12: case 19: return From::kCoordinator;
    case 0: case 2: case 4: case 6: case 8: case 10: case 11: case 20: return From::kNode;
    default: return From::kAny;
  }
}

template <class Get>
Body read_as(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  return read(ctx, get());
}

// The receiver's cap for this message type (the wire discriminant is the
// Body index), checked before any field is read.
void check_size_cap(Ctx& ctx, wire::Envelope::Body::Which which) {
  if (!ctx.expect.size_caps) return;
  const auto index = static_cast<std::size_t>(which);
  if (index >= ctx.expect.size_caps->bytes.size()) return;  // unknown types are refused by read_body
  const std::size_t cap = ctx.expect.size_caps->bytes[index];
  const std::size_t size = ctx.message_words * 8;
  if (cap != 0 && size > cap)
    ctx.fail(ErrorCode::kTooLarge, std::string("a ") + body_name(index) + " message of " + num(size) +
                                       " bytes is over this receiver's cap of " + num(cap) +
                                       " bytes for it (derived from the round plan; see federation/size_caps.h)");
}

Body read_body(Ctx& ctx, wire::Envelope::Body::Reader b) {
  using W = wire::Envelope::Body;
  check_size_cap(ctx, b.which());
  check_part_sizes(ctx, b);
  switch (b.which()) {
    case W::REGISTER: return read_as(ctx, "register", [&] { return b.getRegister(); });
    case W::REGISTER_ACK: return read_as(ctx, "registerAck", [&] { return b.getRegisterAck(); });
    case W::HEARTBEAT: return read_as(ctx, "heartbeat", [&] { return b.getHeartbeat(); });
    case W::ROUND_PLAN: return read_as(ctx, "roundPlan", [&] { return b.getRoundPlan(); });
    case W::ADVERTISE_KEYS: return AdvertiseKeysBody{opaque(ctx, "advertiseKeys", [&] { return b.getAdvertiseKeys(); })};
    case W::KEYS_BROADCAST: return KeysBroadcastBody{opaque(ctx, "keysBroadcast", [&] { return b.getKeysBroadcast(); })};
    case W::SHARE_KEYS: return ShareKeysBody{opaque(ctx, "shareKeys", [&] { return b.getShareKeys(); })};
    case W::SHARES_DELIVERY: return SharesDeliveryBody{opaque(ctx, "sharesDelivery", [&] { return b.getSharesDelivery(); })};
    case W::MASKED_INPUT: return MaskedInputBody{opaque(ctx, "maskedInput", [&] { return b.getMaskedInput(); })};
    case W::UNMASK_REQUEST: return UnmaskRequestBody{opaque(ctx, "unmaskRequest", [&] { return b.getUnmaskRequest(); })};
    case W::UNMASK_RESPONSE: return UnmaskResponseBody{opaque(ctx, "unmaskResponse", [&] { return b.getUnmaskResponse(); })};
    case W::PLAIN_UPDATE: return read_as(ctx, "plainUpdate", [&] { return b.getPlainUpdate(); });
    case W::GLOBAL_MODEL: return read_as(ctx, "globalModel", [&] { return b.getGlobalModel(); });
    case W::METRICS: return read_as(ctx, "metrics", [&] { return b.getMetrics(); });
    case W::INFERENCE_REQUEST: return read_as(ctx, "inferenceRequest", [&] { return b.getInferenceRequest(); });
    case W::INFERENCE_RESPONSE: return read_as(ctx, "inferenceResponse", [&] { return b.getInferenceResponse(); });
    case W::TOKEN_CHUNK: return read_as(ctx, "tokenChunk", [&] { return b.getTokenChunk(); });
    case W::HIDDEN_STATES: return read_as(ctx, "hiddenStates", [&] { return b.getHiddenStates(); });
    case W::ERROR: return read_as(ctx, "error", [&] { return b.getError(); });
    case W::CONSISTENCY_CHECK:
      return ConsistencyCheckBody{opaque(ctx, "consistencyCheck", [&] { return b.getConsistencyCheck(); })};
    case W::SURVIVOR_SIGNATURE:
      return SurvivorSignatureBody{opaque(ctx, "survivorSignature", [&] { return b.getSurvivorSignature(); })};
  }
  ctx.fail(ErrorCode::kUnsupported, "unknown message type " + num(static_cast<std::uint16_t>(b.which())) +
                                        " (this build knows 0.." + num(std::variant_size_v<Body> - 1) +
                                        "); is the peer a newer fedge?");
}

Envelope read_envelope(Ctx& ctx, wire::Envelope::Reader root) {
  Envelope env;
  env.version = root.getVersion();
  if (env.version != kProtocolVersion) {
    ctx.fail(ErrorCode::kBadVersion, "protocol version " + num(env.version) + ", this build speaks version " +
                                         num(kProtocolVersion) + "; run the same fedge release on both ends");
  }
  env.round = root.getRound();
  env.attempt = root.getAttempt();
  env.sender = root.getSender();
  if (ctx.expect.round && env.round != *ctx.expect.round) {
    ctx.fail(ErrorCode::kWrongRound, "round " + num(env.round) + ", expected round " + num(*ctx.expect.round));
  }
  env.body = read_body(ctx, root.getBody());
  const From role = sender_role(env.body.index());
  if (role == From::kCoordinator && env.sender != kCoordinatorId) {
    ctx.fail(ErrorCode::kMalformed, std::string(body_name(env.body)) + " comes only from the coordinator (sender 0), "
                                        "not from node " + num(env.sender));
  }
  if (role == From::kNode && env.sender == kCoordinatorId) {
    ctx.fail(ErrorCode::kMalformed, std::string(body_name(env.body)) + " comes only from a node (sender != 0)");
  }
  if (const auto* reg = std::get_if<Register>(&env.body); reg && reg->node_id != env.sender) {
    ctx.fail(ErrorCode::kMalformed, "register.nodeId " + num(reg->node_id) + " differs from sender " + num(env.sender));
  }
  return env;
}

}  // namespace

Bytes Bytes::copy_of(std::span<const std::uint8_t> bytes) {
  // Word storage, so the copy is 8-byte aligned and decodes without a second copy.
  auto words = std::make_shared<std::vector<std::uint64_t>>((bytes.size() + 7) / 8);
  if (!bytes.empty()) std::memcpy(words->data(), bytes.data(), bytes.size());
  return Bytes(words, reinterpret_cast<const std::uint8_t*>(words->data()), bytes.size());
}

Bytes Bytes::from_vector(std::vector<std::uint8_t> bytes) {
  auto storage = std::make_shared<std::vector<std::uint8_t>>(std::move(bytes));
  return Bytes(storage, storage->data(), storage->size());
}

const char* body_name(std::size_t index) {
  static const char* const names[] = {
      "register",     "registerAck",      "heartbeat",         "roundPlan",      "advertiseKeys",
      "keysBroadcast", "shareKeys",       "sharesDelivery",    "maskedInput",    "unmaskRequest",
      "unmaskResponse", "plainUpdate",    "globalModel",       "metrics",        "inferenceRequest",
      "inferenceResponse", "tokenChunk",  "hiddenStates",      "error",          "consistencyCheck",
      "survivorSignature"};
  static_assert(std::size(names) == std::variant_size_v<Body>);
  return index < std::size(names) ? names[index] : "unknown";
}

Envelope decode(const Bytes& bytes, const Limits& limits, const Expectations& expect, bool* zero_copy) {
  Ctx ctx{limits, expect, bytes.owner()};
  ctx.message_words = bytes.size() / 8;
  if (bytes.size() > limits.max_message_bytes) {
    ctx.fail(ErrorCode::kTooLarge, "message of " + num(bytes.size()) + " bytes is over the limit of " +
                                       num(limits.max_message_bytes) + " bytes (limits.max_message_bytes)");
  }
  if (bytes.size() == 0 || bytes.size() % 8 != 0) {
    ctx.fail(ErrorCode::kMalformed, "message of " + num(bytes.size()) +
                                        " bytes is not a whole, non-zero number of 8-byte words (truncated?)");
  }
  const std::uint8_t* data = bytes.data();
  const bool aligned = reinterpret_cast<std::uintptr_t>(data) % 8 == 0;
  if (!aligned) {
    Bytes copy = Bytes::copy_of(bytes.span());
    ctx.keep = copy.owner();
    data = copy.data();
  }
  if (zero_copy) *zero_copy = aligned;
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(data), bytes.size() / 8);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.traversal_words();
  options.nestingLimit = limits.nesting_limit;
  try {
    capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) {
      ctx.fail(ErrorCode::kMalformed, num((words.end() - reader.getEnd()) * 8) + " bytes after the end of the message");
    }
    return read_envelope(ctx, reader.getRoot<wire::Envelope>());
  } catch (const kj::Exception& e) {
    ctx.path.fail_from_capnp(e.getDescription().cStr());
  }
}

}  // namespace fedge::protocol
