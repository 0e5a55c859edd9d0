// The coordinator's side of federated rounds as a sans-I/O state machine: it
// takes decoded messages (with the authenticated CURVE key the driver saw) and
// clock readings, and returns what to send and what happened. No sockets,
// threads, clocks or files: the ZeroMQ driver, the SQLite wiring and the
// simulator all run this same core. See docs/FEDERATION.md.
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

#include "fedge/aggregation/secagg.h"
#include "fedge/aggregation/strategy.h"
#include "fedge/aggregation/update_codec.h"
#include "fedge/coordinator/store.h"
#include "fedge/privacy/rdp.h"
#include "fedge/protocol/messages.h"

namespace fedge::coordinator {

struct DpConfig {
  protocol::DpMode mode = protocol::DpMode::kNone;  // central: coordinator noises the sum;
                                                    // distributed: nodes add Skellam (secure only)
  double clip_norm = 1.0;         // L2 bound of each node's update
  double noise_multiplier = 1.0;  // sigma: noise stddev = sigma * clip_norm on the sum
  double delta = 1e-5;            // for the epsilon reported each round
};

// Every field has a default; the lead's TOML parser fills what a file sets.
struct FederationConfig {
  std::uint64_t rounds = 3;          // completed rounds after which finished() is true
  std::uint32_t min_nodes = 3;       // live nodes needed to start a round (>= 3 when secure)
  std::uint32_t max_nodes = 0;       // most nodes selected per round; 0 = no limit
  // The first round after (re)start waits for this many live nodes, so nodes
  // that start together all take part in it; later rounds need min_nodes. 0 = min_nodes.
  std::uint32_t startup_nodes = 0;
  double fraction = 1.0;             // share of live nodes selected, in (0, 1]; at least min_nodes
  std::uint32_t heartbeat_interval_ms = 1000;  // told to nodes in RegisterAck
  std::uint32_t liveness_timeout_ms = 5000;    // silent this long = dead, never selected
  // Per-stage budgets, each counted from the end of the previous stage. Secure:
  // AdvertiseKeys due train_ms + advertise_keys_ms after the plan (covers
  // training), then share_keys_ms, masked_input_ms, unmask_ms. Plain: the
  // PlainUpdate is due train_ms + masked_input_ms after the plan.
  protocol::Deadlines deadlines{60000, 5000, 5000, 10000, 5000};
  protocol::HyperParams hyper{10, 1e-3F, 8, 0.0F};  // fedprox_mu is taken from the strategy when 0
  bool secure = true;                // secure aggregation (SecAgg+) or plain float updates
  double expected_dropout = 0.1;     // for choose_secagg_params
  double corrupt_fraction = 0.1;     // for choose_secagg_params
  double failure_probability = 1e-6; // for choose_secagg_params
  std::uint32_t secagg_degree = 0;   // explicit degree k and threshold t; 0 = chosen
  std::uint32_t secagg_threshold = 0;
  std::uint32_t min_survivors = 0;   // plain rounds: fewest updates to aggregate; 0 = 1
  double clip_range = 1.0;           // elementwise update bound = quantiser range
  std::uint32_t quant_bits = 0;      // 0 = the most that cannot overflow (choose_quant_bits)
  double loss_cap = 64.0;            // train losses clamped to [0, loss_cap] in the secure sum
  std::string strategy = "fedavg";   // aggregation::make_strategy name
  aggregation::StrategyParams strategy_params;
  DpConfig dp;
  std::uint64_t seed = 0;            // selection order
  // Key behind graph seeds and central DP noise; unset = fresh OS randomness
  // (production). Simulators and tests set it for reproducible runs.
  std::optional<privacy::Key32> secret_seed;
  std::uint32_t round_gap_ms = 0;    // pause after a completed round
  std::uint32_t retry_delay_ms = 1000;  // pause after a failed attempt (lets stale messages drain)
  int secagg_threads = 1;            // OpenMP threads for mask removal
  // The mask generator of every secure round. AES-256-CTR unmasks about 3x
  // faster but needs AES instructions here and on every node (a node without
  // them sits the round out); ChaCha20 runs anywhere.
  privacy::PrgKind secagg_prg = aggregation::kFederationPrg;
};

// Throws Error(kInvalidInput) naming the field (and, for a robust strategy with
// secure = true, why it cannot work).
void validate(const FederationConfig& config);

// What Store::recover() and the adapter file give a restarting coordinator.
struct ResumeState {
  std::uint64_t next_round = 1;                 // Recovery::next_round
  std::uint64_t global_version = 0;             // latest adapter version (0 = initial)
  std::vector<float> global;                    // its flat parameters, in `layout` order
  std::vector<protocol::TensorLayout> layout;   // tensor names and shapes (sum of numel = global.size())
  std::vector<DpRecord> dp_history;             // Store::dp_history(), replayed into the accountant
  aggregation::StrategyState strategy_state;    // the server optimiser's moments (RoundCompleted::strategy_state)
};

struct Outgoing {
  protocol::NodeId to = 0;
  protocol::Envelope envelope;  // bulk payloads own their storage
};

enum class RoundStage { kIdle, kAdvertiseKeys, kShareKeys, kMaskedInput, kUnmask, kPlainUpdate };
const char* stage_name(RoundStage stage);

struct StageCount {
  RoundStage stage = RoundStage::kIdle;
  std::uint32_t expected = 0;  // nodes asked for this stage
  std::uint32_t received = 0;  // accepted answers before the stage closed
  std::uint32_t dropped() const { return expected - received; }
};
struct RoundStats {
  std::vector<StageCount> stages;  // in order, the stages that ran
  std::uint32_t errors_sent = 0;   // ErrorReplies for this round's messages
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
using CoordinatorEvent =
    std::variant<RoundStarted, RoundCompleted, RoundFailed, NodeRegistered, NodeLost, FederationFinished>;

struct CoordinatorActions {
  std::vector<Outgoing> send;
  std::vector<CoordinatorEvent> events;
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

}  // namespace fedge::coordinator
