#include "fedge/aggregation/strategy.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>

#include "fedge/common/error.h"

namespace fedge::aggregation {
namespace {

using VecD = Eigen::VectorXd;
using MapF = Eigen::Map<const Eigen::VectorXf>;

[[noreturn]] void bad(const std::string& msg) { throw Error(ErrorKind::kInvalidInput, msg); }

void check_updates(std::span<const float> global, std::span<const ClientUpdate> updates) {
  if (updates.empty()) bad("aggregation: no client updates to aggregate");
  for (std::size_t i = 0; i < updates.size(); ++i) {
    if (updates[i].update.size() != global.size())
      bad("aggregation: update " + std::to_string(i) + " has " + std::to_string(updates[i].update.size()) +
          " values, the global vector has " + std::to_string(global.size()));
    if (!(updates[i].num_examples > 0)) bad("aggregation: update " + std::to_string(i) + " has a non-positive weight");
  }
}

double param(const StrategyParams& p, const char* key, double def) {
  auto it = p.find(key);
  return it == p.end() ? def : it->second;
}

std::vector<float> add(std::span<const float> global, const VecD& delta) {
  std::vector<float> out(global.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(global[i] + delta[i]);
  return out;
}

class FedAvg : public Strategy {
 public:
  std::string name() const override { return "fedavg"; }
};

// FedProx (Li et al. 2020): the proximal term lives in the clients' loss; the
// server aggregates as FedAvg and only carries mu into the round plan.
class FedProx : public FedAvg {
 public:
  explicit FedProx(double mu) : mu_(mu) {
    if (!(mu >= 0)) bad("fedprox: proximal_mu must be >= 0");
  }
  std::string name() const override { return "fedprox"; }
  double proximal_mu() const override { return mu_; }

 private:
  double mu_;
};

std::vector<double> to_std(const VecD& v) { return {v.data(), v.data() + v.size()}; }
VecD to_eigen(const std::vector<double>& v) { return Eigen::Map<const VecD>(v.data(), static_cast<Eigen::Index>(v.size())); }

// A saved state must hold exactly `names`, all of one length.
void check_state(const std::string& strategy, const StrategyState& state, const std::vector<std::string>& names) {
  std::string keeps;
  for (const auto& n : names) keeps += (keeps.empty() ? "" : ", ") + n;
  for (const auto& [name, values] : state) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      bad(strategy + ": the saved server state has an entry '" + name + "' this strategy does not keep (it keeps: " +
          (keeps.empty() ? "nothing" : keeps) + "); was it saved by another strategy?");
    }
  }
  for (const auto& n : names) {
    if (!state.count(n)) bad(strategy + ": the saved server state lacks its entry '" + n + "'");
    if (state.at(n).size() != state.at(names.front()).size()) {
      bad(strategy + ": the saved server state's entries '" + names.front() + "' and '" + n + "' differ in length");
    }
  }
}

}  // namespace

void Strategy::restore(const StrategyState& state) {
  if (!state.empty()) check_state(name(), state, {});
}

namespace {

class FedAvgM : public Strategy {
 public:
  FedAvgM(double lr, double momentum) : lr_(lr), momentum_(momentum) {}
  std::string name() const override { return "fedavgm"; }
  StrategyState state() const override { return v_.size() ? StrategyState{{"v", to_std(v_)}} : StrategyState{}; }
  bool keeps_state() const override { return true; }
  void restore(const StrategyState& state) override {
    if (state.empty()) return;
    check_state(name(), state, {"v"});
    v_ = to_eigen(state.at("v"));
  }

 protected:
  std::vector<float> apply(std::span<const float> global, std::span<const double> mean) override {
    Eigen::Map<const VecD> delta(mean.data(), mean.size());
    // Flower: pseudo-gradient g = -delta; v = momentum v + g; x -= lr v.
    if (v_.size() != delta.size()) v_ = VecD::Zero(delta.size());
    v_ = momentum_ * v_ - delta;
    return add(global, -lr_ * v_);
  }

 private:
  double lr_, momentum_;
  VecD v_;
};

// FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021, as in Flower's FedOpt).
class FedOpt : public Strategy {
 public:
  enum class Kind { kAdam, kYogi, kAdagrad };
  FedOpt(Kind kind, double eta, double b1, double b2, double tau)
      : kind_(kind), eta_(eta), b1_(b1), b2_(b2), tau_(tau) {}
  std::string name() const override {
    return kind_ == Kind::kAdam ? "fedadam" : kind_ == Kind::kYogi ? "fedyogi" : "fedadagrad";
  }
  StrategyState state() const override {
    return m_.size() ? StrategyState{{"m", to_std(m_)}, {"v", to_std(v_)}} : StrategyState{};
  }
  bool keeps_state() const override { return true; }
  void restore(const StrategyState& state) override {
    if (state.empty()) return;
    check_state(name(), state, {"m", "v"});
    m_ = to_eigen(state.at("m"));
    v_ = to_eigen(state.at("v"));
  }

 protected:
  std::vector<float> apply(std::span<const float> global, std::span<const double> mean) override {
    Eigen::Map<const VecD> delta(mean.data(), mean.size());
    if (m_.size() != delta.size()) {
      m_ = VecD::Zero(delta.size());
      v_ = VecD::Zero(delta.size());
    }
    m_ = b1_ * m_ + (1 - b1_) * delta;
    const VecD d2 = delta.array().square();
    switch (kind_) {
      case Kind::kAdam: v_ = b2_ * v_ + (1 - b2_) * d2; break;
      case Kind::kYogi: v_ = v_.array() - (1 - b2_) * d2.array() * (v_ - d2).array().sign(); break;
      case Kind::kAdagrad: v_ = v_ + d2; break;
    }
    const VecD step = eta_ * m_.array() / (v_.array().sqrt() + tau_);
    return add(global, step);
  }

 private:
  Kind kind_;
  double eta_, b1_, b2_, tau_;
  VecD m_, v_;
};

// Base for strategies that look at each update on its own.
class Robust : public Strategy {
 public:
  bool needs_individual_updates() const override { return true; }
  std::vector<float> aggregate_sum(std::span<const float>, std::span<const float>, double) override {
    bad(name() + " needs each client's update on its own and cannot run under secure aggregation "
                 "(the server only sees the sum); turn secure aggregation off or choose fedavg, fedavgm, "
                 "fedadam, fedyogi or fedadagrad");
  }
};

class FedMedian : public Robust {
 public:
  std::string name() const override { return "fedmedian"; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    check_updates(global, updates);
    const std::size_t n = updates.size();
    std::vector<double> col(n), mean(global.size());
    for (std::size_t j = 0; j < global.size(); ++j) {
      for (std::size_t i = 0; i < n; ++i) col[i] = updates[i].update[j];
      std::sort(col.begin(), col.end());
      mean[j] = n % 2 ? col[n / 2] : 0.5 * (col[n / 2 - 1] + col[n / 2]);
    }
    return apply(global, mean);
  }
};

class FedTrimmedAvg : public Robust {
 public:
  explicit FedTrimmedAvg(double beta) : beta_(beta) {
    if (!(beta >= 0 && beta < 0.5)) bad("fedtrimmedavg: beta must be in [0, 0.5)");
  }
  std::string name() const override { return "fedtrimmedavg"; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    check_updates(global, updates);
    const std::size_t n = updates.size();
    const auto cut = static_cast<std::size_t>(beta_ * static_cast<double>(n));  // per end, as scipy's trim_mean
    std::vector<double> col(n), mean(global.size());
    for (std::size_t j = 0; j < global.size(); ++j) {
      for (std::size_t i = 0; i < n; ++i) col[i] = updates[i].update[j];
      std::sort(col.begin(), col.end());
      mean[j] = std::accumulate(col.begin() + cut, col.end() - cut, 0.0) / static_cast<double>(n - 2 * cut);
    }
    return apply(global, mean);
  }

 private:
  double beta_;
};

// Squared Euclidean distances between every pair of updates.
Eigen::MatrixXd squared_distances(std::span<const float> global, std::span<const ClientUpdate> updates) {
  const std::size_t n = updates.size();
  Eigen::MatrixXd dist(n, n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i; j < n; ++j)
      dist(i, j) = dist(j, i) = (MapF(updates[i].update.data(), global.size()) -
                                 MapF(updates[j].update.data(), global.size())).cast<double>().squaredNorm();
  return dist;
}

// Krum's order of `members` (indices into dist), best first: each scored by
// the sum of squared distances to its max(1, m - f - 2) closest other members
// (as Flower counts them); equal scores keep the members' order.
std::vector<std::size_t> krum_order(const Eigen::MatrixXd& dist, const std::vector<std::size_t>& members,
                                    std::size_t f) {
  const std::size_t m = members.size();
  const std::size_t closest = m > f + 3 ? m - f - 2 : 1;
  std::vector<std::pair<double, std::size_t>> scores;  // (score, position in members)
  std::vector<double> d;
  for (std::size_t a = 0; a < m; ++a) {
    d.clear();
    for (std::size_t b = 0; b < m; ++b)
      if (b != a) d.push_back(dist(members[a], members[b]));
    std::sort(d.begin(), d.end());
    scores.push_back({std::accumulate(d.begin(), d.begin() + std::min(closest, d.size()), 0.0), a});
  }
  std::sort(scores.begin(), scores.end());
  std::vector<std::size_t> order;
  for (const auto& sc : scores) order.push_back(members[sc.second]);
  return order;
}

std::vector<std::size_t> all_indices(std::size_t n) {
  std::vector<std::size_t> v(n);
  std::iota(v.begin(), v.end(), std::size_t{0});
  return v;
}

class Krum : public Robust {
 public:
  Krum(std::size_t malicious, std::size_t keep) : f_(malicious), m_(keep) {}
  std::string name() const override { return m_ > 0 ? "multikrum" : "krum"; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    check_updates(global, updates);
    const std::size_t n = updates.size();
    if (n < f_ + 3) bad("krum: needs at least num_malicious + 3 updates, got " + std::to_string(n));
    const std::vector<std::size_t> order = krum_order(squared_distances(global, updates), all_indices(n), f_);
    const std::size_t keep = m_ > 0 ? std::min(m_, n) : 1;
    std::vector<double> mean(global.size(), 0.0);
    for (std::size_t s = 0; s < keep; ++s)
      for (std::size_t j = 0; j < global.size(); ++j) mean[j] += updates[order[s]].update[j];
    for (double& v : mean) v /= static_cast<double>(keep);
    return apply(global, mean);
  }

 private:
  std::size_t f_, m_;
};

// Bulyan (El Mhamdi, Guerraoui, Rouault 2018), as Flower runs it with Krum:
// Krum picks theta = n - 2f updates one at a time from the ones not yet
// picked; then each coordinate is the mean of the beta = theta - 2f picked
// values nearest the picked values' median (ties: the earlier pick). Example
// counts are not used, as in Flower.
class Bulyan : public Robust {
 public:
  explicit Bulyan(std::size_t malicious) : f_(malicious) {}
  std::string name() const override { return "bulyan"; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    check_updates(global, updates);
    const std::size_t n = updates.size();
    if (n < 4 * f_ + 3)
      bad("bulyan: needs at least 4 * num_malicious + 3 updates (" + std::to_string(4 * f_ + 3) + "), got " +
          std::to_string(n) + "; lower num_malicious or select more nodes per round");
    const Eigen::MatrixXd dist = squared_distances(global, updates);
    std::vector<std::size_t> left = all_indices(n), picked;
    while (picked.size() < n - 2 * f_) {
      const std::size_t best = krum_order(dist, left, f_).front();
      picked.push_back(best);
      left.erase(std::find(left.begin(), left.end(), best));
    }
    const std::size_t beta = picked.size() - 2 * f_;
    std::vector<double> col(picked.size()), sorted(picked.size()), mean(global.size());
    std::vector<std::size_t> nearest(picked.size());
    for (std::size_t j = 0; j < global.size(); ++j) {
      for (std::size_t p = 0; p < picked.size(); ++p) col[p] = updates[picked[p]].update[j];
      sorted = col;
      std::sort(sorted.begin(), sorted.end());
      const std::size_t k = sorted.size();
      const double median = k % 2 ? sorted[k / 2] : 0.5 * (sorted[k / 2 - 1] + sorted[k / 2]);
      std::iota(nearest.begin(), nearest.end(), std::size_t{0});
      std::stable_sort(nearest.begin(), nearest.end(), [&](std::size_t a, std::size_t b) {
        return std::fabs(col[a] - median) < std::fabs(col[b] - median);
      });
      double sum = 0;
      for (std::size_t q = 0; q < beta; ++q) sum += col[nearest[q]];
      mean[j] = sum / static_cast<double>(beta);
    }
    return apply(global, mean);
  }

 private:
  std::size_t f_;
};

// q-FedAvg (Li, Sanjabi, Beirami, Smith 2020, "Fair Resource Allocation in
// Federated Learning", Algorithm 2), with Flower's parameter names. With
// L = 1 / qffl_learning_rate and each node's dw_k = L (w - w_k) = -L u_k:
//   delta_k = F_k^q dw_k,  h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q,
//   w' = w - sum_k delta_k / sum_k h_k.
// F_k is the node's mean training loss of the round (the paper's F_k(w) is the
// loss at the global before training; the round reports the mean over its
// local steps, which starts there). q = 0 is the unweighted mean update.
// Example counts are not used, as in the paper and Flower.
class QFedAvg : public Robust {
 public:
  QFedAvg(double q, double lr) : q_(q), lipschitz_(1.0 / lr) {
    if (!(q >= 0) || !std::isfinite(q)) bad("qfedavg: q_param must be >= 0");
    if (!(lr > 0) || !std::isfinite(lr)) bad("qfedavg: qffl_learning_rate must be > 0");
  }
  std::string name() const override { return "qfedavg"; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    check_updates(global, updates);
    std::vector<double> step(global.size(), 0.0);
    double h = 0;
    for (std::size_t k = 0; k < updates.size(); ++k) {
      const double loss = updates[k].loss;
      if (!(loss > 0) || !std::isfinite(loss))
        bad("qfedavg: update " + std::to_string(k) + " carries no positive training loss (" + std::to_string(loss) +
            "); q-FedAvg weighs each node by its loss");
      const double fq = std::pow(loss, q_);
      double norm2 = 0;
      for (float u : updates[k].update) norm2 += lipschitz_ * lipschitz_ * double(u) * u;
      // -delta_k = F^q * L * u_k: the step towards the node's local model.
      for (std::size_t j = 0; j < step.size(); ++j) step[j] += fq * lipschitz_ * updates[k].update[j];
      h += q_ * std::pow(loss, q_ - 1.0) * norm2 + lipschitz_ * fq;
    }
    for (double& v : step) v /= h;
    return apply(global, step);
  }

 private:
  double q_, lipschitz_;
};

// SCAFFOLD (Karimireddy et al. 2020, "Stochastic Controlled Averaging for
// Federated Learning", Algorithm 1, server side). The federated vector is
// [x ; c]: the model and the server control variate, halves of one layout.
// Each node sends [y_i - x ; c_i+ - c_i], weighted by its examples like any
// update, so one secure sum carries both halves. From their weighted means:
//   x += global_learning_rate * mean(dy),   c += |S| / N * mean(dc),
// where |S| counts the round's updates and N every node (num_nodes): c stays
// the mean of all nodes' c_i when each node's weight is equal.
class Scaffold : public Strategy {
 public:
  Scaffold(double lr, std::size_t nodes) : lr_(lr), nodes_(nodes) {
    if (!(lr > 0) || !std::isfinite(lr)) bad("scaffold: global_learning_rate must be > 0");
  }
  std::string name() const override { return "scaffold"; }
  void set_round_participants(std::size_t participants) override { participants_ = participants; }
  std::vector<float> aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) override {
    participants_ = updates.size();
    return Strategy::aggregate(global, updates);
  }

 protected:
  std::vector<float> apply(std::span<const float> global, std::span<const double> mean) override {
    const std::size_t participants = participants_;
    participants_ = 0;  // told again every round: a stale count is never reused
    if (global.size() % 2)
      bad("scaffold: the global vector has " + std::to_string(global.size()) +
          " values, an odd number; it must be [x ; c], the model and its control variate of the same length");
    if (nodes_ == 0)
      bad("scaffold: num_nodes (N, every node of the federation) is not set; the simulator sets it from [nodes] "
          "count");
    if (participants == 0)
      bad("scaffold: the number of updates in the secure sum is unknown (set_round_participants was not called)");
    if (participants > nodes_)
      bad("scaffold: " + std::to_string(participants) + " updates in a round of a federation of num_nodes = " +
          std::to_string(nodes_));
    const std::size_t half = global.size() / 2;
    const double share = static_cast<double>(participants) / static_cast<double>(nodes_);
    std::vector<float> out(global.size());
    for (std::size_t i = 0; i < half; ++i) {
      out[i] = static_cast<float>(global[i] + lr_ * mean[i]);
      out[half + i] = static_cast<float>(global[half + i] + share * mean[half + i]);
    }
    return out;
  }

 private:
  double lr_;
  std::size_t nodes_;
  std::size_t participants_ = 0;
};

}  // namespace

std::vector<float> Strategy::apply(std::span<const float> global, std::span<const double> mean_update) {
  return add(global, Eigen::Map<const VecD>(mean_update.data(), mean_update.size()));
}

std::vector<float> Strategy::aggregate(std::span<const float> global, std::span<const ClientUpdate> updates) {
  return apply(global, weighted_mean_update(global, updates));
}

std::vector<float> Strategy::aggregate_sum(std::span<const float> global, std::span<const float> weighted_sum,
                                           double total_weight) {
  if (weighted_sum.size() != global.size())
    bad("aggregation: summed update has " + std::to_string(weighted_sum.size()) + " values, the global vector has " +
        std::to_string(global.size()));
  if (!(total_weight > 0)) bad("aggregation: total weight of the summed update must be positive");
  std::vector<double> mean(weighted_sum.begin(), weighted_sum.end());
  for (double& v : mean) v /= total_weight;
  return apply(global, mean);
}

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, StrategyFactory> factories;
};

std::size_t count(const StrategyParams& p, const char* key, double def, const std::string& strategy) {
  const double v = param(p, key, def);
  if (!(v >= 0) || v != std::floor(v) || v > 1e6) bad(strategy + ": " + key + " must be a whole number >= 0");
  return static_cast<std::size_t>(v);
}

void add_builtins(std::map<std::string, StrategyFactory>& f) {
  f["fedavg"] = {{}, [](const StrategyParams&) { return std::make_unique<FedAvg>(); }, "FedAvg (McMahan et al. 2017)"};
  f["fedprox"] = {{"proximal_mu"},
                  [](const StrategyParams& p) { return std::make_unique<FedProx>(param(p, "proximal_mu", 0.01)); },
                  "FedAvg with the clients' proximal term (Li et al. 2020)"};
  f["fedavgm"] = {{"server_learning_rate", "server_momentum"},
                  [](const StrategyParams& p) {
                    return std::make_unique<FedAvgM>(param(p, "server_learning_rate", 1.0),
                                                     param(p, "server_momentum", 0.9));
                  },
                  "FedAvg with server momentum (Hsu et al. 2019)"};
  f["fedadam"] = {{"eta", "beta_1", "beta_2", "tau"},
                  [](const StrategyParams& p) {
                    return std::make_unique<FedOpt>(FedOpt::Kind::kAdam, param(p, "eta", 0.1), param(p, "beta_1", 0.9),
                                                    param(p, "beta_2", 0.99), param(p, "tau", 1e-9));
                  },
                  "server Adam (Reddi et al. 2021)"};
  f["fedyogi"] = {{"eta", "beta_1", "beta_2", "tau"},
                  [](const StrategyParams& p) {
                    return std::make_unique<FedOpt>(FedOpt::Kind::kYogi, param(p, "eta", 0.01), param(p, "beta_1", 0.9),
                                                    param(p, "beta_2", 0.99), param(p, "tau", 1e-3));
                  },
                  "server Yogi (Reddi et al. 2021)"};
  f["fedadagrad"] = {{"eta", "beta_1", "tau"},
                     [](const StrategyParams& p) {
                       return std::make_unique<FedOpt>(FedOpt::Kind::kAdagrad, param(p, "eta", 0.1),
                                                       param(p, "beta_1", 0.0), 0.0, param(p, "tau", 1e-9));
                     },
                     "server Adagrad (Reddi et al. 2021)"};
  f["fedmedian"] = {{}, [](const StrategyParams&) { return std::make_unique<FedMedian>(); },
                    "coordinate-wise median (Yin et al. 2018)"};
  f["fedtrimmedavg"] = {{"beta"},
                        [](const StrategyParams& p) { return std::make_unique<FedTrimmedAvg>(param(p, "beta", 0.2)); },
                        "coordinate-wise trimmed mean (Yin et al. 2018)"};
  f["krum"] = {{"num_malicious", "num_to_keep"},
               [](const StrategyParams& p) {
                 return std::make_unique<Krum>(count(p, "num_malicious", 0, "krum"), count(p, "num_to_keep", 0, "krum"));
               },
               "Krum / Multi-Krum (Blanchard et al. 2017)"};
  f["bulyan"] = {{"num_malicious"},
                 [](const StrategyParams& p) { return std::make_unique<Bulyan>(count(p, "num_malicious", 1, "bulyan")); },
                 "Bulyan over Krum (El Mhamdi et al. 2018)"};
  f["qfedavg"] = {{"q_param", "qffl_learning_rate"},
                  [](const StrategyParams& p) {
                    return std::make_unique<QFedAvg>(param(p, "q_param", 0.2), param(p, "qffl_learning_rate", 0.1));
                  },
                  "q-FedAvg, loss-weighted for fairness (Li et al. 2020)"};
  f["scaffold"] = {{"global_learning_rate", "num_nodes"},
                   [](const StrategyParams& p) {
                     return std::make_unique<Scaffold>(param(p, "global_learning_rate", 1.0),
                                                       count(p, "num_nodes", 0, "scaffold"));
                   },
                   "SCAFFOLD, control variates against client drift (Karimireddy et al. 2020)"};
}

// Function-local so plug-ins registering at static initialisation, in any
// order of translation units, find it built.
Registry& registry() {
  static Registry* r = [] {
    auto* made = new Registry;
    add_builtins(made->factories);
    return made;
  }();
  return *r;
}

bool valid_strategy_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         std::all_of(name.begin(), name.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
}

std::string joined_names() {
  std::string out;
  for (const std::string& n : strategy_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

void register_strategy(const std::string& name, StrategyFactory factory) {
  if (!valid_strategy_name(name))
    bad("strategy name '" + name + "' must be 1-64 lower-case letters, digits or '_'");
  if (!factory.make) bad("strategy '" + name + "' was registered without a make function");
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (!r.factories.emplace(name, std::move(factory)).second)
    bad("strategy '" + name + "' is registered twice; give the plug-in another name");
}

std::vector<std::string> strategy_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

std::vector<double> weighted_mean_update(std::span<const float> global, std::span<const ClientUpdate> updates) {
  check_updates(global, updates);
  std::vector<double> mean(global.size(), 0.0);
  double total = 0;
  for (const auto& u : updates) {
    total += u.num_examples;
    for (std::size_t j = 0; j < global.size(); ++j) mean[j] += u.num_examples * u.update[j];
  }
  for (double& v : mean) v /= total;
  return mean;
}

std::unique_ptr<Strategy> make_strategy(const std::string& name, const StrategyParams& params,
                                        bool secure_aggregation) {
  std::optional<StrategyFactory> factory;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    if (auto it = r.factories.find(name); it != r.factories.end()) factory = it->second;
  }
  if (!factory) bad("unknown aggregation strategy '" + name + "'; choose " + joined_names());
  for (const auto& [k, v] : params)
    if (!factory->params.count(k)) bad("strategy '" + name + "' has no parameter '" + k + "'");
  std::unique_ptr<Strategy> s = factory->make(params);
  if (!s) bad("strategy '" + name + "': its factory made nothing");
  if (secure_aggregation && s->needs_individual_updates())
    bad("strategy '" + name + "' needs each client's update on its own and cannot run with secure aggregation "
        "on; disable secure aggregation or pick fedavg, fedavgm, fedadam, fedyogi or fedadagrad");
  return s;
}

}  // namespace fedge::aggregation
