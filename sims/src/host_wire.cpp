// HostMessage <-> one flat Cap'n Proto message (sims/schema/host.capnp).
// The encoder is a plain serialiser; decode_host_message() is where every
// field a peer controls is checked, and where every kj::Exception Cap'n Proto
// raises for malformed bytes is caught and turned into a DecodeError naming
// the field being read (as protocol/src/decode.cpp does for the node wire).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <type_traits>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "fedge/protocol/decode_path.h"
#include "fedge/sims/host_wire.h"
#include "host.capnp.h"

namespace fedge::sims {
namespace {

using protocol::Bytes;
using protocol::DecodeError;
using protocol::ErrorCode;

static_assert(wire::HOST_WIRE_VERSION == kHostWireVersion, "host_wire.h and host.capnp disagree on the version");

constexpr std::int32_t kMaxLevel = 6;  // scenario levels are 0..6

// ---- encoding ----

// Text with its length: a std::string may hold NUL bytes, and the C-string
// conversion would cut it at the first one.
capnp::Text::Reader text_of(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }

capnp::Data::Reader data_of(const Bytes& b) { return {b.data(), b.size()}; }

void write(wire::Delivery::Builder b, const Delivery& d) {
  b.setAtMs(d.at_ms);
  b.setNode(d.node);
  b.setSeq(d.seq);
  b.setEnvelope(data_of(d.envelope));
}

void write(capnp::List<wire::Delivery>::Builder list, const std::vector<Delivery>& ds) {
  for (std::size_t i = 0; i < ds.size(); ++i) write(list[i], ds[i]);
}

void write(wire::RoundDone::Builder b, const RoundDone& r) {
  b.setRound(r.round);
  b.setAtMs(r.at_ms);
  auto survivors = b.initSurvivors(r.survivors.size());
  for (std::size_t i = 0; i < r.survivors.size(); ++i) survivors.set(i, r.survivors[i]);
  auto global = b.initGlobal(r.global.size());
  for (std::size_t i = 0; i < r.global.size(); ++i) global.set(i, r.global[i]);
  b.setEvaluate(r.evaluate);
  b.setLast(r.last);
}

void write(wire::MetricsRow::Builder b, const MetricsRow& r) {
  b.setLevel(r.level);
  b.setRound(r.round);
  b.setNode(r.node);
  b.setPerplexity(r.perplexity);
  b.setHasAccuracy(r.accuracy.has_value());
  b.setAccuracy(r.accuracy.value_or(0.0));
  b.setParticipated(r.participated);
  b.setBytesUp(r.bytes_up);
  b.setBytesDown(r.bytes_down);
  b.setRawBytesLeft(r.raw_bytes_left);
  b.setNodeComputeS(r.node_compute_s);
  b.setNodeEnergyJ(r.node_energy_j);
  b.setSimTimeS(r.sim_time_s);
  b.setServing(r.serving);
  b.setTtftP50Ms(r.ttft_p50_ms);
  b.setTtftP95Ms(r.ttft_p95_ms);
  b.setTpotP50Ms(r.tpot_p50_ms);
  b.setTpotP95Ms(r.tpot_p95_ms);
  b.setOutageRequests(r.outage_requests);
  b.setOutageServed(r.outage_served);
  b.setGlobalPooledPerplexity(r.global_pooled_perplexity);
  b.setPersonalPerplexity(r.personal_perplexity);
  b.setPersonalPooledPerplexity(r.personal_pooled_perplexity);
}

void write(wire::HostMessage::Builder root, const HostHello& m) { root.initHostHello().setHostName(text_of(m.host_name)); }

void write(wire::HostMessage::Builder root, const HostAssign& m) {
  auto b = root.initHostAssign();
  b.setScenarioToml(text_of(m.scenario_toml));
  b.setScenarioSource(text_of(m.scenario_source));
  auto levels = b.initLevels(m.levels.size());
  for (std::size_t i = 0; i < m.levels.size(); ++i) levels.set(i, m.levels[i]);
  b.setFirstNode(m.first_node);
  b.setEndNode(m.end_node);
  b.setThreads(m.threads);
  b.setSeedIndex(m.seed_index);
}

void write(wire::HostMessage::Builder root, const HostReady& m) {
  auto r = root.initHostReady();
  r.setBaseDigest(text_of(m.base_digest));
  r.setSplitDigest(text_of(m.split_digest));
}

void write(wire::HostMessage::Builder root, const StartLevel& m) { root.initStartLevel().setLevel(m.level); }

void write(wire::HostMessage::Builder root, const WindowOrder& m) {
  auto b = root.initWindowOrder();
  b.setLevel(m.level);
  b.setUntilMs(m.until_ms);
  write(b.initDeliveries(m.deliveries.size()), m.deliveries);
  auto completed = b.initCompleted(m.completed.size());
  for (std::size_t i = 0; i < m.completed.size(); ++i) write(completed[i], m.completed[i]);
  b.setFinish(m.finish);
}

void write(wire::HostMessage::Builder root, const WindowReport& m) {
  auto b = root.initWindowReport();
  b.setLevel(m.level);
  write(b.initMessages(m.messages.size()), m.messages);
  b.setHasNextEvent(m.next_event_ms.has_value());
  b.setNextEventMs(m.next_event_ms.value_or(0));
  auto rows = b.initRows(m.rows.size());
  for (std::size_t i = 0; i < m.rows.size(); ++i) write(rows[i], m.rows[i]);
}

void write(wire::HostMessage::Builder root, const Shutdown& m) { root.initShutdown().setReason(text_of(m.reason)); }

void write(wire::HostMessage::Builder root, const HostError& m) { root.initHostError().setMessage(text_of(m.message)); }
void write(wire::HostMessage::Builder root, const Ping&) { root.initPing(); }

// Bytes the message will need (a slight over-estimate: each item's struct plus
// its payloads padded to words), so even a window of big envelopes is built in
// its first segment and leaves the encoder without a second copy.
std::size_t padded(std::size_t bytes) { return (bytes + 8) / 8 * 8; }  // + room for a text's NUL

std::size_t payload_bytes(const HostMessage& message) {
  auto deliveries = [](const std::vector<Delivery>& ds) {
    std::size_t n = 8;  // list tag
    for (const auto& d : ds) n += padded(d.envelope.size()) + 32;
    return n;
  };
  return std::visit(
      [&](const auto& m) -> std::size_t {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, WindowOrder>) {
          std::size_t n = deliveries(m.deliveries) + 8;
          for (const auto& r : m.completed) n += padded(4 * r.global.size()) + padded(4 * r.survivors.size()) + 48;
          return n;
        } else if constexpr (std::is_same_v<M, WindowReport>) {
          return deliveries(m.messages) + 8 + m.rows.size() * 136;
        } else if constexpr (std::is_same_v<M, HostAssign>) {
          return padded(m.scenario_toml.size()) + padded(m.scenario_source.size()) + padded(4 * m.levels.size());
        } else if constexpr (std::is_same_v<M, HostHello>) {
          return padded(m.host_name.size());
        } else if constexpr (std::is_same_v<M, HostReady>) {
          return padded(m.base_digest.size()) + padded(m.split_digest.size());
        } else if constexpr (std::is_same_v<M, Shutdown>) {
          return padded(m.reason.size());
        } else if constexpr (std::is_same_v<M, HostError>) {
          return padded(m.message.size());
        } else {
          return 0;
        }
      },
      message);
}

// Builds the message straight into a buffer laid out as the flat serialisation
// (one word of segment table, then segment 0), so a message that fits the size
// estimate needs no final copy: a window of big envelopes is copied once, not
// twice. A message that outgrows it gets more segments and the usual flat copy.
class FlatBuilder final : public capnp::MessageBuilder {
 public:
  explicit FlatBuilder(std::size_t first_words)
      : storage_(std::make_shared<std::vector<std::uint64_t>>(std::min(first_words, kMaxSegmentWords) + 1)) {}

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned minimum_words) override {
    if (!first_given_) {
      first_given_ = true;
      if (minimum_words <= storage_->size() - 1) {
        allocated_ += storage_->size() - 1;
        return {first_segment(), storage_->size() - 1};
      }
    }
    // Later segments grow with the message, as capnp's own heuristic does.
    const std::size_t words = std::max<std::size_t>(minimum_words, std::min(allocated_, kMaxSegmentWords));
    auto segment = kj::heapArray<capnp::word>(words);
    std::memset(segment.begin(), 0, words * sizeof(capnp::word));
    allocated_ += words;
    extra_.push_back(std::move(segment));
    return extra_.back();
  }

  Bytes finish() {
    auto segments = getSegmentsForOutput();
    if (segments.size() == 1 && segments[0].begin() == first_segment()) {
      // Segment table of a one-segment message: (segment count - 1, segment 0's words).
      const std::uint32_t table[2] = {0, static_cast<std::uint32_t>(segments[0].size())};
      std::memcpy(storage_->data(), table, sizeof table);
      return Bytes::adopt(storage_, reinterpret_cast<const std::uint8_t*>(storage_->data()),
                          (segments[0].size() + 1) * sizeof(capnp::word));
    }
    auto flat = std::make_shared<kj::Array<capnp::word>>(capnp::messageToFlatArray(segments));
    auto bytes = flat->asBytes();
    return Bytes::adopt(flat, bytes.begin(), bytes.size());
  }

 private:
  static constexpr std::size_t kMaxSegmentWords = std::size_t{1} << 28;  // capnp allows 2^29 - 1

  capnp::word* first_segment() { return reinterpret_cast<capnp::word*>(storage_->data() + 1); }

  std::shared_ptr<std::vector<std::uint64_t>> storage_;  // zeroed, as capnp requires of a new segment
  bool first_given_ = false;
  std::size_t allocated_ = 0;
  std::vector<kj::Array<capnp::word>> extra_;
};

// ---- decoding ----

std::string num(std::uint64_t v) { return std::to_string(v); }
std::string num(std::int64_t v) { return std::to_string(v); }
std::string num(std::int32_t v) { return std::to_string(v); }
std::string num(double v) { return std::to_string(v); }

// What is being read, and the receiver's limits.
struct Ctx {
  const HostWireLimits& limits;
  std::shared_ptr<const void> keep;  // storage the message's bytes live in (null: copy payloads)
  protocol::DecodePath path{"host", "message"};

  [[noreturn]] void fail(ErrorCode code, const std::string& what) const { path.fail(code, what); }
};

class Field : public protocol::FieldGuard {
 public:
  Field(Ctx& ctx, std::string name) : FieldGuard(ctx.path, std::move(name)) {}
};

using protocol::index_name;

void require(Ctx& ctx, bool ok, const char* name, const std::string& what) {
  if (ok) return;
  Field f(ctx, name);
  ctx.fail(ErrorCode::kMalformed, what);
}

void check_length(Ctx& ctx, std::size_t n) {
  if (n > ctx.limits.max_list_length) {
    ctx.fail(ErrorCode::kTooLarge, num(std::uint64_t{n}) + " entries, limit " + num(std::uint64_t{ctx.limits.max_list_length}));
  }
}

template <class Get>
std::string text(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  capnp::Text::Reader t = get();
  if (t.size() > ctx.limits.max_text_bytes) {
    ctx.fail(ErrorCode::kTooLarge, num(std::uint64_t{t.size()}) + " bytes of text, limit " +
                                       num(std::uint64_t{ctx.limits.max_text_bytes}));
  }
  return {t.begin(), t.size()};
}

void level(Ctx& ctx, const char* name, std::int32_t v) {
  require(ctx, v >= 0 && v <= kMaxLevel, name, "level " + num(v) + " is outside 0.." + num(kMaxLevel));
}

void node_index(Ctx& ctx, const char* name, std::uint64_t v) {
  require(ctx, v < ctx.limits.max_nodes, name,
          "node index " + num(v) + " is not below the node limit " + num(std::uint64_t{ctx.limits.max_nodes}));
}

void time_ms(Ctx& ctx, const char* name, std::int64_t v) {
  require(ctx, v >= 0, name, "simulated time " + num(v) + " ms is negative");
}

// A finite value >= 0 (simulated seconds, joules, milliseconds).
void non_negative(Ctx& ctx, const char* name, double v) {
  require(ctx, std::isfinite(v) && v >= 0, name, "value " + num(v) + " is not a finite number >= 0");
}

// Cap'n Proto's list iterators are not standard iterators; copy by index.
template <class T>
std::vector<T> to_vector(typename capnp::List<T>::Reader list) {
  std::vector<T> out(list.size());
  for (unsigned i = 0; i < list.size(); ++i) out[i] = list[i];
  return out;
}

// Lists of structs: each element read under its index, so errors say "rows[7]".
template <class T, class List, class Read>
std::vector<T> items(Ctx& ctx, const char* name, List list, Read read_one) {
  Field f(ctx, name);
  check_length(ctx, list.size());
  std::vector<T> out;
  out.reserve(list.size());
  for (unsigned i = 0; i < list.size(); ++i) {
    Field item(ctx, index_name(i));
    out.push_back(read_one(list[i]));
  }
  return out;
}

// The envelope shares the received message's storage when it can (no copy of
// a window's masked inputs); the decoded Delivery keeps that storage alive.
Bytes envelope(Ctx& ctx, capnp::Data::Reader data) {
  Field f(ctx, "envelope");
  if (data.size() > ctx.limits.max_envelope_bytes) {
    ctx.fail(ErrorCode::kTooLarge, num(std::uint64_t{data.size()}) + " bytes, limit " +
                                       num(std::uint64_t{ctx.limits.max_envelope_bytes}));
  }
  if (data.size() == 0) ctx.fail(ErrorCode::kMalformed, "is empty; a delivery carries one encoded protocol envelope");
  if (ctx.keep) return Bytes::adopt(ctx.keep, data.begin(), data.size());
  return Bytes::copy_of({data.begin(), data.size()});
}

Delivery read(Ctx& ctx, wire::Delivery::Reader r) {
  Delivery d;
  d.at_ms = r.getAtMs();
  time_ms(ctx, "atMs", d.at_ms);
  d.node = r.getNode();
  node_index(ctx, "node", d.node);
  d.seq = r.getSeq();
  d.envelope = envelope(ctx, r.getEnvelope());
  return d;
}

std::vector<Delivery> deliveries(Ctx& ctx, const char* name, capnp::List<wire::Delivery>::Reader list) {
  return items<Delivery>(ctx, name, list, [&](wire::Delivery::Reader r) { return read(ctx, r); });
}

std::vector<std::uint32_t> survivors(Ctx& ctx, capnp::List<std::uint32_t>::Reader list) {
  Field f(ctx, "survivors");
  check_length(ctx, list.size());
  auto out = to_vector<std::uint32_t>(list);
  for (std::size_t i = 0; i < out.size(); ++i) node_index(ctx, index_name(i).c_str(), out[i]);
  auto sorted = out;
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) ctx.fail(ErrorCode::kMalformed, "node " + num(std::uint64_t{*dup}) + " appears twice");
  return out;
}

std::vector<float> floats(Ctx& ctx, const char* name, capnp::List<float>::Reader list) {
  Field f(ctx, name);
  if (list.size() > ctx.limits.max_vector_length) {
    ctx.fail(ErrorCode::kTooLarge, num(std::uint64_t{list.size()}) + " elements, limit " +
                                       num(std::uint64_t{ctx.limits.max_vector_length}));
  }
  auto out = to_vector<float>(list);
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) ctx.fail(ErrorCode::kMalformed, "element " + num(std::uint64_t{i}) + " is " + num(double{out[i]}));
  }
  return out;
}

RoundDone read(Ctx& ctx, wire::RoundDone::Reader r) {
  RoundDone m;
  m.round = r.getRound();
  m.at_ms = r.getAtMs();
  time_ms(ctx, "atMs", m.at_ms);
  m.survivors = survivors(ctx, r.getSurvivors());
  m.global = floats(ctx, "global", r.getGlobal());
  m.evaluate = r.getEvaluate();
  m.last = r.getLast();
  return m;
}

void check_serving(Ctx& ctx, const MetricsRow& m) {
  non_negative(ctx, "ttftP50Ms", m.ttft_p50_ms);
  non_negative(ctx, "ttftP95Ms", m.ttft_p95_ms);
  non_negative(ctx, "tpotP50Ms", m.tpot_p50_ms);
  non_negative(ctx, "tpotP95Ms", m.tpot_p95_ms);
  require(ctx, m.outage_requests >= 0, "outageRequests", num(m.outage_requests) + " is negative");
  require(ctx, m.outage_served >= 0 && m.outage_served <= m.outage_requests, "outageServed",
          num(m.outage_served) + " is outside 0..outageRequests (" + num(m.outage_requests) + ")");
}

MetricsRow read(Ctx& ctx, wire::MetricsRow::Reader r) {
  MetricsRow m;
  m.level = r.getLevel();
  level(ctx, "level", m.level);
  m.round = r.getRound();
  require(ctx, m.round >= 0, "round", num(m.round) + " is negative");
  m.node = r.getNode();
  require(ctx, m.node >= 0, "node", num(m.node) + " is negative");
  node_index(ctx, "node", static_cast<std::uint64_t>(m.node));
  m.perplexity = r.getPerplexity();
  // NaN: the round was not evaluated; +inf: a model whose loss overflowed.
  require(ctx, std::isnan(m.perplexity) || m.perplexity >= 0, "perplexity", num(m.perplexity) + " is negative");
  if (r.getHasAccuracy()) {
    m.accuracy = r.getAccuracy();
    require(ctx, std::isfinite(*m.accuracy) && *m.accuracy >= 0 && *m.accuracy <= 1, "accuracy",
            num(*m.accuracy) + " is outside [0, 1]");
  }
  m.participated = r.getParticipated();
  m.bytes_up = r.getBytesUp();
  m.bytes_down = r.getBytesDown();
  m.raw_bytes_left = r.getRawBytesLeft();
  m.node_compute_s = r.getNodeComputeS();
  non_negative(ctx, "nodeComputeS", m.node_compute_s);
  m.node_energy_j = r.getNodeEnergyJ();
  non_negative(ctx, "nodeEnergyJ", m.node_energy_j);
  m.sim_time_s = r.getSimTimeS();
  non_negative(ctx, "simTimeS", m.sim_time_s);
  m.serving = r.getServing();
  m.ttft_p50_ms = r.getTtftP50Ms();
  m.ttft_p95_ms = r.getTtftP95Ms();
  m.tpot_p50_ms = r.getTpotP50Ms();
  m.tpot_p95_ms = r.getTpotP95Ms();
  m.outage_requests = r.getOutageRequests();
  m.outage_served = r.getOutageServed();
  check_serving(ctx, m);
  m.global_pooled_perplexity = r.getGlobalPooledPerplexity();
  m.personal_perplexity = r.getPersonalPerplexity();
  m.personal_pooled_perplexity = r.getPersonalPooledPerplexity();
  for (auto [field, value] : {std::pair{"globalPooledPerplexity", m.global_pooled_perplexity},
                              std::pair{"personalPerplexity", m.personal_perplexity},
                              std::pair{"personalPooledPerplexity", m.personal_pooled_perplexity}}) {
    require(ctx, std::isnan(value) || value >= 0, field, num(value) + " is negative (NaN: not measured)");
  }
  return m;
}

HostHello read(Ctx& ctx, wire::HostHello::Reader r) { return {text(ctx, "hostName", [&] { return r.getHostName(); })}; }

HostAssign read(Ctx& ctx, wire::HostAssign::Reader r) {
  HostAssign m;
  m.scenario_toml = text(ctx, "scenarioToml", [&] { return r.getScenarioToml(); });
  m.scenario_source = text(ctx, "scenarioSource", [&] { return r.getScenarioSource(); });
  {
    Field f(ctx, "levels");
    auto list = r.getLevels();
    check_length(ctx, list.size());
    m.levels = to_vector<std::int32_t>(list);
    for (std::size_t i = 0; i < m.levels.size(); ++i) level(ctx, index_name(i).c_str(), m.levels[i]);
  }
  m.first_node = r.getFirstNode();
  m.end_node = r.getEndNode();
  require(ctx, m.end_node <= ctx.limits.max_nodes, "endNode",
          num(std::uint64_t{m.end_node}) + " is over the node limit " + num(std::uint64_t{ctx.limits.max_nodes}));
  require(ctx, m.first_node <= m.end_node, "firstNode",
          num(std::uint64_t{m.first_node}) + " is after endNode " + num(std::uint64_t{m.end_node}));
  m.threads = r.getThreads();
  require(ctx, m.threads >= 0, "threads", num(m.threads) + " is negative (0: the default)");
  m.seed_index = r.getSeedIndex();
  require(ctx, m.seed_index < ctx.limits.max_seeds, "seedIndex",
          num(std::uint64_t{m.seed_index}) + " is not below the seed limit " + num(std::uint64_t{ctx.limits.max_seeds}));
  return m;
}

HostReady read(Ctx& ctx, wire::HostReady::Reader r) {
  return {text(ctx, "baseDigest", [&] { return r.getBaseDigest(); }),
          text(ctx, "splitDigest", [&] { return r.getSplitDigest(); })};
}

StartLevel read(Ctx& ctx, wire::StartLevel::Reader r) {
  StartLevel m{r.getLevel()};
  level(ctx, "level", m.level);
  return m;
}

WindowOrder read(Ctx& ctx, wire::WindowOrder::Reader r) {
  WindowOrder m;
  m.level = r.getLevel();
  level(ctx, "level", m.level);
  m.until_ms = r.getUntilMs();
  time_ms(ctx, "untilMs", m.until_ms);
  m.deliveries = deliveries(ctx, "deliveries", r.getDeliveries());
  m.completed = items<RoundDone>(ctx, "completed", r.getCompleted(), [&](wire::RoundDone::Reader d) { return read(ctx, d); });
  m.finish = r.getFinish();
  return m;
}

WindowReport read(Ctx& ctx, wire::WindowReport::Reader r) {
  WindowReport m;
  m.level = r.getLevel();
  level(ctx, "level", m.level);
  m.messages = deliveries(ctx, "messages", r.getMessages());
  if (r.getHasNextEvent()) {
    m.next_event_ms = r.getNextEventMs();
    time_ms(ctx, "nextEventMs", *m.next_event_ms);
  }
  m.rows = items<MetricsRow>(ctx, "rows", r.getRows(), [&](wire::MetricsRow::Reader row) { return read(ctx, row); });
  return m;
}

Shutdown read(Ctx& ctx, wire::Shutdown::Reader r) { return {text(ctx, "reason", [&] { return r.getReason(); })}; }

HostError read(Ctx& ctx, wire::HostError::Reader r) { return {text(ctx, "message", [&] { return r.getMessage(); })}; }
Ping read(Ctx&, wire::Ping::Reader) { return {}; }

template <class Get>
HostMessage read_as(Ctx& ctx, const char* name, Get get) {
  Field f(ctx, name);
  return read(ctx, get());
}

HostMessage read_message(Ctx& ctx, wire::HostMessage::Reader root) {
  const std::uint32_t version = root.getVersion();
  if (version != kHostWireVersion) {
    ctx.fail(ErrorCode::kBadVersion, "host wire version " + num(std::uint64_t{version}) + ", this build speaks version " +
                                         num(std::uint64_t{kHostWireVersion}) + "; run the same fedge release on every host");
  }
  using W = wire::HostMessage;
  switch (root.which()) {
    case W::UNSET: break;
    case W::HOST_HELLO: return read_as(ctx, "hostHello", [&] { return root.getHostHello(); });
    case W::HOST_ASSIGN: return read_as(ctx, "hostAssign", [&] { return root.getHostAssign(); });
    case W::HOST_READY: return read_as(ctx, "hostReady", [&] { return root.getHostReady(); });
    case W::START_LEVEL: return read_as(ctx, "startLevel", [&] { return root.getStartLevel(); });
    case W::WINDOW_ORDER: return read_as(ctx, "windowOrder", [&] { return root.getWindowOrder(); });
    case W::WINDOW_REPORT: return read_as(ctx, "windowReport", [&] { return root.getWindowReport(); });
    case W::SHUTDOWN: return read_as(ctx, "shutdown", [&] { return root.getShutdown(); });
    case W::HOST_ERROR: return read_as(ctx, "hostError", [&] { return root.getHostError(); });
    case W::PING: return read_as(ctx, "ping", [&] { return root.getPing(); });
  }
  ctx.fail(ErrorCode::kMalformed, "message kind " + num(std::uint64_t{static_cast<std::uint16_t>(root.which())}) +
                                      " is unset or unknown (this build knows 1.." +
                                      num(std::uint64_t{std::variant_size_v<HostMessage>}) + ")");
}

}  // namespace

Bytes encode_host_message(const HostMessage& message) {
  FlatBuilder builder(payload_bytes(message) / 8 + 64);  // + root, struct headers
  auto root = builder.initRoot<wire::HostMessage>();
  root.setVersion(kHostWireVersion);
  try {
    std::visit([&](const auto& m) { write(root, m); }, message);
  } catch (const kj::Exception& e) {
    throw Error(ErrorKind::kInvalidInput, std::string("host: cannot encode ") + host_message_name(message) + ": " +
                                              e.getDescription().cStr());
  }
  return builder.finish();
}

HostMessage decode_host_message(const Bytes& bytes, const HostWireLimits& limits) {
  Ctx ctx{limits, bytes.owner()};
  if (bytes.size() > limits.max_message_bytes) {
    ctx.fail(ErrorCode::kTooLarge, num(std::uint64_t{bytes.size()}) + " bytes, over the limit of " +
                                       num(std::uint64_t{limits.max_message_bytes}) + " bytes (max_message_bytes)");
  }
  if (bytes.size() == 0 || bytes.size() % 8 != 0) {
    ctx.fail(ErrorCode::kMalformed, num(std::uint64_t{bytes.size()}) +
                                        " bytes is not a whole, non-zero number of 8-byte words (truncated?)");
  }
  const std::uint8_t* data = bytes.data();
  if (reinterpret_cast<std::uintptr_t>(data) % 8 != 0) {
    Bytes copy = Bytes::copy_of(bytes.span());
    ctx.keep = copy.owner();
    data = copy.data();
  }
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(data), bytes.size() / 8);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.max_message_bytes / 8 + 1024;
  options.nestingLimit = 8;  // the schema nests 4 deep (message, window, list, round)
  try {
    capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) {
      ctx.fail(ErrorCode::kMalformed,
               num(std::uint64_t(words.end() - reader.getEnd()) * 8) + " bytes after the end of the message");
    }
    return read_message(ctx, reader.getRoot<wire::HostMessage>());
  } catch (const kj::Exception& e) {
    ctx.path.fail_from_capnp(e.getDescription().cStr());
  }
}

const char* host_message_name(const HostMessage& message) {
  static const char* const names[] = {"HostHello",   "HostAssign",   "HostReady", "StartLevel",
                                      "WindowOrder", "WindowReport", "Shutdown",  "HostError", "Ping"};
  static_assert(std::size(names) == std::variant_size_v<HostMessage>);
  return message.index() < std::size(names) ? names[message.index()] : "unknown";
}

}  // namespace fedge::sims
