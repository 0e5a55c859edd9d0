#include "fedge/sims/partition.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"

namespace fedge::sims {

PartitionKind parse_partition_kind(const std::string& name) {
  if (name == "iid") return PartitionKind::kIid;
  if (name == "dirichlet") return PartitionKind::kDirichlet;
  if (name == "by-site") return PartitionKind::kBySite;
  throw Error(ErrorKind::kInvalidInput, "unknown partitioner '" + name + "' (known: iid, dirichlet, by-site)");
}

std::string partition_kind_name(PartitionKind kind) {
  switch (kind) {
    case PartitionKind::kIid: return "iid";
    case PartitionKind::kDirichlet: return "dirichlet";
    case PartitionKind::kBySite: return "by-site";
  }
  return "?";
}

namespace {

std::vector<double> dirichlet(int n, double alpha, Rng& rng) {
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<double> v(n);
  double sum = 0;
  for (auto& x : v) sum += (x = gamma(rng));
  if (sum <= 0) {  // every draw underflowed (tiny alpha): put the key on one node
    std::fill(v.begin(), v.end(), 0.0);
    v[rng.below(n)] = 1.0;
    return v;
  }
  for (auto& x : v) x /= sum;
  return v;
}

}  // namespace

PartitionPlan make_plan(int num_keys, int nodes, const PartitionOptions& options) {
  if (nodes < 1 || num_keys < 1) {
    throw Error(ErrorKind::kInvalidInput, "partition: need at least one node and one key (got " +
                                              std::to_string(nodes) + " nodes, " + std::to_string(num_keys) + " keys)");
  }
  PartitionPlan plan{nodes, std::vector<std::vector<double>>(num_keys, std::vector<double>(nodes, 0.0))};
  Rng rng(options.seed, "partition/plan");
  for (int k = 0; k < num_keys; ++k) {
    auto& row = plan.shares[k];
    switch (options.kind) {
      case PartitionKind::kIid:
        std::fill(row.begin(), row.end(), 1.0 / nodes);
        break;
      case PartitionKind::kDirichlet:
        if (!(options.alpha > 0)) throw Error(ErrorKind::kInvalidInput, "partition: dirichlet alpha must be > 0");
        row = dirichlet(nodes, options.alpha, rng);
        break;
      case PartitionKind::kBySite: {
        // Nodes n with n % num_keys == k share key k; with fewer nodes than keys
        // node k % nodes takes it whole.
        std::vector<int> owners;
        for (int n = k % nodes; n < nodes; n += num_keys) owners.push_back(n);
        if (nodes <= num_keys) owners = {k % nodes};
        for (int n : owners) row[n] = 1.0 / owners.size();
        break;
      }
    }
  }
  return plan;
}

std::vector<std::vector<std::size_t>> apply_plan(const PartitionPlan& plan, std::span<const int> keys,
                                                 std::uint64_t seed) {
  const int num_keys = static_cast<int>(plan.shares.size());
  std::vector<std::vector<std::size_t>> by_key(num_keys);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] < 0 || keys[i] >= num_keys) {
      throw Error(ErrorKind::kInvalidInput, "partition: item " + std::to_string(i) + " has key " +
                                                std::to_string(keys[i]) + " outside 0.." + std::to_string(num_keys - 1));
    }
    by_key[keys[i]].push_back(i);
  }
  std::vector<std::vector<std::size_t>> out(plan.nodes);
  for (int k = 0; k < num_keys; ++k) {
    auto& items = by_key[k];
    Rng rng(seed, "partition/items/" + std::to_string(k));
    std::shuffle(items.begin(), items.end(), rng);
    double cumulative = 0;
    std::size_t begin = 0;
    for (int n = 0; n < plan.nodes; ++n) {
      cumulative += plan.shares[k][n];
      std::size_t end = n + 1 == plan.nodes ? items.size()
                                            : std::min(items.size(), static_cast<std::size_t>(std::llround(
                                                                         cumulative * items.size())));
      end = std::max(end, begin);
      out[n].insert(out[n].end(), items.begin() + begin, items.begin() + end);
      begin = end;
    }
  }
  for (auto& v : out) std::sort(v.begin(), v.end());
  return out;
}

Partition partition(std::span<const int> keys, int num_keys, int nodes, const PartitionOptions& options) {
  if (static_cast<std::size_t>(nodes) * std::max(options.min_per_node, 1) > keys.size()) {
    throw Error(ErrorKind::kInvalidInput,
                "partition: " + std::to_string(nodes) + " nodes with at least " +
                    std::to_string(std::max(options.min_per_node, 1)) + " item(s) each need more than the " +
                    std::to_string(keys.size()) + " items there are (fewer nodes or more data)");
  }
  int draws = options.kind == PartitionKind::kDirichlet ? options.max_draws : 1;
  PartitionOptions attempt = options;
  std::size_t fewest = 0;
  for (int d = 0; d < draws; ++d) {
    attempt.seed = d == 0 ? options.seed : derive_seed(options.seed, static_cast<std::uint64_t>(d));
    Partition p{make_plan(num_keys, nodes, attempt), {}};
    p.per_node = apply_plan(p.plan, keys, attempt.seed);
    fewest = keys.size();
    for (const auto& v : p.per_node) fewest = std::min(fewest, v.size());
    if (fewest >= static_cast<std::size_t>(options.min_per_node)) return p;
  }
  throw Error(ErrorKind::kInvalidInput,
              "partition: " + partition_kind_name(options.kind) + " over " + std::to_string(nodes) +
                  " nodes leaves a node with " + std::to_string(fewest) + " item(s), below min_per_node = " +
                  std::to_string(options.min_per_node) + " (after " + std::to_string(draws) +
                  " draw(s)); raise alpha, lower min_per_node, or use fewer nodes");
}

}  // namespace fedge::sims
