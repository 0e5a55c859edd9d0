// Secure aggregation (SecAgg+, Bell et al. 2020; with degree n-1 it is the
// original SecAgg of Bonawitz et al. 2017) as sans-I/O state machines: each
// method takes a message struct and returns the message(s) to send. The caller
// (coordinator, node runtime or simulator) moves them and decides deadlines by
// calling the server's finish_* methods. See docs/SECURE_AGGREGATION.md.
//
// Key names follow Bonawitz et al.: the "c" key pair encrypts shares between
// clients (routed through the server), the "s" key pair derives pairwise masks.
// Each client Shamir-shares its self-mask seed b and its s secret key among
// itself and its neighbours; survivors reveal b-shares of survivors and s-shares
// of dropped clients, never both for the same client.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "fedge/privacy/crypto.h"
#include "fedge/privacy/prg.h"
#include "fedge/privacy/shamir.h"

namespace fedge::aggregation {

using ClientId = std::uint32_t;  // 1..num_clients; also the Shamir x-coordinate
using privacy::Key32;

struct SecAggParams {
  std::uint32_t num_clients = 0;   // n
  std::uint32_t threshold = 0;     // t: shares needed to reconstruct a client's secret
  std::uint32_t degree = 0;        // k: neighbours per client; n-1 = complete graph
  std::uint64_t vector_length = 0; // d: ring elements per input
  Key32 graph_seed{};              // announced by the server; fixes the neighbour graph
  // Mask stream cipher, the same for every party. AES-256-CTR (AES-NI) is the
  // fast default on x86; pick kChaCha20 if any party lacks AES-NI.
  privacy::PrgKind prg = privacy::PrgKind::kAes256Ctr;
};

// The fewest survivors a round may finish with. With two, the sum minus one's
// own input is the other's input: each would learn the other's update.
inline constexpr std::uint32_t kMinSurvivors = 3;

// Throws Error(kInvalidInput) for settings that are malformed (n < 3, d = 0,
// degree odd and < n-1, degree > n-1), Error(kUnimplemented) for a PRG this
// CPU cannot run, and Error(kPrivacy) for settings that are
// unsafe: threshold must satisfy (k+1)/2 < t <= k+1, so that the server cannot
// collect both a b-share and an s-share quorum for one client from honest peers,
// and t >= kMinSurvivors, since the server refuses to finish below t.
void validate(const SecAggParams& params);

// The least threshold that keeps the privacy margin for degree k when a
// fraction `corrupt_fraction` of the clients may collude with the server
// (corrupt holders reveal both share kinds): max(kMinSurvivors,
// floor((k+1)(1+corrupt)/2) + 1); at most k+1 for k >= 2 and corrupt < 1.
std::uint32_t min_threshold(std::uint32_t degree, double corrupt_fraction);

// Picks degree k and threshold t for n clients, expected dropout rate and the
// fraction of clients that may be corrupt (colluding with the server):
// t = min_threshold(k, corrupt) (privacy), and the smallest even k (or
// n-1) for which P[fewer than t of a client's k+1 share holders survive] is
// below failure_probability / n (correctness, union bound over clients).
// Throws Error(kPrivacy) when no degree up to n-1 satisfies both (n = 3 needs
// every client to survive: t = 3, so only a dropout rate near 0 fits).
SecAggParams choose_secagg_params(std::uint32_t n, std::uint64_t vector_length, double dropout_rate,
                                  double corrupt_fraction, double failure_probability = 1e-6,
                                  const Key32& graph_seed = Key32{});

// Harary-style k-regular graph: clients are placed on a ring in an order drawn
// from graph_seed (ChaCha20), each linked to the k/2 nearest on either side.
class NeighbourGraph {
 public:
  // Throws Error(kInvalidInput) for degree > n-1 or an odd degree below n-1.
  NeighbourGraph(std::uint32_t n, std::uint32_t degree, const Key32& seed);
  // Sorted neighbour ids of `id` (excluding id itself). O(k log k).
  std::vector<ClientId> neighbours(ClientId id) const;
  bool adjacent(ClientId a, ClientId b) const;  // O(1)
  std::uint32_t size() const { return n_; }
  std::uint32_t degree() const { return k_; }

 private:
  std::uint32_t n_, k_;
  std::vector<ClientId> order_;      // ring position -> id
  std::vector<std::uint32_t> pos_;   // id - 1 -> ring position
};

// ---- messages (server -> clients: RoundSetup, KeysBroadcast, SharesDelivery,
// UnmaskRequest; clients -> server: the others) ----
struct RoundSetup {
  std::uint64_t round = 0;
  SecAggParams params;
};
struct AdvertiseKeys {
  std::uint64_t round = 0;
  ClientId sender = 0;
  Key32 c_public{};  // share encryption
  Key32 s_public{};  // pairwise masks
};
struct PeerKeys {
  ClientId id = 0;
  Key32 c_public{};
  Key32 s_public{};
};
struct KeysBroadcast {
  std::uint64_t round = 0;
  ClientId recipient = 0;
  std::vector<PeerKeys> neighbours;  // neighbours of recipient that advertised keys
};
struct EncryptedShare {
  ClientId from = 0;
  ClientId to = 0;
  std::vector<std::uint8_t> box;  // AEAD(b-share || s-share), see kShareBoxBytes
};
struct ShareKeys {
  std::uint64_t round = 0;
  ClientId sender = 0;
  std::vector<EncryptedShare> shares;  // one per neighbour in the sender's KeysBroadcast
};
struct SharesDelivery {
  std::uint64_t round = 0;
  ClientId recipient = 0;
  std::vector<EncryptedShare> shares;  // from neighbours that completed ShareKeys
};
struct MaskedInput {
  std::uint64_t round = 0;
  ClientId sender = 0;
  std::vector<std::uint32_t> masked;  // d elements
};
struct UnmaskRequest {
  std::uint64_t round = 0;
  std::vector<ClientId> survivors;  // sorted: clients whose masked input arrived
};
struct RevealedShare {
  ClientId owner = 0;  // whose secret this is a share of
  privacy::Share share;
};
struct UnmaskResponse {
  std::uint64_t round = 0;
  ClientId sender = 0;
  std::vector<RevealedShare> self_mask_shares;  // of b, for surviving owners
  std::vector<RevealedShare> key_shares;        // of s_sk, for dropped owners
};
struct SecAggResult {
  std::vector<std::uint32_t> sum;     // exact sum mod 2^32 of the included inputs
  std::vector<ClientId> included;     // whose inputs are in the sum (sorted)
  // Where finish_unmask spent its time (seconds), for benchmarks and logs.
  double reconstruct_s = 0, seeds_s = 0, masks_s = 0;
};

// Size of one encrypted share box: 2 serialized shares of 32-byte secrets + AEAD overhead.
std::size_t share_box_bytes();

class SecAggClient {
 public:
  // Throws Error(kInvalidInput) if the setup is invalid or id is out of range.
  SecAggClient(const RoundSetup& setup, ClientId id);

  AdvertiseKeys advertise_keys();
  // Throws Error(kProtocol) for a wrong round/recipient/stage or keys from
  // non-neighbours, Error(kPrivacy) if fewer than t share holders remain.
  ShareKeys share_keys(const KeysBroadcast& keys);
  // `input` is the quantised update (d ring elements).
  MaskedInput masked_input(const SharesDelivery& delivery, std::span<const std::uint32_t> input);
  // Refuses (Error(kPrivacy)) if this client is not listed as a survivor or too
  // few of its neighbourhood survived.
  UnmaskResponse unmask(const UnmaskRequest& request);

  ClientId id() const { return id_; }

 private:
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kUnmask, kDone };
  void expect(Stage s, const char* what) const;
  void check_round(std::uint64_t round, const char* what) const;

  RoundSetup setup_;
  ClientId id_;
  NeighbourGraph graph_;
  Stage stage_ = Stage::kAdvertise;
  privacy::KeyPair c_, s_;
  Key32 b_{};
  std::vector<PeerKeys> peers_;                       // neighbours with keys (from KeysBroadcast)
  privacy::Share own_b_share_, own_s_share_;          // the share this client holds of itself
  std::vector<ClientId> mask_peers_;                  // neighbours whose shares arrived (sorted)
  std::vector<privacy::Share> held_b_, held_s_;       // parallel to mask_peers_
};

class SecAggServer {
 public:
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kUnmask, kDone, kFailed };

  // Throws like validate(). `threads` (0 = all OpenMP threads) parallelises the
  // mask removal in finish_unmask.
  SecAggServer(std::uint64_t round, const SecAggParams& params, int threads = 0);
  RoundSetup setup() const { return {round_, params_}; }
  Stage stage() const { return stage_; }

  // Each receive() validates the message fully before changing any state and
  // throws Error(kProtocol) for the wrong round or stage, an unknown sender, a
  // duplicate, or wrong sizes/contents; a rejected message leaves the round as it was.
  void receive(const AdvertiseKeys& msg);
  std::vector<KeysBroadcast> finish_advertise();
  void receive(const ShareKeys& msg);
  std::vector<SharesDelivery> finish_share_keys();
  void receive(const MaskedInput& msg);
  UnmaskRequest finish_masked_input();
  void receive(const UnmaskResponse& msg);
  // The exact ring sum of the survivors' inputs. finish_* methods throw
  // Error(kPrivacy) and move the round to kFailed (no partial output) when fewer
  // than t clients remain or a client's secret cannot be reconstructed.
  SecAggResult finish_unmask();

 private:
  void expect(Stage s, const char* what) const;
  void check_sender(std::uint64_t round, ClientId sender, const char* what) const;
  [[noreturn]] void fail(const std::string& why);
  std::vector<ClientId> members(const std::vector<std::uint8_t>& flags) const;

  std::uint64_t round_;
  SecAggParams params_;
  int threads_;
  NeighbourGraph graph_;
  Stage stage_ = Stage::kAdvertise;
  std::vector<PeerKeys> keys_;                       // index id-1; valid if in_u1_
  std::vector<std::uint8_t> in_u1_, in_u2_, in_u3_, in_u4_;
  std::vector<std::vector<EncryptedShare>> inbox_;   // per recipient
  std::vector<std::uint32_t> sum_;                   // running sum of masked inputs
  std::vector<std::vector<privacy::Share>> b_shares_, s_shares_;  // per owner
};

}  // namespace fedge::aggregation
