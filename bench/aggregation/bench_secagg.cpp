// SecAgg+ benchmark: the ChaCha20 keystream floor, client time per round for
// d = 1M with 20 and 100 neighbours, and server time for n = 100/500/1000 with
// d = 100k and 0/10/30% dropouts (after ShareKeys: the server's worst case).
// Usage: bench_secagg [--quick]   (quick: smaller cases, for smoke runs)
//        bench_secagg --server N DROPOUT [chacha20]   (one server case)
//        bench_secagg --round N DROPOUT semi-honest|malicious [D]
//          (one whole round, clients and server, in the given mode; d = D or
//          100000; malicious: Ed25519-signed keys, consistency round, and the
//          server checking every signature against the roster)
#include <omp.h>
#include <sodium.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fedge/common/cpu_features.h"
#include "fedge/common/machine.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/privacy/aes.h"
#include "fedge/privacy/prg.h"

using namespace fedge::aggregation;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Single-thread keystream rate into an L1-resident 16 KB buffer: the cost
// floor of a mask (raw cipher calls, no PRG bookkeeping, no addition).
double keystream_gbps(fedge::privacy::PrgKind kind) {
  fedge::privacy::ensure_sodium();
  alignas(64) static unsigned char buf[16384];
  unsigned char key[32] = {1}, nonce[12] = {};
  const std::size_t total = std::size_t{1} << 28;
  auto t0 = Clock::now();
  for (std::size_t done = 0; done < total; done += sizeof buf) {
    if (kind == fedge::privacy::PrgKind::kChaCha20) {
      nonce[0] = static_cast<unsigned char>(done >> 14);
      crypto_stream_chacha20_ietf(buf, sizeof buf, nonce, key);
    } else {
      fedge::privacy::aes256_ctr_keystream(key, done / 16, buf, sizeof buf / 16);
    }
  }
  auto t1 = Clock::now();
  volatile unsigned char sink = buf[7];
  (void)sink;
  return total / secs(t0, t1) / 1e9;
}

// prg_add over a 4 MB vector (L3/DRAM-resident), 1 thread.
double prg_add_gbps(fedge::privacy::PrgKind kind) {
  std::vector<std::uint32_t> v(1 << 20, 0);
  fedge::privacy::Key32 k{};
  auto t0 = Clock::now();
  for (int r = 0; r < 100; ++r) fedge::privacy::prg_add(k, v, false, 0, kind);
  auto t1 = Clock::now();
  return 100.0 * v.size() * 4 / secs(t0, t1) / 1e9;
}

// X25519 agreements per second on one thread (each dropped-neighbour edge costs one on the server).
double x25519_per_s() {
  const auto a = fedge::privacy::generate_keypair(), b = fedge::privacy::generate_keypair();
  const int reps = 2000;
  auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) (void)fedge::privacy::x25519(a.secret_key, b.public_key);
  return reps / secs(t0, Clock::now());
}

// Ed25519 signatures and verifications per second on one thread (malicious
// mode: a node signs twice and verifies k + t; the server with the roster
// verifies 2 per node).
std::pair<double, double> ed25519_per_s() {
  const auto key = fedge::privacy::generate_signing_keypair();
  const std::vector<std::uint8_t> message(200, 7);
  const int reps = 1000;
  auto t0 = Clock::now();
  fedge::privacy::Signature sig{};
  for (int i = 0; i < reps; ++i) sig = fedge::privacy::sign(key, message);
  const double signs = reps / secs(t0, Clock::now());
  t0 = Clock::now();
  int ok = 0;
  for (int i = 0; i < reps; ++i) ok += fedge::privacy::verify_signature(key.public_key, message, sig);
  const double verifies = reps / secs(t0, Clock::now());
  if (ok != reps) std::printf("Ed25519 verification failed\n");
  return {signs, verifies};
}

void client_case(std::uint32_t k, std::uint64_t d, fedge::privacy::PrgKind prg, double floor_gbps) {
  // Complete graph on k+1 clients gives client 1 exactly k neighbours.
  SecAggParams p{k + 1, (k + 1) / 2 + 1, k, d, {}, prg};
  SecAggServer server(1, p, 1);
  std::vector<SecAggClient> clients;
  for (ClientId i = 1; i <= p.num_clients; ++i) clients.emplace_back(server.setup(), i);
  double t_client = 0;
  auto t0 = Clock::now();
  auto adv1 = clients[0].advertise_keys();
  t_client += secs(t0, Clock::now());
  server.receive(adv1);
  for (std::size_t i = 1; i < clients.size(); ++i) server.receive(clients[i].advertise_keys());
  auto kbs = server.finish_advertise();
  t0 = Clock::now();
  auto sk1 = clients[0].share_keys(kbs[0]);
  t_client += secs(t0, Clock::now());
  server.receive(sk1);
  for (std::size_t i = 1; i < clients.size(); ++i) server.receive(clients[i].share_keys(kbs[i]));
  auto sds = server.finish_share_keys();
  std::vector<std::uint32_t> input(d, 3);
  floor_gbps = keystream_gbps(prg);  // re-measured now: the machine is shared, load drifts
  t0 = Clock::now();
  auto mi = clients[0].masked_input(sds[0], input);
  const double t_mask = secs(t0, Clock::now());
  t_client += t_mask;
  const double bytes = (k + 1.0) * d * 4;
  const double floor_s = bytes / (floor_gbps * 1e9);
  std::printf("client  %s d=%llu neighbours=%u: round %.1f ms (masked input %.1f ms); keystream floor %.1f ms "
              "for %.0f MB -> ratio %.2f\n",
              fedge::privacy::prg_name(prg), static_cast<unsigned long long>(d), k, t_client * 1e3, t_mask * 1e3, floor_s * 1e3, bytes / 1e6,
              t_mask / floor_s);
}

// Malicious mode's identities for n clients: keys, the roster, one context.
struct Identities {
  std::vector<fedge::privacy::SigningKeyPair> keys;
  std::vector<fedge::privacy::Key32> roster;
  std::vector<std::uint8_t> context{1, 0, 0, 0, 0, 0, 0, 0};
  explicit Identities(std::uint32_t n) {
    for (std::uint32_t i = 0; i < n; ++i) {
      keys.push_back(fedge::privacy::generate_signing_keypair());
      roster.push_back(keys.back().public_key);
    }
  }
};

void server_case(std::uint32_t n, std::uint64_t d, double drop, int threads, fedge::privacy::PrgKind prg,
                 double floor_gbps, SecAggMode mode = SecAggMode::kSemiHonest) {
  // Parameters for up to 30% dropout at failure probability 1e-6; where no
  // sparse graph reaches that (small n) fall back to the complete graph.
  SecAggParams p;
  try {
    p = choose_secagg_params(n, d, 0.3, 0.0, 1e-6);
  } catch (const fedge::Error&) {
    p = SecAggParams{n, n / 2 + 1, n - 1, d, {}, {}};
  }
  p.graph_seed[0] = 1;
  p.prg = prg;
  const bool malicious = mode == SecAggMode::kMalicious;
  std::optional<Identities> ids;
  if (malicious) {
    p.mode = mode;
    p.graph_seed_commitment = commit_graph_seed(p.graph_seed);
    ids.emplace(n);
  }
  SecAggServer server(1, p, threads,
                      malicious ? std::optional<ServerAuth>(ServerAuth{ids->roster, ids->context}) : std::nullopt);
  std::vector<SecAggClient> clients;
  for (ClientId i = 1; i <= n; ++i)
    clients.emplace_back(server.setup(), i,
                         malicious ? std::optional<ClientAuth>(ClientAuth{ids->keys[i - 1], ids->roster, ids->context})
                                   : std::nullopt);
  std::mt19937_64 rng(n * 1000 + static_cast<int>(drop * 100));
  std::set<ClientId> dropped;
  while (dropped.size() < static_cast<std::size_t>(drop * n)) dropped.insert(rng() % n + 1);
  double ts = 0, tc = 0;  // server seconds; wall seconds of all clients' work (OpenMP over clients)
  auto timed = [&](auto&& fn) {
    auto t0 = Clock::now();
    fn();
    ts += secs(t0, Clock::now());
  };
  auto clients_timed = [&](auto&& fn) {
    auto t0 = Clock::now();
    fn();
    tc += secs(t0, Clock::now());
  };
  std::vector<AdvertiseKeys> adv(n);
  clients_timed([&] {
    for (ClientId i = 1; i <= n; ++i) adv[i - 1] = clients[i - 1].advertise_keys();
  });
  timed([&] { for (auto& a : adv) server.receive(a); });
  std::vector<KeysBroadcast> kbs;
  timed([&] { kbs = server.finish_advertise(); });
  std::vector<ShareKeys> sks(kbs.size());
  clients_timed([&] {
#pragma omp parallel for schedule(dynamic)
    for (std::size_t i = 0; i < kbs.size(); ++i) sks[i] = clients[kbs[i].recipient - 1].share_keys(kbs[i]);
  });
  timed([&] { for (auto& s : sks) server.receive(s); });
  std::vector<SharesDelivery> sds;
  timed([&] { sds = server.finish_share_keys(); });
  std::vector<MaskedInput> mis(sds.size());
  std::vector<std::uint32_t> expected(d, 0);
  std::vector<std::vector<std::uint32_t>> inputs(n);
  for (ClientId i = 1; i <= n; ++i) {
    inputs[i - 1].resize(d);
    for (auto& x : inputs[i - 1]) x = static_cast<std::uint32_t>(rng());
  }
  clients_timed([&] {
#pragma omp parallel for schedule(dynamic)
    for (std::size_t i = 0; i < sds.size(); ++i) {
      const ClientId c = sds[i].recipient;
      if (!dropped.count(c)) mis[i] = clients[c - 1].masked_input(sds[i], inputs[c - 1]);
    }
  });
  for (std::size_t i = 0; i < sds.size(); ++i) {
    const ClientId c = sds[i].recipient;
    if (dropped.count(c)) continue;
    for (std::uint64_t j = 0; j < d; ++j) expected[j] += inputs[c - 1][j];
  }
  timed([&] {
    for (std::size_t i = 0; i < sds.size(); ++i)
      if (!dropped.count(sds[i].recipient)) server.receive(mis[i]);
  });
  UnmaskRequest req;
  if (malicious) {
    // The consistency round: survivors sign the set, the server checks and
    // forwards the signatures, each survivor checks them before unmasking.
    ConsistencyCheck check;
    timed([&] { check = server.open_consistency_check(); });
    std::vector<SurvivorSignature> sigs(check.survivors.size());
    clients_timed([&] {
#pragma omp parallel for schedule(dynamic)
      for (std::size_t i = 0; i < check.survivors.size(); ++i)
        sigs[i] = clients[check.survivors[i] - 1].sign_survivors(check);
    });
    timed([&] {
      for (auto& s : sigs) server.receive(s);
      req = server.finish_consistency_check();
    });
  } else {
    timed([&] { req = server.finish_masked_input(); });
  }
  std::vector<UnmaskResponse> urs(req.survivors.size());
  clients_timed([&] {
#pragma omp parallel for schedule(dynamic)
    for (std::size_t i = 0; i < req.survivors.size(); ++i) urs[i] = clients[req.survivors[i] - 1].unmask(req);
  });
  timed([&] { for (auto& u : urs) server.receive(u); });
  SecAggResult res;
  floor_gbps = keystream_gbps(prg);  // re-measured now: the machine is shared, load drifts
  auto t0 = Clock::now();
  res = server.finish_unmask();
  const double t_unmask = secs(t0, Clock::now());
  ts += t_unmask;
  // Keystream the server must generate: one self mask per survivor plus one
  // pairwise mask per (dropped, surviving neighbour) edge.
  std::size_t edges = 0;
  NeighbourGraph g(n, p.degree, p.graph_seed);
  for (ClientId u : dropped)
    for (ClientId v : g.neighbours(u)) edges += !dropped.count(v);
  const double bytes = (req.survivors.size() + edges) * d * 4.0;
  const double floor_s = bytes / (floor_gbps * 1e9 * threads);
  const double dh_s = edges / (x25519_per_s() * threads);
  std::printf("server  %s n=%u d=%llu k=%u t=%u dropout=%2.0f%% threads=%d: total %.3f s (unmask %.3f s); "
              "%zu masks, keystream floor %.3f s -> ratio %.2f; + %zu X25519 %.3f s -> ratio %.2f; exact=%s\n"
              "        unmask split: reconstruct %.3f s, pairwise seeds %.3f s, mask expansion %.3f s (%.2fx floor)\n",
              fedge::privacy::prg_name(prg), n, static_cast<unsigned long long>(d), p.degree, p.threshold, drop * 100, threads, ts, t_unmask,
              req.survivors.size() + edges, floor_s, t_unmask / floor_s, edges, dh_s, t_unmask / (floor_s + dh_s),
              res.sum == expected ? "yes" : "NO", res.reconstruct_s, res.seeds_s, res.masks_s, res.masks_s / floor_s);
  std::printf("round   %s n=%u d=%llu k=%u t=%u dropout=%2.0f%%: server %.3f s + clients %.3f s (all %u clients, %d "
              "threads) = %.3f s\n",
              secagg_mode_name(mode), n, static_cast<unsigned long long>(d), p.degree, p.threshold, drop * 100, ts, tc, n,
              threads, ts + tc);
}

}  // namespace

int main(int argc, char** argv) {
  using fedge::privacy::PrgKind;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const int threads = omp_get_max_threads();
  std::printf("machine: %s, %d OpenMP threads, libsodium %s, VAES %s, AES path: %s%s\n", fedge::cpu_model().c_str(),
              threads, sodium_version_string(), fedge::privacy::vaes_available() ? "yes" : "no",
              fedge::privacy::aes_path_name(fedge::privacy::aes_auto_path()),
              fedge::portable_build() ? " (FEDGE_PORTABLE build)" : "");
  double floor[2];
  for (PrgKind kind : {PrgKind::kChaCha20, PrgKind::kAes256Ctr}) {
    const double f = floor[static_cast<int>(kind)] = keystream_gbps(kind);
    const double a = prg_add_gbps(kind);
    std::printf("keystream floor %-9s: %.2f GB/s per thread; prg_add into a 4 MB vector %.2f GB/s (%.2fx floor)\n",
                fedge::privacy::prg_name(kind), f, a, a / f);
  }
  std::printf("X25519: %.0f agreements/s per thread\n", x25519_per_s());
  const auto [signs, verifies] = ed25519_per_s();
  std::printf("Ed25519: %.0f signatures/s, %.0f verifications/s per thread\n", signs, verifies);
  if (argc > 3 && std::strcmp(argv[1], "--server") == 0) {  // one server case: --server N DROPOUT [chacha20]
    const bool cc = argc > 4 && std::strcmp(argv[4], "chacha20") == 0;
    const PrgKind kind = cc ? PrgKind::kChaCha20 : PrgKind::kAes256Ctr;
    server_case(static_cast<std::uint32_t>(std::atoi(argv[2])), 100000, std::atof(argv[3]), threads, kind,
                floor[static_cast<int>(kind)]);
    return 0;
  }
  if (argc > 4 && std::strcmp(argv[1], "--round") == 0) {  // --round N DROPOUT MODE [D]
    const SecAggMode mode = std::strcmp(argv[4], "malicious") == 0 ? SecAggMode::kMalicious : SecAggMode::kSemiHonest;
    const std::uint64_t d = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 100000;
    server_case(static_cast<std::uint32_t>(std::atoi(argv[2])), d, std::atof(argv[3]), threads, PrgKind::kAes256Ctr,
                floor[1], mode);
    return 0;
  }
  const std::uint64_t dc = quick ? 100000 : 1000000;
  for (PrgKind kind : {PrgKind::kChaCha20, PrgKind::kAes256Ctr})
    for (std::uint32_t k : {20u, 100u}) client_case(k, dc, kind, floor[static_cast<int>(kind)]);
  const std::vector<std::uint32_t> ns = quick ? std::vector<std::uint32_t>{100} : std::vector<std::uint32_t>{100, 500, 1000};
  for (std::uint32_t n : ns)
    for (double drop : {0.0, 0.1, 0.3})
      server_case(n, 100000, drop, threads, PrgKind::kAes256Ctr, floor[1]);
  return 0;
}
