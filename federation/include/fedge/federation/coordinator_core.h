// The coordinator's side of federated rounds as a sans-I/O state machine: it
// takes decoded messages (with the authenticated CURVE key the driver saw) and
// clock readings, and returns what to send and what happened (events the
// driver logs and persists). No sockets, threads, clocks, files or logging:
// the ZeroMQ driver, the SQLite wiring and the simulator all run this same
// core. It composes one unit per job: Membership (who is in), select_nodes /
// plan_round (who takes part, what they are told), RoundStages (the stage
// machine of one attempt), the round result (decode, noise) and the
// PrivacyLedger (accounting). See docs/ARCHITECTURE.md.
//
// Driver loop:
//   CoordinatorCore core(config, resume);
//   on every decoded message:   apply(core.on_message(now, env, key));
//   when now >= core.next_deadline_ms() (or periodically): apply(core.on_tick(now));
// where apply() sends every Outgoing and handles every event (Store::begin_round
// on RoundStarted, complete_round on RoundCompleted, fail_round on RoundFailed
// when its `started` is true,
// upsert_node on NodeRegistered).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "fedge/aggregation/strategy.h"
#include "fedge/federation/coordinator_config.h"
#include "fedge/federation/outgoing.h"
#include "fedge/federation/round_result.h"
#include "fedge/federation/round_stages.h"
#include "fedge/protocol/messages.h"

namespace fedge::federation {

// What Store::recover() and the adapter file give a restarting coordinator.
struct ResumeState {
  std::uint64_t next_round = 1;                 // Recovery::next_round
  std::uint64_t global_version = 0;             // latest adapter version (0 = initial)
  std::vector<float> global;                    // its flat parameters, in `layout` order
  std::vector<protocol::TensorLayout> layout;   // tensor names and shapes (sum of numel = global.size())
  std::vector<DpRecord> dp_history;             // Store::dp_history(), replayed into the accountant
  aggregation::StrategyState strategy_state;    // the server optimiser's moments (RoundCompleted::strategy_state)
  // Each node id's CURVE key, kept across restarts (the Store's node_keys):
  // with CURVE the id registers only with that key and the key only as that id.
  std::map<protocol::NodeId, protocol::Key32> key_bindings;
};

struct RoundStarted {
  std::uint64_t round = 0;
  std::uint32_t attempt = 1;  // 1 for the first try of a round id
  protocol::RoundPlan plan;   // plan.selected: the node ids
};
struct RoundCompleted {
  std::uint64_t round = 0;
  std::uint32_t attempt = 1;
  std::uint64_t version = 0;               // the new global version
  std::vector<float> global;               // the new global parameters
  std::vector<protocol::NodeId> survivors; // whose updates are in it
  // participants, selected, dropped, total_examples, train_loss (when known),
  // epsilon (DP), and "node/<name>": means of Metrics the nodes sent since the
  // previous event.
  std::map<std::string, double> metrics;
  std::optional<DpRecord> dp;              // accountant row (round filled in, epsilon cumulative)
  RoundStats stats;
  // The strategy's state after this round (FedAdam's moments...), to persist
  // with the version so that a restarted coordinator continues exactly.
  aggregation::StrategyState strategy_state;
};
struct RoundFailed {
  std::uint64_t round = 0;
  std::uint32_t attempt = 1;
  std::string reason;
  RoundStats stats;
  // false: the plan itself could not be made (e.g. no secure-aggregation
  // parameters fit the selected nodes), so no RoundStarted preceded this
  // event and there is no Store round to fail.
  bool started = true;
};
struct NodeRegistered {
  protocol::Register node;
  bool known = false;  // true for a re-registration (restart)
};
struct NodeLost {
  protocol::NodeId node = 0;  // missed its liveness timeout
};
struct FederationFinished {
  std::uint64_t rounds = 0;  // last completed round id
};
// A node's message was refused; the ErrorReply is in the same actions.
struct MessageRefused {
  protocol::NodeId node = 0;
  std::string message;       // schema name of the refused body
  std::uint64_t round = 0;   // the message's round (0 outside rounds)
  protocol::ErrorCode code = protocol::ErrorCode::kUnknown;
  std::string why;
};
// A node sent an ErrorReply (it is never answered).
struct NodeReportedError {
  protocol::NodeId node = 0;
  protocol::ErrorCode code = protocol::ErrorCode::kUnknown;
  std::string message;
};
using CoordinatorEvent = std::variant<RoundStarted, RoundCompleted, RoundFailed, NodeRegistered, NodeLost,
                                      FederationFinished, MessageRefused, NodeReportedError>;

struct CoordinatorActions {
  std::vector<Outgoing> send;
  std::vector<CoordinatorEvent> events;
  // on_message only: the node this message came from, once the core has
  // checked that it did: a Register it enrolled, or a message from a
  // registered node whose authenticated CURVE key (if any) is the one it
  // registered with (even if the message itself is then refused, e.g. for a
  // closed stage). nullopt for anything refused before that and for
  // ErrorReplies, which are never checked. A driver points a node's reply
  // route at the connection a message came on only when this names the node,
  // so a peer that merely claims an id never receives that node's messages.
  std::optional<protocol::NodeId> sender_verified;
};

class CoordinatorCore {
 public:
  // Throws Error(kInvalidInput) for a bad config or resume state.
  CoordinatorCore(FederationConfig config, ResumeState resume);
  ~CoordinatorCore();
  CoordinatorCore(CoordinatorCore&&) noexcept;
  CoordinatorCore& operator=(CoordinatorCore&&) noexcept;

  // `authenticated_key`: the CURVE key the transport authenticated for this
  // peer (nullopt without CURVE). A Register whose public_key differs is refused.
  // Never throws for peer input: refusals become ErrorReplies.
  CoordinatorActions on_message(std::int64_t now_ms, const protocol::Envelope& envelope,
                                const std::optional<protocol::Key32>& authenticated_key = std::nullopt);
  // Closes stages whose deadline passed, marks silent nodes dead, starts rounds.
  CoordinatorActions on_tick(std::int64_t now_ms);
  // When on_tick next has work (stage deadline, a liveness expiry, a round
  // start); nullopt when only a message can change anything.
  std::optional<std::int64_t> next_deadline_ms() const;

  bool finished() const;
  std::uint64_t current_round() const;  // running round, or the next one to run
  std::uint32_t current_attempt() const;
  RoundStage stage() const;
  const protocol::RoundPlan* current_plan() const;  // the running round's plan; nullptr when idle
  const RoundStats* current_stats() const;          // its stages so far; nullptr when idle
  std::uint64_t global_version() const;
  const std::vector<float>& global() const;
  const std::vector<protocol::TensorLayout>& layout() const;
  std::vector<protocol::NodeId> live_nodes(std::int64_t now_ms) const;
  std::vector<protocol::NodeId> registered_nodes() const;
  double epsilon() const;  // cumulative, 0 without DP
  const FederationConfig& config() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace fedge::federation
