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
//
// Two modes (SecAggMode). Semi-honest: the server follows the protocol (it may
// try to learn from what it sees). Malicious (Bonawitz et al. 2017, section 6
// "active adversary"): clients sign their advertised keys with long-term
// Ed25519 keys that every client knows from an operator-given roster (the
// PKI), sign the survivor set and check t signatures of their peers on the
// same set before revealing any share (the consistency round), and check the
// neighbour-graph seed against the commitment the setup carried before keys
// were advertised. See docs/SECURE_AGGREGATION.md for what each mode stops.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "fedge/privacy/crypto.h"
#include "fedge/privacy/prg.h"
#include "fedge/privacy/shamir.h"

namespace fedge::aggregation {

using ClientId = std::uint32_t;  // 1..num_clients; also the Shamir x-coordinate
using privacy::Key32;

enum class SecAggMode : std::uint8_t { kSemiHonest, kMalicious };
const char* secagg_mode_name(SecAggMode mode);  // "semi-honest", "malicious"

struct SecAggParams {
  std::uint32_t num_clients = 0;   // n
  std::uint32_t threshold = 0;     // t: shares needed to reconstruct a client's secret
  std::uint32_t degree = 0;        // k: neighbours per client; n-1 = complete graph
  std::uint64_t vector_length = 0; // d: ring elements per input
  Key32 graph_seed{};              // announced by the server; fixes the neighbour graph
  // Mask stream cipher, the same for every party. AES-256-CTR is the fast
  // default on x86 (AES-NI/VAES) and ARMv8 boards (OpenSSL); it runs on every
  // CPU (privacy/aes.h), but pick kChaCha20 if some party has no AES instructions.
  privacy::PrgKind prg = privacy::PrgKind::kAes256Ctr;
  SecAggMode mode = SecAggMode::kSemiHonest;
  // Malicious mode: commit_graph_seed(graph_seed), announced in the setup; the
  // clients' setup leaves graph_seed zero and learns it from KeysBroadcast.
  Key32 graph_seed_commitment{};
};

// The commitment to a neighbour-graph seed (BLAKE2b-256 under a label).
Key32 commit_graph_seed(const Key32& seed);

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

// Malicious mode: what a client needs to sign its own messages and check its
// peers'. The roster must come from the operator (out of band), never from the
// server: it is what stops the server from substituting keys.
struct ClientAuth {
  privacy::SigningKeyPair signing;                // this client's long-term Ed25519 key
  std::vector<Key32> roster;                      // index id-1: Ed25519 public key of client id
  // Bytes every signature of the round covers besides the message: the caller
  // binds them to the round attempt and to which identity each client id is
  // (federation: round, attempt and the selected node ids).
  std::vector<std::uint8_t> context;
};
// Malicious mode, server side (optional): with the roster the server refuses
// messages whose signatures do not verify instead of forwarding them, so one
// bad client cannot make honest ones abort.
struct ServerAuth {
  std::vector<Key32> roster;
  std::vector<std::uint8_t> context;
};

// ---- messages (server -> clients: RoundSetup, KeysBroadcast, SharesDelivery,
// ConsistencyCheck, UnmaskRequest; clients -> server: the others) ----
struct RoundSetup {
  std::uint64_t round = 0;
  SecAggParams params;
};
struct AdvertiseKeys {
  std::uint64_t round = 0;
  ClientId sender = 0;
  Key32 c_public{};  // share encryption
  Key32 s_public{};  // pairwise masks
  privacy::Signature signature{};  // malicious mode: see advertise_signing_bytes; zero otherwise
};
struct PeerKeys {
  ClientId id = 0;
  Key32 c_public{};
  Key32 s_public{};
  privacy::Signature signature{};  // the peer's AdvertiseKeys signature (malicious mode)
};
struct KeysBroadcast {
  std::uint64_t round = 0;
  ClientId recipient = 0;
  std::vector<PeerKeys> neighbours;  // neighbours of recipient that advertised keys
  Key32 graph_seed{};                // malicious mode: the seed, revealed now; zero otherwise
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
// Malicious mode: the survivor set each client signs before anything is revealed.
struct ConsistencyCheck {
  std::uint64_t round = 0;
  std::vector<ClientId> survivors;  // sorted: clients whose masked input arrived
};
struct SurvivorSignature {
  std::uint64_t round = 0;
  ClientId sender = 0;
  privacy::Signature signature{};  // over survivor_signing_bytes(the set it was told)
};
struct UnmaskRequest {
  std::uint64_t round = 0;
  std::vector<ClientId> survivors;  // sorted: clients whose masked input arrived
  // Malicious mode: at least t survivors' signatures on exactly `survivors`
  // (sorted by sender, distinct); empty in semi-honest mode.
  std::vector<SurvivorSignature> signatures{};
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

// What the signatures cover (label, context, round and the message's contents).
std::vector<std::uint8_t> advertise_signing_bytes(std::span<const std::uint8_t> context, std::uint64_t round,
                                                  const Key32& graph_seed_commitment, ClientId sender,
                                                  const Key32& c_public, const Key32& s_public);
std::vector<std::uint8_t> survivor_signing_bytes(std::span<const std::uint8_t> context, std::uint64_t round,
                                                 std::span<const ClientId> survivors);

// Size of one encrypted share box: 2 serialized shares of 32-byte secrets + AEAD overhead.
std::size_t share_box_bytes();

class SecAggClient {
 public:
  // Throws Error(kInvalidInput) if the setup is invalid or id is out of range,
  // or if the mode is malicious and `auth` is missing or its roster does not
  // have one key per client (and Error(kInvalidInput) for auth in semi-honest mode).
  SecAggClient(const RoundSetup& setup, ClientId id, std::optional<ClientAuth> auth = std::nullopt);

  AdvertiseKeys advertise_keys();
  // Throws Error(kProtocol) for a wrong round/recipient/stage or keys from
  // non-neighbours, Error(kPrivacy) if fewer than t share holders remain.
  // Malicious mode: Error(kPrivacy) when the revealed graph seed does not
  // match the setup's commitment or a neighbour's key signature does not
  // verify against the roster (the server substituted a key).
  ShareKeys share_keys(const KeysBroadcast& keys);
  // `input` is the quantised update (d ring elements).
  MaskedInput masked_input(const SharesDelivery& delivery, std::span<const std::uint32_t> input);
  // Malicious mode: signs the survivor set (after the same checks unmask makes
  // on it). Refuses (Error(kPrivacy)) if this client is not listed or too few
  // of its neighbourhood survived.
  SurvivorSignature sign_survivors(const ConsistencyCheck& check);
  // Refuses (Error(kPrivacy)) if this client is not listed as a survivor or too
  // few of its neighbourhood survived. Malicious mode: also unless the
  // survivors are exactly the set this client signed and at least t distinct
  // survivors' signatures on it verify (any signature that does not verify is
  // a refusal too: an honest server forwards only valid ones).
  UnmaskResponse unmask(const UnmaskRequest& request);

  ClientId id() const { return id_; }

 private:
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kConsistency, kUnmask, kDone };
  void expect(Stage s, const char* what) const;
  void check_round(std::uint64_t round, const char* what) const;
  bool malicious() const { return setup_.params.mode == SecAggMode::kMalicious; }
  void check_survivors(const std::vector<ClientId>& survivors) const;
  void check_graph_seed(const KeysBroadcast& keys) const;
  void check_peer_signatures(const KeysBroadcast& keys) const;
  void check_survivor_signatures(const UnmaskRequest& request) const;

  RoundSetup setup_;
  ClientId id_;
  std::optional<ClientAuth> auth_;
  std::optional<NeighbourGraph> graph_;  // malicious mode: built once KeysBroadcast reveals the seed
  std::vector<ClientId> signed_survivors_;            // malicious mode: the set this client signed
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
  enum class Stage { kAdvertise, kShareKeys, kMaskedInput, kConsistency, kUnmask, kDone, kFailed };

  // Throws like validate(). `threads` (0 = all OpenMP threads) parallelises the
  // mask removal in finish_unmask. Malicious mode: throws Error(kInvalidInput)
  // unless params.graph_seed_commitment commits to params.graph_seed; `auth`
  // (optional) lets the server refuse bad signatures instead of forwarding them.
  SecAggServer(std::uint64_t round, const SecAggParams& params, int threads = 0,
               std::optional<ServerAuth> auth = std::nullopt);
  // What clients are told: in malicious mode without the seed (only its commitment).
  RoundSetup setup() const;
  Stage stage() const { return stage_; }

  // Each receive() validates the message fully before changing any state and
  // throws Error(kProtocol) for the wrong round or stage, an unknown sender, a
  // duplicate, or wrong sizes/contents; a rejected message leaves the round as it was.
  void receive(const AdvertiseKeys& msg);
  std::vector<KeysBroadcast> finish_advertise();
  void receive(const ShareKeys& msg);
  std::vector<SharesDelivery> finish_share_keys();
  void receive(const MaskedInput& msg);
  // Semi-honest mode: closes the masked inputs and asks survivors to unmask.
  // Throws Error(kProtocol) in malicious mode (use open_consistency_check).
  UnmaskRequest finish_masked_input();
  // Malicious mode: closes the masked inputs and asks survivors to sign the set.
  ConsistencyCheck open_consistency_check();
  void receive(const SurvivorSignature& msg);
  // Malicious mode: the UnmaskRequest carrying t collected signatures (those
  // of the t lowest client ids); fails the round (Error(kPrivacy)) with fewer
  // than t. Every survivor that signed may be asked to unmask.
  UnmaskRequest finish_consistency_check();
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
  bool malicious() const { return params_.mode == SecAggMode::kMalicious; }
  UnmaskRequest close_masked_input();

  std::uint64_t round_;
  SecAggParams params_;
  int threads_;
  std::optional<ServerAuth> auth_;
  std::vector<ClientId> survivors_;                  // malicious mode: the set sent for signing
  std::vector<SurvivorSignature> survivor_sigs_;      // malicious mode: collected (valid if auth_)
  NeighbourGraph graph_;
  Stage stage_ = Stage::kAdvertise;
  std::vector<PeerKeys> keys_;                       // index id-1; valid if in_u1_
  std::vector<std::uint8_t> in_u1_, in_u2_, in_u3_, in_u4_;
  std::vector<std::vector<EncryptedShare>> inbox_;   // per recipient
  std::vector<std::uint32_t> sum_;                   // running sum of masked inputs
  std::vector<std::vector<privacy::Share>> b_shares_, s_shares_;  // per owner
};

// One semi-honest round with every party in this process and no dropouts:
// clients 1..inputs.size() mask inputs[id - 1] and the server unmasks their
// sum (the simulator's FedBuff buffers, tests). Throws what the parties throw,
// and Error(kInvalidInput) unless params.num_clients == inputs.size().
SecAggResult secure_sum_in_process(std::uint64_t round, const SecAggParams& params,
                                   std::span<const std::vector<std::uint32_t>> inputs);

}  // namespace fedge::aggregation
