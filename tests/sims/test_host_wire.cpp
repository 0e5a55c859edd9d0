// The node-host wire: every message kind round-trips exactly, and hostile or
// broken bytes are refused with a DecodeError that names the field, never a crash.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fedge/protocol/codec.h"
#include "fedge/sims/host_wire.h"

using namespace fedge::sims;
using fedge::protocol::Bytes;
using fedge::protocol::DecodeError;
using fedge::protocol::ErrorCode;
using Catch::Matchers::Contains;

namespace {

// A real protocol message, as a node would send it.
fedge::protocol::Envelope plain_update(std::uint32_t sender, std::uint64_t round, std::vector<float> update) {
  fedge::protocol::Envelope env;
  env.round = round;
  env.sender = sender;
  fedge::protocol::PlainUpdate u;
  u.num_examples = 17 + sender;
  u.update = fedge::protocol::Payload<float>::own(std::move(update));
  u.train_loss = 1.25f;
  env.body = std::move(u);
  return env;
}

Delivery delivery(std::int64_t at_ms, std::uint32_t node, std::uint64_t seq) {
  // Protocol node ids start at 1 (0 is the coordinator).
  return {at_ms, node, seq, fedge::protocol::encode(plain_update(node + 1, 3, {1.5f, -2.0f, 0.25f, float(node)}))};
}

std::vector<std::uint8_t> bytes_of(const Bytes& b) { return {b.data(), b.data() + b.size()}; }

Bytes from(const std::vector<std::uint8_t>& v) { return Bytes::copy_of(v); }

HostMessage round_trip(const HostMessage& m, const HostWireLimits& limits = {}) {
  return decode_host_message(encode_host_message(m), limits);
}

void check_same(const Delivery& a, const Delivery& b) {
  CHECK(a.at_ms == b.at_ms);
  CHECK(a.node == b.node);
  CHECK(a.seq == b.seq);
  CHECK(bytes_of(a.envelope) == bytes_of(b.envelope));
}

void check_same(const std::vector<Delivery>& a, const std::vector<Delivery>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) check_same(a[i], b[i]);
}

void check_same(const RoundDone& a, const RoundDone& b) {
  CHECK(a.round == b.round);
  CHECK(a.at_ms == b.at_ms);
  CHECK(a.survivors == b.survivors);
  CHECK(a.global == b.global);  // exact: floats travel bit for bit
  CHECK(a.evaluate == b.evaluate);
  CHECK(a.last == b.last);
}

void check_same(const MetricsRow& a, const MetricsRow& b) {
  CHECK(a.level == b.level);
  CHECK(a.round == b.round);
  CHECK(a.node == b.node);
  if (std::isnan(a.perplexity)) {
    CHECK(std::isnan(b.perplexity));
  } else {
    CHECK(a.perplexity == b.perplexity);
  }
  CHECK(a.accuracy == b.accuracy);
  CHECK(a.participated == b.participated);
  CHECK(a.bytes_up == b.bytes_up);
  CHECK(a.bytes_down == b.bytes_down);
  CHECK(a.raw_bytes_left == b.raw_bytes_left);
  CHECK(a.node_compute_s == b.node_compute_s);
  CHECK(a.node_energy_j == b.node_energy_j);
  CHECK(a.sim_time_s == b.sim_time_s);
  CHECK(a.serving == b.serving);
  CHECK(a.ttft_p50_ms == b.ttft_p50_ms);
  CHECK(a.ttft_p95_ms == b.ttft_p95_ms);
  CHECK(a.tpot_p50_ms == b.tpot_p50_ms);
  CHECK(a.tpot_p95_ms == b.tpot_p95_ms);
  CHECK(a.outage_requests == b.outage_requests);
  CHECK(a.outage_served == b.outage_served);
  for (auto [x, y] : {std::pair{a.global_pooled_perplexity, b.global_pooled_perplexity},
                      std::pair{a.personal_perplexity, b.personal_perplexity},
                      std::pair{a.personal_pooled_perplexity, b.personal_pooled_perplexity}}) {
    if (std::isnan(x)) {
      CHECK(std::isnan(y));
    } else {
      CHECK(x == y);
    }
  }
}

WindowOrder sample_order() {
  WindowOrder w;
  w.level = 5;
  w.until_ms = 123456789012;
  w.deliveries = {delivery(100, 0, 0), delivery(100, 7, 1), delivery(250, 3, 2)};
  RoundDone r1{2, 99000, {0, 3, 7}, {0.5f, -1.75f, -0.0f, 3.0e-8f, -65504.0f, std::numeric_limits<float>::max()}, true, false};
  RoundDone r2{3, 120000, {}, {}, false, true};
  w.completed = {r1, r2};
  w.finish = true;
  return w;
}

MetricsRow sample_row(int node) {
  MetricsRow r;
  r.level = 4;
  r.round = 6;
  r.node = node;
  r.perplexity = 12.375 + node;
  r.accuracy = 0.625;
  r.participated = false;
  r.bytes_up = 1ull << 40;
  r.bytes_down = 123456789;
  r.raw_bytes_left = 42;
  r.node_compute_s = 3.5;
  r.node_energy_j = 17.25;
  r.sim_time_s = 3600.125;
  r.serving = true;
  r.ttft_p50_ms = 80.5;
  r.ttft_p95_ms = 210.25;
  r.tpot_p50_ms = 31.0;
  r.tpot_p95_ms = 44.5;
  r.outage_requests = 9;
  r.outage_served = 4;
  return r;
}

WindowReport sample_report() {
  WindowReport w;
  w.level = 4;
  w.messages = {delivery(5, 2, 11)};
  w.next_event_ms = 7000;
  MetricsRow no_eval = sample_row(1);
  no_eval.perplexity = std::nan("");
  no_eval.accuracy.reset();
  no_eval.participated = true;
  no_eval.serving = false;
  w.rows = {sample_row(0), no_eval};
  return w;
}

// Small, valid messages of every kind, for the truncation and corruption loops.
std::vector<HostMessage> samples() {
  WindowOrder small;
  small.level = 4;
  small.until_ms = 10;
  small.deliveries = {delivery(1, 1, 0)};
  small.completed = {RoundDone{1, 9, {1, 2}, {0.5f, -0.5f}, true, false}};
  WindowReport report;
  report.level = 6;
  report.next_event_ms = 3;
  report.rows = {sample_row(2)};
  return {HostHello{"host-a"}, HostAssign{"name = \"x\"\n", "x.toml", {0, 4, 6}, 2, 9, 3}, HostReady{"ab12", "cd34"},
          StartLevel{6}, small, report, Shutdown{"done"}, HostError{"boom"}, Ping{}};
}

template <class T>
T decoded_as(const HostMessage& m) {
  REQUIRE(std::holds_alternative<T>(m));
  return std::get<T>(m);
}

// The encoder writes a single-segment message: 8 bytes of segment table, the
// root pointer, then the root struct's data section (version, then the kind).
constexpr std::size_t kVersionOffset = 16;
constexpr std::size_t kKindOffset = 20;

ErrorCode code_of(const Bytes& b, const HostWireLimits& limits = {}) {
  try {
    decode_host_message(b, limits);
  } catch (const DecodeError& e) {
    return e.code();
  }
  FAIL("decoded without error");
  return ErrorCode::kUnknown;
}

}  // namespace

TEST_CASE("host wire: control messages round-trip exactly") {
  const std::string nul_text("a\0b\0c", 5);
  auto hello = decoded_as<HostHello>(round_trip(HostHello{nul_text}));
  CHECK(hello.host_name == nul_text);

  HostAssign assign{"name = \"edge\"\n[nodes]\ncount = 64\n", "scenarios/edge.toml", {0, 1, 4, 5, 6}, 16, 48, 4};
  auto a = decoded_as<HostAssign>(round_trip(assign));
  CHECK(a.scenario_toml == assign.scenario_toml);
  CHECK(a.scenario_source == assign.scenario_source);
  CHECK(a.levels == assign.levels);
  CHECK(a.first_node == 16);
  CHECK(a.end_node == 48);
  CHECK(a.threads == 4);
  CHECK(a.seed_index == 0);
  assign.seed_index = 2;
  CHECK(decoded_as<HostAssign>(round_trip(assign)).seed_index == 2);

  auto ready = decoded_as<HostReady>(round_trip(HostReady{"0123456789abcdef", "fedcba9876543210"}));
  CHECK(ready.base_digest == "0123456789abcdef");
  CHECK(ready.split_digest == "fedcba9876543210");
  CHECK(decoded_as<StartLevel>(round_trip(StartLevel{6})).level == 6);
  CHECK(decoded_as<Shutdown>(round_trip(Shutdown{"coordinator finished"})).reason == "coordinator finished");
  CHECK(decoded_as<HostError>(round_trip(HostError{"node 3: out of memory"})).message == "node 3: out of memory");
  CHECK(std::holds_alternative<Ping>(round_trip(Ping{})));
  CHECK(decoded_as<HostHello>(round_trip(HostHello{""})).host_name.empty());
}

TEST_CASE("host wire: WindowOrder round-trips deliveries and completed rounds") {
  const WindowOrder w = sample_order();
  auto d = decoded_as<WindowOrder>(round_trip(w));
  CHECK(d.level == w.level);
  CHECK(d.until_ms == w.until_ms);
  CHECK(d.finish == w.finish);
  check_same(d.deliveries, w.deliveries);
  REQUIRE(d.completed.size() == 2);
  check_same(d.completed[0], w.completed[0]);
  check_same(d.completed[1], w.completed[1]);
  CHECK(std::signbit(d.completed[0].global[2]));  // -0.0 stays negative zero

  // Each delivery still carries the protocol message it was given.
  for (std::size_t i = 0; i < d.deliveries.size(); ++i) {
    auto env = fedge::protocol::decode(d.deliveries[i].envelope, fedge::protocol::Limits{});
    auto expected = fedge::protocol::decode(w.deliveries[i].envelope, fedge::protocol::Limits{});
    CHECK(env == expected);
    CHECK(env.sender == w.deliveries[i].node + 1);
  }
}

TEST_CASE("host wire: WindowReport round-trips messages, next event and rows") {
  const WindowReport w = sample_report();
  auto d = decoded_as<WindowReport>(round_trip(w));
  CHECK(d.level == 4);
  check_same(d.messages, w.messages);
  CHECK(d.next_event_ms == std::optional<std::int64_t>(7000));
  REQUIRE(d.rows.size() == 2);
  check_same(d.rows[0], w.rows[0]);
  check_same(d.rows[1], w.rows[1]);
  CHECK(std::isnan(d.rows[1].perplexity));
  CHECK_FALSE(d.rows[1].accuracy.has_value());
  // Personalization columns: unmeasured (NaN) by default, values when measured.
  CHECK(std::isnan(d.rows[1].personal_perplexity));
  CHECK(std::isnan(d.rows[1].global_pooled_perplexity));
  WindowReport personal = w;
  personal.rows[0].global_pooled_perplexity = 3.25;
  personal.rows[0].personal_perplexity = 1.5;
  personal.rows[0].personal_pooled_perplexity = 2.75;
  auto p = decoded_as<WindowReport>(round_trip(personal));
  check_same(p.rows[0], personal.rows[0]);
  CHECK(p.rows[0].personal_perplexity == 1.5);

  WindowReport idle;
  idle.level = 6;
  auto e = decoded_as<WindowReport>(round_trip(idle));
  CHECK_FALSE(e.next_event_ms.has_value());
  CHECK(e.messages.empty());
  CHECK(e.rows.empty());
}

TEST_CASE("host wire: decoded envelopes outlive the message bytes, aligned or not") {
  const WindowOrder w = sample_order();
  std::vector<Delivery> kept;
  {
    Bytes encoded = encode_host_message(w);
    kept = decoded_as<WindowOrder>(decode_host_message(encoded)).deliveries;
  }
  check_same(kept, w.deliveries);
  CHECK(fedge::protocol::decode(kept[1].envelope, fedge::protocol::Limits{}).sender == 8);

  // Bytes at an odd address (a transport's frame need not be word-aligned).
  const auto raw = bytes_of(encode_host_message(w));
  auto storage = std::make_shared<std::vector<std::uint8_t>>(raw.size() + 1);
  std::memcpy(storage->data() + 1, raw.data(), raw.size());
  Bytes odd = Bytes::adopt(storage, storage->data() + 1, raw.size());
  auto d = decoded_as<WindowOrder>(decode_host_message(odd));
  storage.reset();
  odd = Bytes();
  check_same(d.deliveries, w.deliveries);
  check_same(d.completed[0], w.completed[0]);
}

TEST_CASE("host wire: the encoder writes one flat, single-segment message") {
  for (const auto& m : samples()) {
    const Bytes b = encode_host_message(m);
    INFO(host_message_name(m));
    REQUIRE(b.size() >= 16);
    CHECK(b.size() % 8 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % 8 == 0);
    std::uint32_t table[2];
    std::memcpy(table, b.data(), sizeof table);
    CHECK(table[0] == 0);                 // segment count - 1
    CHECK(table[1] == b.size() / 8 - 1);  // segment 0 is the rest of the bytes
  }
}

TEST_CASE("host wire: message names") {
  CHECK(std::string(host_message_name(HostHello{})) == "HostHello");
  CHECK(std::string(host_message_name(WindowOrder{})) == "WindowOrder");
  CHECK(std::string(host_message_name(WindowReport{})) == "WindowReport");
  CHECK(std::string(host_message_name(HostError{})) == "HostError");
  CHECK(std::string(host_message_name(Ping{})) == "Ping");
}

TEST_CASE("host wire: empty and garbage bytes are refused") {
  CHECK_THROWS_AS(decode_host_message(Bytes()), DecodeError);
  CHECK_THROWS_WITH(decode_host_message(Bytes()), Contains("host: message") && Contains("truncated"));
  // One segment of one word holding a null root pointer: a default (all-zero) message.
  CHECK(code_of(from({0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})) == ErrorCode::kBadVersion);
  CHECK_THROWS_AS(decode_host_message(from(std::vector<std::uint8_t>(16, 0))), DecodeError);

  std::mt19937 rng(20261125);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::uint8_t> junk(8 * (1 + rng() % 40) + (trial % 5 == 0 ? 3 : 0));
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    CHECK_THROWS_AS(decode_host_message(from(junk)), DecodeError);
  }
}

TEST_CASE("host wire: every truncation of a valid message is refused") {
  for (const auto& m : samples()) {
    const auto full = bytes_of(encode_host_message(m));
    INFO(host_message_name(m) << " of " << full.size() << " bytes");
    REQUIRE_NOTHROW(decode_host_message(from(full)));
    for (std::size_t n = 0; n < full.size(); ++n) {
      std::vector<std::uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      INFO("prefix of " << n << " bytes");
      CHECK_THROWS_AS(decode_host_message(from(prefix)), DecodeError);
    }
    auto longer = full;
    longer.resize(full.size() + 8, 0);
    CHECK_THROWS_WITH(decode_host_message(from(longer)), Contains("bytes after the end"));
  }
}

TEST_CASE("host wire: corrupted bytes decode or throw DecodeError, never crash") {
  for (const auto& m : samples()) {
    const auto full = bytes_of(encode_host_message(m));
    for (std::size_t i = 0; i < full.size(); ++i) {
      for (std::uint8_t value : {std::uint8_t{0x00}, std::uint8_t{0xff}, std::uint8_t{0x41}}) {
        auto bad = full;
        bad[i] = value;
        try {
          decode_host_message(from(bad));
        } catch (const DecodeError&) {
        }
      }
    }
  }
  SUCCEED("no crash, no other exception");
}

TEST_CASE("host wire: wrong version and unset kind are refused") {
  auto raw = bytes_of(encode_host_message(StartLevel{4}));
  REQUIRE(raw[kVersionOffset] == kHostWireVersion);  // the layout this test patches
  REQUIRE(raw[kKindOffset] == 4);                     // startLevel is the union's 5th member (0: unset)

  auto v2 = raw;
  v2[kVersionOffset] = 2;
  CHECK(code_of(from(v2)) == ErrorCode::kBadVersion);
  CHECK_THROWS_WITH(decode_host_message(from(v2)), Contains("host wire version 2") && Contains("speaks version 1"));

  auto unset = raw;
  unset[kKindOffset] = 0;
  CHECK(code_of(from(unset)) == ErrorCode::kMalformed);
  CHECK_THROWS_WITH(decode_host_message(from(unset)), Contains("unset or unknown"));

  auto future = raw;
  future[kKindOffset] = 99;
  CHECK(code_of(from(future)) == ErrorCode::kMalformed);
}

TEST_CASE("host wire: limits name the field over them") {
  const Bytes order = encode_host_message(sample_order());

  HostWireLimits lists;
  lists.max_list_length = 2;
  CHECK(code_of(order, lists) == ErrorCode::kTooLarge);
  CHECK_THROWS_WITH(decode_host_message(order, lists), Contains("host: windowOrder.deliveries: 3 entries, limit 2"));

  HostWireLimits vectors;
  vectors.max_vector_length = 5;
  CHECK(code_of(order, vectors) == ErrorCode::kTooLarge);
  CHECK_THROWS_WITH(decode_host_message(order, vectors), Contains("windowOrder.completed[0].global: 6 elements, limit 5"));

  HostWireLimits envelopes;
  envelopes.max_envelope_bytes = sample_order().deliveries[0].envelope.size() - 8;
  CHECK(code_of(order, envelopes) == ErrorCode::kTooLarge);
  CHECK_THROWS_WITH(decode_host_message(order, envelopes), Contains("windowOrder.deliveries[0].envelope") && Contains("limit"));

  HostWireLimits whole;
  whole.max_message_bytes = order.size() - 8;
  CHECK(code_of(order, whole) == ErrorCode::kTooLarge);
  CHECK_THROWS_WITH(decode_host_message(order, whole), Contains("max_message_bytes"));

  HostWireLimits texts;
  texts.max_text_bytes = 10;
  CHECK_NOTHROW(decode_host_message(encode_host_message(HostError{"0123456789"}), texts));
  CHECK_THROWS_WITH(decode_host_message(encode_host_message(HostError{"0123456789x"}), texts),
                    Contains("host: hostError.message: 11 bytes of text, limit 10"));
  CHECK_THROWS_WITH(decode_host_message(encode_host_message(HostAssign{"", std::string(11, 's'), {}, 0, 0, 0}), texts),
                    Contains("hostAssign.scenarioSource"));

  HostWireLimits rows;
  rows.max_list_length = 1;
  CHECK_THROWS_WITH(decode_host_message(encode_host_message(sample_report()), rows), Contains("windowReport.rows: 2 entries"));
  HostAssign levels{"", "", {0, 4, 6}, 0, 1, 0};
  CHECK_THROWS_WITH(decode_host_message(encode_host_message(levels), rows), Contains("hostAssign.levels: 3 entries"));
}

TEST_CASE("host wire: out-of-range values are refused") {
  auto refused = [](const HostMessage& m, const std::string& where, const HostWireLimits& limits = {}) {
    const Bytes b = encode_host_message(m);
    INFO(where);
    CHECK(code_of(b, limits) == ErrorCode::kMalformed);
    CHECK_THROWS_WITH(decode_host_message(b, limits), Contains(where));
  };
  refused(HostAssign{"", "", {4}, 9, 3, 0}, "hostAssign.firstNode: 9 is after endNode 3");
  refused(HostAssign{"", "", {4, 9}, 0, 3, 0}, "hostAssign.levels[1]: level 9 is outside 0..6");
  refused(HostAssign{"", "", {4}, 0, 3, -1}, "hostAssign.threads");
  refused(HostAssign{"", "", {4}, 0, 3, 0, 1000}, "hostAssign.seedIndex: 1000 is not below the seed limit 1000");
  refused(HostAssign{"", "", {4}, 0, 3, 0, 0xffffffffu}, "hostAssign.seedIndex");
  CHECK(std::get<HostAssign>(decode_host_message(encode_host_message(HostAssign{"", "", {4}, 0, 3, 0, 999}))).seed_index ==
        999);
  HostWireLimits few_nodes;
  few_nodes.max_nodes = 8;
  refused(HostAssign{"", "", {4}, 0, 9, 0}, "hostAssign.endNode: 9 is over the node limit 8", few_nodes);
  CHECK_NOTHROW(decode_host_message(encode_host_message(HostAssign{"", "", {4}, 0, 8, 0}), few_nodes));
  refused(StartLevel{9}, "startLevel.level: level 9");
  refused(StartLevel{-1}, "startLevel.level");

  auto order = sample_order();
  refused(order, "windowOrder.deliveries[1].node: node index 7 is not below the node limit 4", [] {
    HostWireLimits l;
    l.max_nodes = 4;
    return l;
  }());
  order = sample_order();
  order.level = 9;
  refused(order, "windowOrder.level");
  order = sample_order();
  order.completed[0].survivors = {1, 5, 1};
  refused(order, "windowOrder.completed[0].survivors: node 1 appears twice");
  order = sample_order();
  order.completed[0].survivors = {1, 20};
  refused(order, "windowOrder.completed[0].survivors[1]: node index 20", few_nodes);
  order = sample_order();
  order.completed[1].global = {1.0f, std::nanf("")};
  refused(order, "windowOrder.completed[1].global: element 1 is nan");
  order = sample_order();
  order.completed[0].global[0] = -std::numeric_limits<float>::infinity();
  refused(order, "windowOrder.completed[0].global: element 0 is -inf");
  order = sample_order();
  order.deliveries[2].at_ms = -5;
  refused(order, "windowOrder.deliveries[2].atMs");
  order = sample_order();
  order.deliveries[0].envelope = Bytes();
  refused(order, "windowOrder.deliveries[0].envelope: is empty");

  auto report = sample_report();
  report.rows[1].round = -1;
  refused(report, "windowReport.rows[1].round: -1 is negative");
  report = sample_report();
  report.rows[0].node = -3;
  refused(report, "windowReport.rows[0].node");
  report = sample_report();
  report.rows[0].level = 7;
  refused(report, "windowReport.rows[0].level: level 7");
  report = sample_report();
  report.rows[0].accuracy = 1.5;
  refused(report, "windowReport.rows[0].accuracy");
  report = sample_report();
  report.rows[0].perplexity = -2;
  refused(report, "windowReport.rows[0].perplexity");
  report = sample_report();
  report.rows[0].personal_perplexity = -1;
  refused(report, "windowReport.rows[0].personalPerplexity: -1.000000 is negative");
  report = sample_report();
  report.rows[1].personal_pooled_perplexity = -0.5;
  refused(report, "windowReport.rows[1].personalPooledPerplexity");
  report = sample_report();
  report.rows[0].global_pooled_perplexity = -3;
  refused(report, "windowReport.rows[0].globalPooledPerplexity");
  report = sample_report();
  report.rows[0].node_energy_j = std::nan("");
  refused(report, "windowReport.rows[0].nodeEnergyJ");
  report = sample_report();
  report.rows[0].outage_served = 10;
  refused(report, "windowReport.rows[0].outageServed");
  report = sample_report();
  report.next_event_ms = -1;
  refused(report, "windowReport.nextEventMs");
}
