// The node's side of federated rounds as a sans-I/O state machine (the
// counterpart of coordinator_core.h). It registers, heartbeats, asks its
// driver to train when selected, encodes the update (update_codec.h) and runs
// the secure-aggregation client. It works on flat float vectors in the
// coordinator's layout order; training, model swapping and sockets are the
// driver's. See docs/FEDERATION.md.
//
// Driver loop:
//   RoundClient client(identity, config);
//   apply(client.start(now));
//   on every message from the coordinator: apply(client.on_message(now, env));
//   periodically (>= every heartbeat interval): apply(client.on_tick(now));
//   when a TrainCommand finishes: apply(client.on_update_ready(now, update))
//                                 (or on_training_failed).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedge/privacy/crypto.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

struct NodeIdentity {
  protocol::NodeId node_id = 0;       // >= 1
  std::string name;
  protocol::Key32 public_key{};       // this node's CURVE public key (raw)
  protocol::Capabilities capabilities;  // num_examples: the node's training examples
};

struct NodeClientConfig {
  std::uint32_t heartbeat_interval_ms = 1000;  // until RegisterAck says otherwise
  std::uint32_t register_retry_ms = 5000;      // resend Register while unanswered
  // Seed of the quantiser's stochastic rounding and the distributed-DP noise;
  // unset = fresh OS randomness (production). Tests and simulators set it.
  std::optional<privacy::Key32> noise_seed;
  // Malicious-server secure aggregation (docs/SECURE_AGGREGATION.md): the
  // seed of this node's long-term Ed25519 key (its key file) and the
  // operator's roster (node id -> Ed25519 public key), which must not come
  // from the coordinator. Without them the node sits out malicious-mode rounds.
  std::optional<privacy::Key32> signing_seed;
  std::map<protocol::NodeId, privacy::Key32> roster;
  // Refuse every plan that is not a secure round in malicious mode, so a
  // malicious coordinator cannot downgrade this node silently.
  bool require_malicious = false;
};

// The driver should train now: start from global version `global_version`
// (already installed through InstallGlobal) and call on_update_ready with the
// same ticket.
struct TrainCommand {
  std::uint64_t ticket = 0;          // echo in LocalUpdate; stale tickets are ignored
  std::uint64_t round = 0;
  std::uint64_t global_version = 0;
  protocol::HyperParams hyper;       // local steps, lr, batch, FedProx mu
  std::uint64_t update_length = 0;   // floats the update must have
  std::int64_t deadline_ms = 0;      // when the coordinator stops waiting (driver clock)
};

struct LocalUpdate {
  std::uint64_t ticket = 0;
  std::vector<float> update;         // local - global, flat, coordinator layout order
  std::uint64_t num_examples = 0;    // examples trained on (the weight)
  double train_loss = 0;
  // HetLoRA (the plan's rank slots): the LoRA rank the node trained at, its
  // update zero-padded to the global's rank; 0 = the global's rank.
  std::uint32_t lora_rank = 0;
};

// A new global model to hot-swap in (flat f32; map tensors by name).
struct InstallGlobal {
  std::uint64_t version = 0;
  std::vector<float> params;
  std::vector<protocol::TensorLayout> layout;
};

struct NodeActions {
  std::vector<protocol::Envelope> send;  // to the coordinator; payloads own their storage
  std::optional<TrainCommand> train;
  bool cancel_training = false;          // a newer plan or a failed round replaced the running one
  std::optional<InstallGlobal> install;
  std::vector<std::string> notes;        // for the log: refusals, errors received, dropping out
  // A secure round's unmask request listed this node among the survivors: its
  // update is in the sum, if the round completes (SCAFFOLD's c_i waits for it).
  bool update_in_sum = false;
};

// kSignedSurvivors: malicious mode, the survivor set is signed, the unmask request is awaited.
enum class ClientState { kUnregistered, kRegistering, kIdle, kTraining, kAdvertised, kSharedKeys, kSentMasked,
                         kSignedSurvivors };
const char* client_state_name(ClientState state);

class RoundClient {
 public:
  // Throws Error(kInvalidInput) for node id 0, and for a signing seed whose
  // key the roster does not list for this node id.
  RoundClient(NodeIdentity identity, NodeClientConfig config = {});
  ~RoundClient();
  RoundClient(RoundClient&&) noexcept;
  RoundClient& operator=(RoundClient&&) noexcept;

  NodeActions start(std::int64_t now_ms);  // sends Register
  // Never throws for coordinator input: problems become notes (and dropping
  // out of the round when the round cannot go on).
  NodeActions on_message(std::int64_t now_ms, const protocol::Envelope& envelope);
  // An update of the wrong length or with non-finite values is not sent: the
  // node drops out of the round and says why in notes. Stale tickets are ignored.
  NodeActions on_update_ready(std::int64_t now_ms, LocalUpdate update);
  NodeActions on_training_failed(std::int64_t now_ms, const std::string& reason);
  NodeActions on_tick(std::int64_t now_ms);  // heartbeats, Register retries
  // Scalar metrics for the coordinator (e.g. held-out loss of the installed
  // global); it reports their mean over nodes as "node/<name>". Nothing is sent
  // before registration; non-finite values are dropped.
  NodeActions send_metrics(std::int64_t now_ms, const std::vector<protocol::Metric>& entries);
  std::optional<std::int64_t> next_tick_ms() const;

  ClientState state() const;
  std::optional<std::uint64_t> global_version() const;  // installed version, if any
  std::uint64_t current_round() const;                   // 0 outside rounds
  const protocol::RoundPlan* current_plan() const;       // the running round's plan; nullptr outside rounds
  const NodeIdentity& identity() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace fedge::federation
