// Shared state of one simulation run (private to sims/src): the one read-only
// base model every virtual node uses, with a single adapter slot whose values
// are swapped in from flat vectors per node, and each node's data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedge/common/param_vector.h"
#include "fedge/inference/model.h"
#include "fedge/inference/tokenizer.h"
#include "fedge/node/local_trainer.h"
#include "fedge/node/lora_ranks.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"
#include "fedge/training/dataset.h"
#include "fedge/training/records.h"
#include "fedge/training/trainer.h"

namespace fedge::sims::detail {

inline constexpr const char* kAdapterSlot = "sim";

struct NodeData {
  int index = 0;
  DeviceProfile device;
  std::vector<training::Record> train;          // private records (text and questions)
  std::vector<training::Record> eval_text, eval_instruct;
  training::TokenDataset train_set, eval_set;
  std::uint64_t raw_bytes = 0;                  // bytes of the private training records
  std::vector<std::int64_t> prompt_tokens;      // per serving request
  std::vector<std::uint64_t> prompt_bytes;
};

struct TrainOutcome {
  ParamVector params;
  std::int64_t tokens = 0;  // tokens processed (for FLOP counts)
};

struct Quality {
  double perplexity = 0;
  std::optional<double> accuracy;
};

// What the virtual nodes of levels 4/5 held, measured by the blocks of this
// process when a level ends (node hosts log their own): the cross-device
// claim that an idle node costs its data and a few bytes of state.
struct NodeStateStats {
  std::uint64_t nodes = 0;             // virtual nodes measured
  std::uint64_t state_bytes = 0;       // heap their own state (RoundClient, counters, pending events) held at the end
  std::uint64_t version_bytes = 0;     // heap of the global versions they still pointed to (shared between them)
  std::uint64_t data_bytes = 0;        // their records and token sequences
  std::uint64_t models_installed = 0;  // global models the nodes installed (each a download and a copy)
  std::uint64_t nodes_with_model = 0;  // nodes that ever installed a global
};

// Bytes a node's data holds on the heap (records, token sequences, prompt sizes).
std::uint64_t node_data_bytes(const NodeData& node);

class Context {
 public:
  Context(const Scenario& scenario, std::vector<NodeData> nodes, inference::Model model,
          inference::Tokenizer tokenizer);

  const Scenario& scenario() const { return scenario_; }
  std::vector<NodeData>& nodes() { return nodes_; }
  const NodeData& node(int i) const { return nodes_[static_cast<std::size_t>(i)]; }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  const inference::ModelConfig& model_config() const { return model_.config(); }
  const inference::Model& model() const { return model_; }
  std::int64_t base_parameters() const { return base_parameters_; }
  const ParamVector& initial_adapter() const { return initial_; }
  std::uint64_t adapter_floats() const { return initial_.size(); }

  // Heterogeneous LoRA ranks, levels 4-6 (docs/SIMULATOR.md, "Heterogeneous
  // ranks"). Every node's adapter has the maximum rank's layout (and scaling
  // alpha / R); a node of rank r_n holds zeros beyond its first r_n components,
  // which its training keeps at zero (their gradients are zero).
  node::RankAggregation rank_aggregation() const { return rank_aggregation_; }
  bool heterogeneous() const { return rank_aggregation_ != node::RankAggregation::kNone; }
  int node_rank(int n) const;
  // Personalization "shared-a" (docs/SIMULATOR.md, "Personalization"): the
  // federation carries only LoRA's A matrices; each node keeps its own B.
  bool shares_a_only() const { return shares_a_only_; }
  // What the coordinator holds and the nodes send: the adapter; under
  // FlexLoRA the dense products s B A of every LoRA pair (federated_length);
  // under shared-a every A concatenated (node::lora_a_layout).
  const ParamLayout& federated_layout() const;
  std::uint64_t federated_floats() const { return federated_layout().size(); }
  std::vector<float> initial_federated() const;
  // Node n's adapter from a federated global: the global itself without
  // heterogeneous ranks; HetLoRA: its first r_n components (node::keep_rank);
  // FlexLoRA: the best rank-r_n factors of the dense products, A's unused
  // directions from the initial adapter (node::flexlora_factors); shared-a:
  // the global A joined with the node's own B (`own_b`; empty: the initial
  // adapter's B, what a node has before its first round).
  ParamVector node_adapter(int n, std::span<const float> global, std::span<const float> own_b = {}) const;
  // Node n's contribution from its local update (local - `start`, start =
  // node_adapter(n, global)): unchanged without heterogeneous ranks; HetLoRA:
  // cut to r_n (exact zeros beyond); FlexLoRA: products(start + update) - global.
  // Not for shared-a, whose node also keeps a B: see shared_a_step.
  std::vector<float> node_update(int n, const ParamVector& start, std::vector<float> update,
                                 std::span<const float> global) const;
  // Shared-a: what a node sends (its update's A) and keeps (start's B plus
  // its update's B) after a local round from `start` (node::shared_a_step).
  node::SharedAStep shared_a_step(const ParamVector& start, std::span<const float> update) const;
  // The adapter a federated global stands for (without heterogeneous ranks):
  // the global itself; under SCAFFOLD its first half; under shared-a (no
  // global B) the global A with the initial adapter's B, what a node that
  // never trained would hold.
  ParamVector global_adapter(std::span<const float> global) const;

  // SCAFFOLD ([training] strategy = "scaffold"; docs/SIMULATOR.md): the
  // federated layout is the adapter's followed by "scaffold.c/<entry>", the
  // server control variate c (zero at the start). A node keeps its own c_i
  // (empty: zero, before its first round).
  bool scaffold() const { return scaffold_; }
  // c - c_i: what node n adds to every gradient of its round.
  ParamVector scaffold_offset(std::span<const float> global, const std::vector<float>& control) const;
  // Appends the control variate's half of an update: c_i+ - c_i, c_i+ the
  // round's mean raw gradient.
  static void append_control_delta(std::vector<float>& update, const std::vector<float>& mean_gradient,
                                   const std::vector<float>& control);

  // Trains the adapter slot from `start` on `data` for `steps` steps: one
  // adapter on pooled data (levels 0-3) or a node alone (level 6).
  // With `centre`, the loss adds mu/2 * ||w - centre||^2 (Ditto's personal
  // adapter against the global; `centre` has the adapter's layout).
  TrainOutcome train(const ParamVector& start, const training::TokenDataset& data, int steps,
                     std::uint64_t seed, const std::string& schedule, const ParamVector* centre = nullptr,
                     double mu = 0.0);
  // A virtual node's local step of a federated round: the node's own
  // node::train_local_round on its training set, so every field of the round
  // plan (steps, learning rate, batch, FedProx mu) reaches training as on a
  // real node. With the memo on, an identical step (same node, request and
  // global values) returns the earlier result (levels 4 and 5 often repeat one).
  // `gradient_offset`: SCAFFOLD's c - c_i (node::train_local_round).
  node::LocalTrainResult train_round(int node, const ParamVector& global, const node::LocalTrainRequest& request,
                                     const ParamVector* gradient_offset = nullptr);
  Quality evaluate(const ParamVector& adapter, const NodeData& node, bool accuracy);
  double base_perplexity(const NodeData& node);
  // Personalization: the held-out rows of every node together (built by
  // build_context when the scenario personalizes, also on node hosts, which
  // keep only their own nodes' other data), and an adapter's perplexity on it.
  const training::TokenDataset& pooled_eval_set() const { return pooled_eval_; }
  void set_pooled_eval_set(training::TokenDataset set) { pooled_eval_ = std::move(set); }
  double pooled_perplexity(const ParamVector& adapter);
  void enable_memo(bool on) { memo_on_ = on; }
  // Whether node n's held-out quality is measured ([training] eval_nodes: a
  // seeded sample, the same in every process); evaluated_nodes() counts them.
  bool evaluated(int n) const { return eval_sample_.empty() || eval_sample_[static_cast<std::size_t>(n)] != 0; }
  int evaluated_nodes() const;
  NodeStateStats node_state;  // reset by run_federated, filled by this process's blocks

  void progress(const std::string& line) const;
  std::function<void(const std::string&)> progress_sink;
  // RunOptions::on_wire: the coordinator side shows it every message it
  // receives and sends (levels 4/5, synchronous rounds).
  std::function<void(int level, bool from_node, const Delivery& message)> wire_tap;

 private:
  // Every node's round makes and ends a trainer; without this, each end
  // would trim the heap and the next node's steps fault it back in (about
  // a fifth of a 1,000-node round's time went to page faults).
  training::RetainFreedMemory retain_freed_memory_;
  const Scenario& scenario_;
  std::vector<NodeData> nodes_;
  inference::Model model_;
  inference::Tokenizer tokenizer_;
  ParamVector initial_;
  node::RankAggregation rank_aggregation_ = node::RankAggregation::kNone;
  node::LoraLayout lora_pairs_;  // the adapter's LoRA pairs (heterogeneous ranks and shared-a only)
  ParamLayout dense_layout_;            // FlexLoRA: one out x in tensor per pair
  bool shares_a_only_ = false;
  ParamLayout a_layout_;                // shared-a: the A entries, the federated vector's layout
  std::vector<float> initial_b_;        // shared-a: the initial adapter's B (zeros), a node's B before its first round
  bool scaffold_ = false;
  ParamLayout scaffold_layout_;         // SCAFFOLD: the adapter's entries, then "scaffold.c/" ones
  double lora_scaling_ = 1.0;           // alpha / R
  std::int64_t base_parameters_ = 0;
  node::LocalTrainerOptions round_options_;  // the local step's settings the plan does not carry
  bool memo_on_ = false;
  std::vector<std::uint8_t> eval_sample_;  // empty: every node
  training::TokenDataset pooled_eval_;
  std::map<std::string, node::LocalTrainResult> round_memo_;
};

// Serving under a level: latency per request and outage behaviour, from FLOP
// counts on the profiles and the network's transfer times.
struct ServingOutcome {
  std::vector<double> ttft_s, tpot_s;  // served requests
  int outage_requests = 0, outage_served = 0;
  std::uint64_t bytes_up = 0, bytes_down = 0, raw_bytes = 0;
  double node_compute_s = 0, server_compute_s = 0;
};
ServingOutcome serve(const Context& ctx, int level, const NodeData& node);

double percentile(std::vector<double> values, double p);

// FNV-1a 64 over raw bytes, continuing from `h`: the memo key of a training
// call and the digests node hosts compare (not adversarial, only to tell runs apart).
inline constexpr std::uint64_t kFnvOffset = 1469598103934665603ull;
std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t h = kFnvOffset);

// Builds the run's shared state: the data split (every process derives the same
// one from the scenario's seed), the base model and tokenised node data. With a
// block [first, end), the other nodes' records are dropped before tokenising:
// a node host keeps only its own nodes' data.
std::unique_ptr<Context> build_context(const Scenario& scenario, std::optional<std::pair<int, int>> block = {});

// A digest of the base model's weights, to check that every process of a
// distributed run uses the same base (FNV-1a 64, hex).
std::string base_digest(const Context& ctx);
// A digest of the records of nodes [first, end): the same scenario text and
// seed must give every process the same split.
std::string split_digest(const Context& ctx, int first, int end);

}  // namespace fedge::sims::detail
