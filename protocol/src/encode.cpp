// Envelope -> one flat Cap'n Proto message. The encoder is a plain serialiser:
// it writes what it is given (tests rely on that to build bad messages); the
// receiver's decode() is where values are checked.
#include <bit>
#include <cstring>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "fedge.capnp.h"
#include "fedge/protocol/codec.h"
#include "fedge/protocol/opaque.h"

namespace fedge::protocol {
namespace {

// Text with its length: a std::string may hold NUL bytes (a model can emit
// them), and the C-string conversion would cut the text at the first one.
capnp::Text::Reader text(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }


static_assert(std::endian::native == std::endian::little, "bulk payloads are sent as host little-endian");
static_assert(wire::PROTOCOL_VERSION == kProtocolVersion, "messages.h and fedge.capnp disagree on the version");

constexpr std::size_t kMaxBlobBytes = (std::size_t{1} << 29) - 1;  // Cap'n Proto's largest Data

capnp::Data::Reader data_of(const void* p, std::size_t n) {
  return {static_cast<const capnp::byte*>(p), n};
}
capnp::Data::Reader key_of(const Key32& k) { return data_of(k.data(), k.size()); }

template <class T>
void set_u32_list(typename capnp::List<T>::Builder list, const std::vector<T>& values) {
  for (std::size_t i = 0; i < values.size(); ++i) list.set(i, values[i]);
}

class Writer {
 public:
  explicit Writer(capnp::MessageBuilder& message) : orphanage_(message.getOrphanage()) {}

  // Bulk bytes: referenced in place (no copy) when word-aligned and a whole
  // number of words, which capnp requires of an external segment; else copied.
  capnp::Orphan<capnp::Data> bulk(const void* p, std::size_t bytes, const char* field) const {
    if (bytes > kMaxBlobBytes) {
      throw Error(ErrorKind::kInvalidInput, std::string("protocol: ") + field + " has " + std::to_string(bytes) +
                                                " bytes; one message field carries at most 512 MiB - 1");
    }
    if (bytes > 0 && reinterpret_cast<std::uintptr_t>(p) % 8 == 0 && bytes % 8 == 0) {
      return orphanage_.referenceExternalData(data_of(p, bytes));
    }
    auto orphan = orphanage_.newOrphan<capnp::Data>(bytes);
    if (bytes > 0) std::memcpy(orphan.get().begin(), p, bytes);
    return orphan;
  }

  void body(wire::Envelope::Body::Builder b, const Register& m) const {
    auto r = b.initRegister();
    r.setNodeId(m.node_id);
    r.setName(text(m.name));
    r.setPublicKey(key_of(m.public_key));
    auto c = r.initCapabilities();
    c.setDeviceProfile(text(m.capabilities.device_profile));
    c.setNumExamples(m.capabilities.num_examples);
    c.setModelName(text(m.capabilities.model_name));
    c.setThreads(m.capabilities.threads);
    c.setMemoryBytes(m.capabilities.memory_bytes);
  }
  void body(wire::Envelope::Body::Builder b, const RegisterAck& m) const {
    auto r = b.initRegisterAck();
    r.setNodeId(m.node_id);
    r.setHeartbeatIntervalMs(m.heartbeat_interval_ms);
    r.setGlobalVersion(m.global_version);
  }
  void body(wire::Envelope::Body::Builder b, const Heartbeat& m) const {
    auto r = b.initHeartbeat();
    r.setUnixMs(m.unix_ms);
    r.setState(static_cast<wire::NodeState>(m.state));
    r.setGlobalVersion(m.global_version);
  }
  void body(wire::Envelope::Body::Builder b, const RoundPlan& m) const {
    auto r = b.initRoundPlan();
    r.setGlobalVersion(m.global_version);
    auto h = r.initHyper();
    h.setLocalSteps(m.hyper.local_steps);
    h.setLearningRate(m.hyper.learning_rate);
    h.setBatchSize(m.hyper.batch_size);
    h.setFedproxMu(m.hyper.fedprox_mu);
    auto d = r.initDeadlines();
    d.setTrainMs(m.deadlines.train_ms);
    d.setAdvertiseKeysMs(m.deadlines.advertise_keys_ms);
    d.setShareKeysMs(m.deadlines.share_keys_ms);
    d.setMaskedInputMs(m.deadlines.masked_input_ms);
    d.setUnmaskMs(m.deadlines.unmask_ms);
    r.setSecure(m.secure);
    // A plain plan carries the settings struct too, at its defaults.
    copy_part<wire::SecAggParams>(m.secagg, [&](auto s) { r.setSecagg(s); });
    auto p = r.initDp();
    p.setMode(static_cast<wire::DpMode>(m.dp.mode));
    p.setClipNorm(m.dp.clip_norm);
    p.setNoiseMultiplier(m.dp.noise_multiplier);
    set_u32_list<std::uint32_t>(r.initSelected(m.selected.size()), m.selected);
    r.setUpdateLength(m.update_length);
    r.setExampleScale(m.example_scale);
    r.setLossCap(m.loss_cap);
  }
  // A secure-aggregation body: its part is copied in as it is (an absent part
  // is sent as the schema struct's defaults).
  template <SecAggStep S>
  void body(wire::Envelope::Body::Builder b, const SecAggBody<S>& m) const {
    using Step = SecAggStep;
    if constexpr (S == Step::kAdvertiseKeys) copy_part<wire::AdvertiseKeys>(m.part, [&](auto r) { b.setAdvertiseKeys(r); });
    if constexpr (S == Step::kKeysBroadcast) copy_part<wire::KeysBroadcast>(m.part, [&](auto r) { b.setKeysBroadcast(r); });
    if constexpr (S == Step::kShareKeys) copy_part<wire::ShareKeys>(m.part, [&](auto r) { b.setShareKeys(r); });
    if constexpr (S == Step::kSharesDelivery) copy_part<wire::SharesDelivery>(m.part, [&](auto r) { b.setSharesDelivery(r); });
    if constexpr (S == Step::kMaskedInput) masked_input(b, m.part);
    if constexpr (S == Step::kUnmaskRequest) copy_part<wire::UnmaskRequest>(m.part, [&](auto r) { b.setUnmaskRequest(r); });
    if constexpr (S == Step::kUnmaskResponse) copy_part<wire::UnmaskResponse>(m.part, [&](auto r) { b.setUnmaskResponse(r); });
    if constexpr (S == Step::kConsistencyCheck)
      copy_part<wire::ConsistencyCheck>(m.part, [&](auto r) { b.setConsistencyCheck(r); });
    if constexpr (S == Step::kSurvivorSignature)
      copy_part<wire::SurvivorSignature>(m.part, [&](auto r) { b.setSurvivorSignature(r); });
  }
  void body(wire::Envelope::Body::Builder b, const PlainUpdate& m) const {
    auto r = b.initPlainUpdate();
    r.setNumExamples(m.num_examples);
    r.adoptUpdate(bulk(m.update.data(), m.update.size() * 4, "plainUpdate.update"));
    r.setTrainLoss(m.train_loss);
  }
  void body(wire::Envelope::Body::Builder b, const GlobalModel& m) const {
    auto r = b.initGlobalModel();
    r.setVersion(m.version);
    r.setFormat(static_cast<wire::ModelFormat>(m.format));
    r.adoptData(bulk(m.data.data(), m.data.size(), "globalModel.data"));
    auto list = r.initLayout(m.layout.size());
    for (std::size_t i = 0; i < m.layout.size(); ++i) {
      list[i].setName(text(m.layout[i].name));
      set_u32_list<std::uint64_t>(list[i].initShape(m.layout[i].shape.size()), m.layout[i].shape);
    }
  }
  void body(wire::Envelope::Body::Builder b, const Metrics& m) const {
    auto list = b.initMetrics().initEntries(m.entries.size());
    for (std::size_t i = 0; i < m.entries.size(); ++i) {
      list[i].setName(text(m.entries[i].name));
      list[i].setValue(m.entries[i].value);
    }
  }
  void body(wire::Envelope::Body::Builder b, const InferenceRequest& m) const {
    auto r = b.initInferenceRequest();
    r.setRequestId(m.request_id);
    r.setPrompt(text(m.prompt));
    r.setMaxTokens(m.max_tokens);
    r.setTemperature(m.temperature);
    r.setTopP(m.top_p);
    r.setSeed(m.seed);
    r.setAdapter(static_cast<wire::AdapterChoice>(m.adapter));
    r.setStream(m.stream);
  }
  void body(wire::Envelope::Body::Builder b, const InferenceResponse& m) const {
    auto r = b.initInferenceResponse();
    r.setRequestId(m.request_id);
    r.setText(text(m.text));
    r.setPromptTokens(m.prompt_tokens);
    r.setCompletionTokens(m.completion_tokens);
    r.setFinish(static_cast<wire::FinishReason>(m.finish));
    r.setFellBackToLocal(m.fell_back_to_local);
    r.setNote(text(m.note));
  }
  void body(wire::Envelope::Body::Builder b, const TokenChunk& m) const {
    auto r = b.initTokenChunk();
    r.setRequestId(m.request_id);
    r.setIndex(m.index);
    r.setTokenId(m.token_id);
    r.setText(text(m.text));
    r.setLast(m.last);
    r.setFinish(static_cast<wire::FinishReason>(m.finish));
  }
  void body(wire::Envelope::Body::Builder b, const HiddenStates& m) const {
    auto r = b.initHiddenStates();
    r.setRequestId(m.request_id);
    r.setKind(static_cast<wire::HiddenKind>(m.kind));
    r.setLayer(m.layer);
    r.setPosition(m.position);
    set_u32_list<std::uint64_t>(r.initShape(m.shape.size()), m.shape);
    r.adoptData(bulk(m.data.data(), m.data.size() * 4, "hiddenStates.data"));
  }
  void body(wire::Envelope::Body::Builder b, const ErrorReply& m) const {
    auto r = b.initError();
    r.setCode(static_cast<wire::ErrorCode>(m.code));
    r.setMessage(text(m.message));
    r.setInReplyTo(m.in_reply_to);
  }

 private:
  // A masked input's vector is referenced in place, as every bulk payload is
  // (no copy until the final flat one), so it travels exactly as the struct
  // written in place would.
  void masked_input(wire::Envelope::Body::Builder b, const OpaquePart& part) const {
    auto out = b.initMaskedInput();
    if (part.empty()) return;
    PartReader reader(part);
    const auto in = reader.root<wire::MaskedInput>();
    out.setSender(in.getSender());
    const auto masked = in.getMasked();
    out.adoptMasked(bulk(masked.begin(), masked.size(), "maskedInput.masked"));
  }

  // Hands set() the schema struct a part holds (an absent part: its defaults,
  // written at the schema's full size as init would).
  template <class Schema, class Set>
  static void copy_part(const OpaquePart& part, Set set) {
    if (part.empty()) {
      capnp::MallocMessageBuilder defaults(capnp::sizeInWords<Schema>() + 1);
      return set(defaults.initRoot<Schema>().asReader());
    }
    PartReader reader(part);
    set(reader.root<Schema>());
  }

  capnp::Orphanage orphanage_;
};

// Words the first segment needs when bulk payloads are copied into it; an
// exact-enough hint keeps a small message in one segment.
std::size_t first_segment_words(const Body& body) {
  std::size_t bytes = std::visit(
      [](const auto& m) -> std::size_t {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, MaskedInputBody>) return m.part.words.size() * 8;
        if constexpr (std::is_same_v<M, PlainUpdate>) return m.update.size() * 4;
        if constexpr (std::is_same_v<M, GlobalModel>) return m.data.size();
        if constexpr (std::is_same_v<M, HiddenStates>) return m.data.size() * 4;
        return 0;
      },
      body);
  return std::min<std::size_t>(bytes / 8 + 1024, std::size_t{1} << 26);
}

}  // namespace

Bytes encode(const Envelope& envelope) {
  capnp::MallocMessageBuilder message(static_cast<unsigned>(first_segment_words(envelope.body)));
  auto root = message.initRoot<wire::Envelope>();
  root.setVersion(envelope.version);
  root.setRound(envelope.round);
  root.setAttempt(envelope.attempt);
  root.setSender(envelope.sender);
  Writer writer(message);
  try {
    std::visit([&](const auto& m) { writer.body(root.getBody(), m); }, envelope.body);
  } catch (const kj::Exception& e) {
    throw Error(ErrorKind::kInvalidInput, std::string("protocol: cannot encode ") + body_name(envelope.body) +
                                              ": " + e.getDescription().cStr());
  }
  auto flat = std::make_shared<kj::Array<capnp::word>>(capnp::messageToFlatArray(message));
  auto bytes = flat->asBytes();
  return Bytes::adopt(flat, bytes.begin(), bytes.size());
}

}  // namespace fedge::protocol
