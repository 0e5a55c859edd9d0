#include <algorithm>
#include <cmath>
#include <string>

#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/privacy/prg.h"

namespace fedge::aggregation {

const char* secagg_mode_name(SecAggMode mode) {
  return mode == SecAggMode::kMalicious ? "malicious" : "semi-honest";
}

Key32 commit_graph_seed(const Key32& seed) { return privacy::hash32("fedge/secagg/graph-seed-commitment/v1", seed); }

void validate(const SecAggParams& p) {
  if (p.mode != SecAggMode::kSemiHonest && p.mode != SecAggMode::kMalicious)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: unknown mode " + std::to_string(static_cast<int>(p.mode)));
  if (p.mode == SecAggMode::kMalicious && p.graph_seed_commitment == Key32{})
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: malicious mode needs a graph-seed commitment");
  const std::string n = std::to_string(p.num_clients);
  if (p.num_clients < 3)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation needs at least 3 clients, got " + n);
  if (p.num_clients > 10000)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation supports at most 10000 clients, got " + n);
  if (p.vector_length == 0) throw Error(ErrorKind::kInvalidInput, "secure aggregation: vector_length is 0");
  if (p.degree < 2 || p.degree > p.num_clients - 1 || (p.degree % 2 && p.degree != p.num_clients - 1))
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: degree " + std::to_string(p.degree) +
                                              " must be even and in 2.." + std::to_string(p.num_clients - 1) +
                                              ", or exactly n-1 (complete graph)");
  if (!privacy::prg_supported(p.prg))
    throw Error(ErrorKind::kUnimplemented, std::string("secure aggregation: this CPU cannot run the ") +
                                               privacy::prg_name(p.prg) +
                                               " mask PRG (no AES-NI); set the round's PRG to chacha20");
  const std::uint32_t holders = p.degree + 1;  // a client and its neighbours hold its shares
  if (p.threshold > holders)
    throw Error(ErrorKind::kInvalidInput, "secure aggregation: threshold " + std::to_string(p.threshold) +
                                              " exceeds the " + std::to_string(holders) +
                                              " share holders (degree + 1)");
  if (2 * p.threshold <= holders)
    throw Error(ErrorKind::kPrivacy,
                "secure aggregation: threshold " + std::to_string(p.threshold) + " must exceed half of the " +
                    std::to_string(holders) +
                    " share holders, otherwise the server could reconstruct both masks of one client");
  if (p.threshold < kMinSurvivors)
    throw Error(ErrorKind::kPrivacy, "secure aggregation: threshold " + std::to_string(p.threshold) +
                                         " is below " + std::to_string(kMinSurvivors) +
                                         ": a round finishing with 2 survivors shows each the other's input");
}

std::uint32_t min_threshold(std::uint32_t degree, double corrupt_fraction) {
  const double holders = static_cast<double>(degree) + 1.0;
  const auto margin = static_cast<std::uint32_t>(std::floor(holders * (1.0 + corrupt_fraction) / 2.0)) + 1;
  return std::max(kMinSurvivors, margin);
}

namespace {

// log P[Binomial(m, s) < t]
double log_binomial_cdf_below(std::uint32_t m, double s, std::uint32_t t) {
  if (t == 0) return -INFINITY;
  if (s <= 0) return 0.0;
  if (s >= 1) return -INFINITY;  // nobody drops: never fewer than t survivors
  double acc = -INFINITY;
  for (std::uint32_t i = 0; i < t && i <= m; ++i) {
    const double lt = std::lgamma(m + 1.0) - std::lgamma(i + 1.0) - std::lgamma(m - i + 1.0) +
                      i * std::log(s) + (m - i) * std::log1p(-s);
    if (lt == -INFINITY) continue;
    acc = std::max(acc, lt) + std::log1p(std::exp(-std::fabs(acc - lt)));
  }
  return acc;
}

}  // namespace

SecAggParams choose_secagg_params(std::uint32_t n, std::uint64_t vector_length, double dropout_rate,
                                  double corrupt_fraction, double failure_probability,
                                  const Key32& graph_seed) {
  if (!(dropout_rate >= 0 && dropout_rate < 1) || !(corrupt_fraction >= 0 && corrupt_fraction < 1) ||
      !(failure_probability > 0 && failure_probability < 1))
    throw Error(ErrorKind::kInvalidInput,
                "secure aggregation parameters: dropout rate and corrupt fraction must be in [0, 1), "
                "failure probability in (0, 1)");
  if (n < 3) throw Error(ErrorKind::kInvalidInput, "secure aggregation needs at least 3 clients");
  const double log_target = std::log(failure_probability / n);
  // Connectivity (Bell et al.): at least ~2 log2 n neighbours unless the graph is complete.
  const std::uint32_t min_k = std::min<std::uint32_t>(
      n - 1, 2 * static_cast<std::uint32_t>(std::ceil(std::log2(static_cast<double>(n)))));
  for (std::uint32_t k = std::max<std::uint32_t>(2, min_k);; k += 2) {
    if (k >= n - 1) k = n - 1;
    const std::uint32_t m = k + 1;
    const std::uint32_t t = min_threshold(k, corrupt_fraction);
    if (t <= m && log_binomial_cdf_below(m, 1.0 - dropout_rate, t) <= log_target) {
      SecAggParams p{n, t, k, vector_length, graph_seed};  // prg: the default every party assumes
      validate(p);
      return p;
    }
    if (k == n - 1) break;
  }
  throw Error(ErrorKind::kPrivacy,
              "secure aggregation: no neighbour degree for n=" + std::to_string(n) + " clients tolerates a " +
                  std::to_string(dropout_rate) + " dropout rate with " + std::to_string(corrupt_fraction) +
                  " corrupt clients at failure probability " + std::to_string(failure_probability) +
                  "; add clients, lower the expected dropout or accept a higher failure probability");
}

NeighbourGraph::NeighbourGraph(std::uint32_t n, std::uint32_t degree, const Key32& seed)
    : n_(n), k_(degree), order_(n), pos_(n) {
  if (n < 2 || degree > n - 1 || (degree % 2 && degree != n - 1))
    throw Error(ErrorKind::kInvalidInput, "neighbour graph: degree " + std::to_string(degree) +
                                              " is not even and <= n-1 = " + std::to_string(n - 1));
  for (std::uint32_t i = 0; i < n; ++i) order_[i] = i + 1;
  // Fisher-Yates with an unbiased ChaCha20 draw: every party derives the same ring.
  privacy::ChaChaRng rng(seed);
  for (std::uint32_t i = n - 1; i > 0; --i) {
    const std::uint64_t m = i + 1;
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % m;
    std::uint64_t r;
    do r = rng(); while (r >= limit);
    std::swap(order_[i], order_[r % m]);
  }
  for (std::uint32_t p = 0; p < n; ++p) pos_[order_[p] - 1] = p;
}

std::vector<ClientId> NeighbourGraph::neighbours(ClientId id) const {
  if (id == 0 || id > n_) throw Error(ErrorKind::kInvalidInput, "neighbour graph: no client " + std::to_string(id));
  std::vector<ClientId> out;
  if (k_ == n_ - 1) {
    for (ClientId j = 1; j <= n_; ++j)
      if (j != id) out.push_back(j);
    return out;
  }
  const std::uint32_t p = pos_[id - 1];
  for (std::uint32_t off = 1; off <= k_ / 2; ++off) {
    out.push_back(order_[(p + off) % n_]);
    out.push_back(order_[(p + n_ - off) % n_]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool NeighbourGraph::adjacent(ClientId a, ClientId b) const {
  if (a == 0 || b == 0 || a > n_ || b > n_ || a == b) return false;
  if (k_ == n_ - 1) return true;
  const std::uint32_t d = (pos_[a - 1] + n_ - pos_[b - 1]) % n_;
  return std::min(d, n_ - d) <= k_ / 2;
}

std::size_t share_box_bytes() {
  return 2 * (4 + 8 * privacy::shamir_chunks(32)) + privacy::kAeadOverhead;
}

}  // namespace fedge::aggregation
