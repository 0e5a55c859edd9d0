// Server-side aggregation strategies on flat parameter vectors, in the spirit of
// Flower's Strategy: given the current global parameters and the clients'
// updates (local minus global, each with its number of examples) produce the
// new global parameters. Under secure aggregation the server sees only the
// example-weighted sum of updates and the total weight (clients multiply their
// update by their example count before quantising), so only strategies that
// need nothing more (FedAvg and the server optimisers) accept aggregate_sum().
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace fedge::aggregation {

// Server-side state that must outlive the process (a server optimiser's
// moments), by entry name; empty for stateless strategies.
using StrategyState = std::map<std::string, std::vector<double>>;

struct ClientUpdate {
  std::span<const float> update;  // local - global, same length as global
  double num_examples = 1.0;
  // The node's mean training loss of the round (NaN: not reported). Only
  // loss-weighted strategies (qfedavg) read it.
  double loss = std::numeric_limits<double>::quiet_NaN();
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  // True for the robust strategies (median, trimmed mean, Krum): they need each
  // update on its own and cannot run under secure aggregation.
  virtual bool needs_individual_updates() const { return false; }
  // FedProx's proximal coefficient mu that clients add to their local loss
  // (mu/2 ||w - w_global||^2); 0 for every other strategy. Sent in the round plan.
  virtual double proximal_mu() const { return 0.0; }
  // Told by the coordinator before each aggregate()/aggregate_sum(): how many
  // nodes' updates the round combines (|S|; under secure aggregation the sum
  // alone does not say). Only SCAFFOLD reads it; others ignore it.
  virtual void set_round_participants(std::size_t /*participants*/) {}

  // New global from individual updates. Throws Error(kInvalidInput) for no
  // updates, length mismatches, non-positive weights.
  virtual std::vector<float> aggregate(std::span<const float> global,
                                       std::span<const ClientUpdate> updates);
  // New global from a pre-summed update: weighted_sum = sum_i n_i * update_i,
  // total_weight = sum_i n_i (what secure aggregation delivers). Robust
  // strategies throw Error(kInvalidInput) explaining why.
  virtual std::vector<float> aggregate_sum(std::span<const float> global,
                                           std::span<const float> weighted_sum, double total_weight);

  // What a restarted server needs to continue exactly (FedAvgM: "v"; FedAdam,
  // FedYogi, FedAdagrad: "m" and "v"); empty before the first round and for
  // stateless strategies.
  virtual StrategyState state() const { return {}; }
  virtual bool keeps_state() const { return false; }
  // Continues from a saved state() (empty: start fresh). Throws
  // Error(kInvalidInput) naming the entry for entries this strategy does not
  // keep, missing entries, or entries of different lengths.
  virtual void restore(const StrategyState& state);

 protected:
  // Applies the averaged update (the pseudo-gradient's negative) to global.
  // By default adds it, FedAvg's server step; server optimisers (FedAvgM,
  // FedAdam, ...) override it.
  virtual std::vector<float> apply(std::span<const float> global, std::span<const double> mean_update);
};

using StrategyParams = std::map<std::string, double>;

// ---- Plug-ins ----
// Every strategy, built in or not, is found by name in one registry. A user's
// strategy is one C++ file: a Strategy subclass and a StrategyRegistration
// at namespace scope (examples/strategies/normclip.cpp), compiled into the
// programs with the CMake option FEDGE_STRATEGY_PLUGINS (a list of files;
// docs/FEDERATION.md, "Your own strategy"). Its name then works wherever a
// strategy is named: the coordinator's [federation] strategy, a scenario's
// [training] strategy.
struct StrategyFactory {
  std::set<std::string> params;  // the parameter names it accepts (others are refused)
  // Makes one from checked parameters (only names in `params`); throws
  // Error(kInvalidInput) for values out of range.
  std::function<std::unique_ptr<Strategy>(const StrategyParams&)> make;
  std::string summary;  // one line for listings and error messages
};

// Adds `name` (lower-case letters, digits and '_', at most 64 bytes). Throws
// Error(kInvalidInput) for a bad or taken name or a factory without make.
void register_strategy(const std::string& name, StrategyFactory factory);
// Every registered name, sorted.
std::vector<std::string> strategy_names();

// Registers at static initialisation: `const StrategyRegistration kMine{"mine", {...}};`.
struct StrategyRegistration {
  StrategyRegistration(const std::string& name, StrategyFactory factory) {
    register_strategy(name, std::move(factory));
  }
};

// The mean update of individual updates weighted by their example counts:
// what FedAvg applies, for plug-ins that start from it.
std::vector<double> weighted_mean_update(std::span<const float> global, std::span<const ClientUpdate> updates);

// Built-in names: fedavg, fedprox (proximal_mu=0.01; server side is FedAvg), fedavgm (server_learning_rate=1, server_momentum=0.9),
// fedadam (eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-9), fedyogi (eta=0.01,
// beta_1=0.9, beta_2=0.99, tau=1e-3), fedadagrad (eta=0.1, beta_1=0, tau=1e-9),
// fedmedian, fedtrimmedavg (beta=0.2), krum (num_malicious=0,
// num_to_keep=0: 0 = plain Krum, m > 0 = Multi-Krum averaging the m best),
// bulyan (num_malicious=1; El Mhamdi et al. 2018: Krum picks n - 2f updates
// one by one, then each coordinate averages the n - 4f picked values nearest
// its median; needs n >= 4f + 3), qfedavg (q_param=0.2,
// qffl_learning_rate=0.1; Li et al. 2020's q-FedAvg: nodes with a higher loss
// weigh more, by loss^q; needs each node's loss), scaffold
// (global_learning_rate=1, num_nodes=0; Karimireddy et al. 2020: the global
// is [x ; c], the adapter and the server control variate, and each update
// [y_i - x ; c_i+ - c_i]; x += lr_g mean(dy), c += |S|/N mean(dc), N =
// num_nodes, which the caller must set, |S| from set_round_participants or
// the number of updates). Plug-ins add more. Defaults follow Flower. Throws Error(kInvalidInput) for an unknown name or
// parameter, and when `secure_aggregation` is on for a strategy that needs
// individual updates.
std::unique_ptr<Strategy> make_strategy(const std::string& name, const StrategyParams& params = {},
                                        bool secure_aggregation = false);

}  // namespace fedge::aggregation
