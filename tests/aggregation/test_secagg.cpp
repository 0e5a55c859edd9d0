#include <catch2/catch.hpp>

#include <cmath>
#include <optional>
#include <random>
#include <set>

#include "fedge/aggregation/secagg.h"
#include "fedge/privacy/dp.h"
#include "fedge/privacy/quantize.h"
#include "fedge/common/error.h"

using namespace fedge::aggregation;

namespace {

struct Dropouts {
  std::set<ClientId> before_share_keys, after_share_keys, after_masked_input;
};

struct Run {
  SecAggResult result;
  std::vector<std::uint32_t> expected;
  std::vector<ClientId> expected_included;
};

SecAggParams make_params(std::uint32_t n, std::uint32_t k, std::uint32_t t, std::uint64_t d) {
  SecAggParams p{n, t, k, d, {}, {}};
  p.graph_seed[0] = 7;
  return p;
}

// Drives one round in-process; throws what the server throws.
Run run_round(const SecAggParams& p, const Dropouts& drop, std::uint64_t seed = 1,
              const std::vector<std::vector<std::uint32_t>>* given = nullptr) {
  std::mt19937_64 rng(seed);
  const bool malicious = p.mode == SecAggMode::kMalicious;
  std::vector<fedge::privacy::SigningKeyPair> signing;
  std::vector<Key32> roster;
  const std::vector<std::uint8_t> context{1, 2, 3};
  for (ClientId i = 1; malicious && i <= p.num_clients; ++i) {
    signing.push_back(fedge::privacy::generate_signing_keypair());
    roster.push_back(signing.back().public_key);
  }
  SecAggServer server(42, p, 2, malicious ? std::optional<ServerAuth>(ServerAuth{roster, context}) : std::nullopt);
  std::vector<SecAggClient> clients;
  std::vector<std::vector<std::uint32_t>> inputs(p.num_clients);
  for (ClientId i = 1; i <= p.num_clients; ++i) {
    clients.emplace_back(server.setup(), i,
                         malicious ? std::optional<ClientAuth>(ClientAuth{signing[i - 1], roster, context}) : std::nullopt);
    inputs[i - 1].resize(p.vector_length);
    for (auto& x : inputs[i - 1]) x = static_cast<std::uint32_t>(rng());
    if (given) inputs[i - 1] = (*given)[i - 1];
  }
  for (auto& c : clients) server.receive(c.advertise_keys());
  auto broadcasts = server.finish_advertise();
  for (auto& kb : broadcasts) {
    if (drop.before_share_keys.count(kb.recipient)) continue;
    server.receive(clients[kb.recipient - 1].share_keys(kb));
  }
  auto deliveries = server.finish_share_keys();
  for (auto& sd : deliveries) {
    if (drop.after_share_keys.count(sd.recipient)) continue;
    server.receive(clients[sd.recipient - 1].masked_input(sd, inputs[sd.recipient - 1]));
  }
  UnmaskRequest request;
  if (malicious) {
    const ConsistencyCheck check = server.open_consistency_check();
    for (ClientId v : check.survivors)
      if (!drop.after_masked_input.count(v)) server.receive(clients[v - 1].sign_survivors(check));
    request = server.finish_consistency_check();
  } else {
    request = server.finish_masked_input();
  }
  Run run;
  run.expected.assign(p.vector_length, 0);
  for (ClientId v : request.survivors) {
    run.expected_included.push_back(v);
    for (std::size_t j = 0; j < p.vector_length; ++j) run.expected[j] += inputs[v - 1][j];
    if (drop.after_masked_input.count(v)) continue;
    server.receive(clients[v - 1].unmask(request));
  }
  run.result = server.finish_unmask();
  return run;
}

std::set<ClientId> pick(std::uint32_t n, std::uint32_t count, std::uint64_t seed, const std::set<ClientId>& avoid = {}) {
  std::mt19937_64 rng(seed);
  std::set<ClientId> out;
  while (out.size() < count) {
    ClientId c = static_cast<ClientId>(rng() % n) + 1;
    if (!avoid.count(c)) out.insert(c);
  }
  return out;
}

void check_exact(const Run& r) {
  CHECK(r.result.included == r.expected_included);
  REQUIRE(r.result.sum.size() == r.expected.size());
  CHECK(r.result.sum == r.expected);
}

}  // namespace

void check_refused(const SecAggParams& p, const Dropouts& drop) {
  try {
    run_round(p, drop);
    FAIL("the round finished");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
  }
}

TEST_CASE("SecAgg n=3 complete graph: exact without dropouts, and one dropout fails the round", "[aggregation][secagg]") {
  const auto p = make_params(3, 2, 3, 1000);
  check_exact(run_round(p, {}));
  // Two survivors would each learn the other's input from the sum.
  check_refused(p, {{}, {2}, {}});   // dropped after ShareKeys
  check_refused(p, {{}, {}, {3}});   // dropped after MaskedInput (its input is in the sum, its shares are not)
  check_refused(p, {{1}, {}, {}});   // dropped before ShareKeys
}

TEST_CASE("SecAgg never finishes with 2 survivors, whatever the parameters say (issue 16 finding 5)",
          "[aggregation][secagg]") {
  // t = 2 of 3 share holders was accepted: a round of 3 finished with 2.
  try {
    validate(make_params(3, 2, 2, 10));
    FAIL("threshold 2 accepted");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
    CHECK_THAT(e.what(), Catch::Contains("threshold 2"));
  }
  for (double corrupt : {0.0, 0.1, 0.3}) {
    INFO("corrupt " << corrupt);
    const auto p = choose_secagg_params(3, 100, 0.0, corrupt);
    CHECK(p.threshold == 3);
    check_refused(p, {{}, {2}, {}});
  }
  for (std::uint32_t n = 3; n <= 40; ++n)
    for (double corrupt : {0.0, 0.1, 0.2}) {
      INFO("n " << n << " corrupt " << corrupt);
      const auto p = choose_secagg_params(n, 10, 0.0, corrupt, 0.5);
      CHECK(p.threshold >= 3);
      CHECK(p.threshold == min_threshold(p.degree, corrupt));
    }
}

TEST_CASE("SecAgg n=10 complete graph with dropouts at every stage", "[aggregation][secagg]") {
  auto p = make_params(10, 9, 6, 1000);
  check_exact(run_round(p, {}));
  p.prg = fedge::privacy::PrgKind::kChaCha20;  // the portable PRG gives the same exact sums
  check_exact(run_round(p, {{2}, {5}, {9}}));
  p.prg = fedge::privacy::PrgKind::kAes256Ctr;
  check_exact(run_round(p, {{2}, {5}, {9}}));
  check_exact(run_round(p, {{1, 2}, {3}, {10}}));
}

TEST_CASE("SecAgg n=100 sparse graph from chosen parameters, 30% dropouts", "[aggregation][secagg]") {
  auto p = choose_secagg_params(100, 1000, 0.3, 0.0, 1e-2);
  p.graph_seed[3] = 9;
  INFO("degree " << p.degree << " threshold " << p.threshold);
  CHECK(p.degree < 99);
  CHECK(2 * p.threshold > p.degree + 1);
  Dropouts d;
  d.before_share_keys = pick(100, 10, 1);
  d.after_share_keys = pick(100, 10, 2, d.before_share_keys);
  std::set<ClientId> gone = d.before_share_keys;
  gone.insert(d.after_share_keys.begin(), d.after_share_keys.end());
  d.after_masked_input = pick(100, 10, 3, gone);
  const Run r = run_round(p, d);
  check_exact(r);
  CHECK(r.result.included.size() == 80);  // after-MaskedInput dropouts are still in the sum
}

TEST_CASE("SecAgg n=100 complete graph (original SecAgg) with dropouts", "[aggregation][secagg]") {
  const auto p = make_params(100, 99, 51, 200);
  Dropouts d;
  d.before_share_keys = {4};
  d.after_share_keys = {17, 33};
  d.after_masked_input = {50};
  check_exact(run_round(p, d));
}

TEST_CASE("SecAgg: too few survivors fail the round cleanly", "[aggregation][secagg]") {
  const auto p = make_params(10, 9, 6, 100);
  // 5 drop after ShareKeys: 5 masked inputs < t = 6.
  try {
    run_round(p, {{}, {1, 2, 3, 4, 5}, {}});
    FAIL("round should fail");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
    CHECK(std::string(e.what()).find("fewer than threshold") != std::string::npos);
  }
  // 6 masked inputs but only 5 unmask responses: shares of the survivors' b are short.
  CHECK_THROWS_AS(run_round(p, {{}, {1, 2, 3, 4}, {5}}), fedge::Error);
  // Server-side: a failed server refuses everything afterwards.
  SecAggServer server(1, p);
  CHECK_THROWS_AS(server.finish_advertise(), fedge::Error);
  CHECK(server.stage() == SecAggServer::Stage::kFailed);
  SecAggClient c(server.setup(), 1);
  CHECK_THROWS_AS(server.receive(c.advertise_keys()), fedge::Error);
}

TEST_CASE("SecAgg server rejects bad messages without corrupting the round", "[aggregation][secagg]") {
  const auto p = make_params(5, 4, 3, 64);
  SecAggServer server(7, p);
  std::vector<SecAggClient> clients;
  for (ClientId i = 1; i <= 5; ++i) clients.emplace_back(server.setup(), i);
  std::vector<AdvertiseKeys> adv;
  for (auto& c : clients) adv.push_back(c.advertise_keys());
  auto expect_protocol = [](auto&& fn) {
    try {
      fn();
      FAIL("expected a protocol error");
    } catch (const fedge::Error& e) {
      CHECK(e.kind() == fedge::ErrorKind::kProtocol);
    }
  };
  AdvertiseKeys wrong_round = adv[0];
  wrong_round.round = 8;
  expect_protocol([&] { server.receive(wrong_round); });
  AdvertiseKeys unknown = adv[0];
  unknown.sender = 6;
  expect_protocol([&] { server.receive(unknown); });
  unknown.sender = 0;
  expect_protocol([&] { server.receive(unknown); });
  for (auto& a : adv) server.receive(a);
  expect_protocol([&] { server.receive(adv[1]); });  // duplicate
  expect_protocol([&] { server.receive(MaskedInput{7, 1, std::vector<std::uint32_t>(64)}); });  // wrong stage
  auto kbs = server.finish_advertise();
  std::vector<ShareKeys> sks;
  for (auto& kb : kbs) sks.push_back(clients[kb.recipient - 1].share_keys(kb));
  ShareKeys bad = sks[0];
  bad.shares[0].box.pop_back();  // wrong size
  expect_protocol([&] { server.receive(bad); });
  bad = sks[0];
  bad.shares.pop_back();  // missing a neighbour
  expect_protocol([&] { server.receive(bad); });
  bad = sks[0];
  bad.shares[1].to = bad.shares[0].to;  // same recipient twice
  expect_protocol([&] { server.receive(bad); });
  for (auto& s : sks) server.receive(s);
  expect_protocol([&] { server.receive(sks[2]); });  // duplicate
  auto sds = server.finish_share_keys();
  std::mt19937_64 rng(3);
  std::vector<std::vector<std::uint32_t>> inputs(5, std::vector<std::uint32_t>(64));
  std::vector<std::uint32_t> expected(64, 0);
  for (auto& in : inputs)
    for (std::size_t j = 0; j < 64; ++j) expected[j] += (in[j] = static_cast<std::uint32_t>(rng()));
  std::vector<MaskedInput> mis;
  for (auto& sd : sds) mis.push_back(clients[sd.recipient - 1].masked_input(sd, inputs[sd.recipient - 1]));
  MaskedInput short_input = mis[0];
  short_input.masked.pop_back();
  expect_protocol([&] { server.receive(short_input); });
  for (auto& m : mis) server.receive(m);
  expect_protocol([&] { server.receive(mis[4]); });  // duplicate
  auto req = server.finish_masked_input();
  std::vector<UnmaskResponse> urs;
  for (auto& c : clients) urs.push_back(c.unmask(req));
  UnmaskResponse bad_u = urs[0];
  bad_u.key_shares.push_back(bad_u.self_mask_shares[1]);  // claims a survivor dropped
  expect_protocol([&] { server.receive(bad_u); });
  bad_u = urs[0];
  bad_u.self_mask_shares[0].share.y.pop_back();
  expect_protocol([&] { server.receive(bad_u); });
  UnmaskResponse stale = urs[0];
  stale.round = 6;
  expect_protocol([&] { server.receive(stale); });
  for (auto& u : urs) server.receive(u);
  expect_protocol([&] { server.receive(urs[0]); });
  CHECK(server.finish_unmask().sum == expected);
}

TEST_CASE("SecAgg client refuses out-of-order and unsafe requests", "[aggregation][secagg]") {
  const auto p = make_params(5, 4, 3, 16);
  RoundSetup setup{3, p};
  SecAggClient c(setup, 2);
  CHECK_THROWS_AS(c.share_keys(KeysBroadcast{3, 2, {}}), fedge::Error);  // before advertise
  c.advertise_keys();
  CHECK_THROWS_AS(c.share_keys(KeysBroadcast{4, 2, {}}), fedge::Error);  // wrong round
  try {
    c.share_keys(KeysBroadcast{3, 2, {}});  // alone: fewer holders than t
    FAIL("expected refusal");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
  }
  CHECK_THROWS_AS(SecAggClient(setup, 6), fedge::Error);
}

TEST_CASE("SecAgg parameters: validation and selection", "[aggregation][secagg]") {
  CHECK_THROWS_AS(validate(make_params(2, 1, 2, 10)), fedge::Error);     // n < 3
  CHECK_THROWS_AS(validate(make_params(10, 3, 3, 10)), fedge::Error);    // odd degree < n-1
  CHECK_THROWS_AS(validate(make_params(10, 9, 5, 10)), fedge::Error);    // t <= (k+1)/2
  CHECK_THROWS_AS(validate(make_params(10, 9, 11, 10)), fedge::Error);   // t > k+1
  CHECK_THROWS_AS(validate(make_params(10, 9, 6, 0)), fedge::Error);     // d = 0
  validate(make_params(10, 9, 6, 10));
  const auto p = choose_secagg_params(1000, 10, 0.1, 0.1);
  CHECK(p.degree % 2 == 0);
  CHECK(p.degree < 999);
  CHECK(2 * p.threshold > (p.degree + 1) * 1.1);
  // Half the clients expected to drop with a third corrupt cannot work.
  try {
    choose_secagg_params(100, 10, 0.5, 0.34);
    FAIL("expected refusal");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
  }
  // Graph: k-regular, symmetric, deterministic from the seed.
  NeighbourGraph g(50, 8, make_params(50, 8, 5, 1).graph_seed);
  for (ClientId i = 1; i <= 50; ++i) {
    const auto nb = g.neighbours(i);
    CHECK(nb.size() == 8);
    for (ClientId j : nb) CHECK(g.adjacent(j, i));
  }
}

TEST_CASE("SecAgg: a masked input looks uniform to the server", "[aggregation][secagg]") {
  // The server's view of client 1: its masked vector. Input all zeros (the
  // worst case for leakage); chi-square over 256 byte values with a fixed bound.
  const auto p = make_params(3, 2, 3, 1 << 16);
  SecAggServer server(1, p);
  std::vector<SecAggClient> clients;
  for (ClientId i = 1; i <= 3; ++i) clients.emplace_back(server.setup(), i);
  for (auto& c : clients) server.receive(c.advertise_keys());
  std::vector<ShareKeys> sks;
  for (auto& kb : server.finish_advertise()) server.receive(clients[kb.recipient - 1].share_keys(kb));
  auto sds = server.finish_share_keys();
  std::vector<std::uint32_t> zeros(p.vector_length, 0);
  const MaskedInput mi = clients[0].masked_input(sds[0], zeros);
  std::vector<double> counts(256, 0);
  for (std::uint32_t w : mi.masked)
    for (int b = 0; b < 4; ++b) counts[(w >> (8 * b)) & 0xff] += 1;
  const double expected = 4.0 * p.vector_length / 256;
  double chi2 = 0;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  // 255 degrees of freedom: mean 255, sd ~22.6; 400 is > 6 sd above the mean.
  CHECK(chi2 < 400);
  // And the low/high 16-bit halves are uniform too (bucketed into 64 bins).
  std::vector<double> hi(64, 0);
  for (std::uint32_t w : mi.masked) hi[w >> 26] += 1;
  double chi2b = 0;
  const double eb = p.vector_length / 64.0;
  for (double c : hi) chi2b += (c - eb) * (c - eb) / eb;
  CHECK(chi2b < 150);  // 63 dof: mean 63, sd ~11
}

TEST_CASE("SecAgg with quantised float updates and distributed Skellam noise", "[aggregation][secagg]") {
  using namespace fedge::privacy;
  const std::uint32_t n = 10;
  const std::uint64_t d = 256;
  const double mu = 4.0;
  const auto p = make_params(n, 9, 6, d);
  // The overflow rule picks the bits; the noise bound is part of it.
  const Quantizer q(0.5, Quantizer::bits_for(n, skellam_tail_bound(mu)));
  q.check_capacity(n, skellam_tail_bound(mu));
  Key32 seed{};
  ChaChaRng rng(seed);
  std::vector<std::vector<float>> updates(n, std::vector<float>(d));
  std::vector<std::vector<std::uint32_t>> encoded(n, std::vector<std::uint32_t>(d));
  std::vector<double> float_sum(d, 0.0);
  for (std::uint32_t i = 0; i < n; ++i) {
    for (auto& v : updates[i]) v = static_cast<float>(rng.uniform() - 0.5);
    l2_clip(updates[i], 100.0);  // no-op here; clients clip before quantising
    q.encode(updates[i], encoded[i], rng);
    add_skellam_noise(encoded[i], mu, rng);
    for (std::uint64_t j = 0; j < d; ++j) float_sum[j] += updates[i][j];
  }
  const Run r = run_round(p, {{}, {4}, {}}, 1, &encoded);
  check_exact(r);
  // Decoded sum is within rounding + noise of the float sum of the 9 survivors.
  std::vector<float> decoded(d);
  q.decode_sum(r.result.sum, decoded);
  for (std::uint64_t j = 0; j < d; ++j) float_sum[j] -= updates[3][j];
  double max_err = 0;
  for (std::uint64_t j = 0; j < d; ++j) max_err = std::max(max_err, std::fabs(decoded[j] - float_sum[j]));
  // 9 roundings of <= 1 unit plus Skellam(9 mu) noise (sd 8.5 units, bounded by 8 sd).
  CHECK(max_err * q.scale() < 9 + 8 * std::sqrt(2 * 9 * mu));
}

TEST_CASE("SecAgg: hostile ids, sizes and tampered boxes are typed errors", "[aggregation][secagg]") {
  const auto p = make_params(4, 3, 3, 32);
  SecAggServer server(1, p);
  std::vector<SecAggClient> clients;
  for (ClientId i = 1; i <= 4; ++i) clients.emplace_back(server.setup(), i);
  auto is_protocol = [](auto&& fn) {
    try {
      fn();
    } catch (const fedge::Error& e) {
      return e.kind() == fedge::ErrorKind::kProtocol;
    }
    return false;
  };
  AdvertiseKeys huge{1, 0xffffffffu, {}, {}};
  CHECK(is_protocol([&] { server.receive(huge); }));
  for (auto& c : clients) server.receive(c.advertise_keys());
  auto kbs = server.finish_advertise();
  // A client told about a stranger's keys, or the same peer twice, refuses.
  KeysBroadcast forged = kbs[0];
  forged.neighbours.push_back(forged.neighbours[0]);
  SecAggClient fresh(server.setup(), 1);
  fresh.advertise_keys();
  CHECK(is_protocol([&] { fresh.share_keys(forged); }));
  std::vector<ShareKeys> sks;
  for (auto& kb : kbs) sks.push_back(clients[kb.recipient - 1].share_keys(kb));
  ShareKeys bad = sks[0];
  bad.shares[0].to = 0xffffffffu;
  CHECK(is_protocol([&] { server.receive(bad); }));
  bad = sks[0];
  bad.shares[0].from = 2;
  CHECK(is_protocol([&] { server.receive(bad); }));
  bad = sks[0];
  bad.shares[0].box.assign(1 << 20, 0);  // oversized
  CHECK(is_protocol([&] { server.receive(bad); }));
  for (auto& s : sks) server.receive(s);
  auto sds = server.finish_share_keys();
  std::vector<std::uint32_t> input(32, 1);
  // A tampered box fails authentication at the recipient.
  SharesDelivery tampered = sds[1];
  tampered.shares[0].box[50] ^= 0x40;
  CHECK(is_protocol([&] { clients[1].masked_input(tampered, input); }));
  // A box re-addressed to another client fails too (AD binds from/to).
  SharesDelivery readdressed = sds[1];
  readdressed.shares[0].from = readdressed.shares[1].from;
  readdressed.shares.erase(readdressed.shares.begin() + 1);
  CHECK(is_protocol([&] { clients[1].masked_input(readdressed, input); }));
  std::vector<MaskedInput> mis;
  for (auto& sd : sds) mis.push_back(clients[sd.recipient - 1].masked_input(sd, input));
  MaskedInput big = mis[0];
  big.masked.resize(1 << 20);
  CHECK(is_protocol([&] { server.receive(big); }));
  for (auto& m : mis) server.receive(m);
  auto req = server.finish_masked_input();
  auto ur = clients[0].unmask(req);
  UnmaskResponse hostile = ur;
  hostile.self_mask_shares[0].owner = 0xffffffffu;
  CHECK(is_protocol([&] { server.receive(hostile); }));
  hostile = ur;
  hostile.self_mask_shares[0].share.x = 3;  // not the sender's x
  CHECK(is_protocol([&] { server.receive(hostile); }));
  hostile = ur;
  hostile.self_mask_shares.push_back(hostile.self_mask_shares[0]);  // two shares of one owner
  CHECK(is_protocol([&] { server.receive(hostile); }));
  // An unsorted survivor list is refused by clients.
  UnmaskRequest unsorted = req;
  std::swap(unsorted.survivors[0], unsorted.survivors[1]);
  CHECK(is_protocol([&] { clients[1].unmask(unsorted); }));
  server.receive(ur);
  for (ClientId i = 2; i <= 4; ++i) server.receive(clients[i - 1].unmask(req));
  CHECK(server.finish_unmask().sum == std::vector<std::uint32_t>(32, 4));
}

TEST_CASE("chosen SecAgg parameters use the PRG every party assumes", "[aggregation][secagg]") {
  CHECK(choose_secagg_params(3, 10, 0.001, 0.0, 0.01).prg == fedge::aggregation::SecAggParams{}.prg);
  CHECK(choose_secagg_params(100, 10, 0.1, 0.1).prg == fedge::aggregation::SecAggParams{}.prg);
}

TEST_CASE("SecAgg parameters with no expected dropout", "[aggregation][secagg]") {
  const auto p = choose_secagg_params(4, 10, 0.0, 0.0);
  CHECK(p.threshold == 3);
  CHECK(p.degree == 3);
}

TEST_CASE("SecAgg small sparse graphs (k < n-1) are exact", "[aggregation][secagg]") {
  for (auto [n, k, t] : {std::tuple{4u, 2u, 3u}, std::tuple{6u, 2u, 3u}, std::tuple{6u, 4u, 3u}, std::tuple{7u, 4u, 3u}}) {
    INFO("n " << n << " k " << k << " t " << t);
    auto p = make_params(n, k, t, 50);
    p.graph_seed[0] = 5;
    check_exact(run_round(p, {}));
  }
}

SecAggParams malicious(SecAggParams p) {
  p.mode = SecAggMode::kMalicious;
  p.graph_seed_commitment = commit_graph_seed(p.graph_seed);
  return p;
}

TEST_CASE("SecAgg malicious mode: exact with dropouts at every stage, signatures checked on both sides",
          "[aggregation][secagg]") {
  Dropouts d;
  d.before_share_keys = {2};
  d.after_share_keys = {5};
  d.after_masked_input = {7};
  check_exact(run_round(malicious(make_params(10, 9, 6, 50)), d));
  auto chosen = choose_secagg_params(100, 64, 0.3, 0.0, 1e-2);
  chosen.graph_seed[3] = 9;
  Dropouts sparse_drops;
  sparse_drops.before_share_keys = pick(100, 5, 1);
  sparse_drops.after_share_keys = pick(100, 5, 2, sparse_drops.before_share_keys);
  std::set<ClientId> gone = sparse_drops.before_share_keys;
  gone.insert(sparse_drops.after_share_keys.begin(), sparse_drops.after_share_keys.end());
  sparse_drops.after_masked_input = pick(100, 5, 3, gone);
  check_exact(run_round(malicious(chosen), sparse_drops));
}

TEST_CASE("SecAgg malicious mode: the setup hides the seed, clients need keys and a full roster",
          "[aggregation][secagg]") {
  const SecAggParams p = malicious(make_params(5, 4, 3, 8));
  SecAggServer server(1, p, 1);
  CHECK(server.setup().params.graph_seed == Key32{});
  CHECK(server.setup().params.graph_seed_commitment == p.graph_seed_commitment);
  CHECK_THROWS_WITH(SecAggClient(server.setup(), 1), Catch::Contains("malicious mode needs this client's signing key"));
  const auto key = fedge::privacy::generate_signing_keypair();
  CHECK_THROWS_WITH(SecAggClient(server.setup(), 1, ClientAuth{key, {key.public_key}, {}}),
                    Catch::Contains("the roster has 1 keys for 5 clients"));
  std::vector<Key32> roster(5, fedge::privacy::generate_signing_keypair().public_key);
  CHECK_THROWS_WITH(SecAggClient(server.setup(), 1, ClientAuth{key, roster, {}}),
                    Catch::Contains("is not this client's signing key"));
  SecAggParams wrong = p;
  wrong.graph_seed_commitment[0] ^= 1;
  CHECK_THROWS_WITH(SecAggServer(1, wrong, 1), Catch::Contains("does not commit to the seed"));
  CHECK_THROWS_WITH(server.finish_masked_input(), Catch::Contains("open_consistency_check"));
}
