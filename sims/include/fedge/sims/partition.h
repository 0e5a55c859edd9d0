// Splitting a data set over virtual nodes. Items carry a key (the site they
// came from, or a label); a plan gives, per key, the share of its items each
// node gets, and applying it deals the items out. The same plan splits the
// training and the held-out items, so a node is evaluated on data like its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fedge::sims {

enum class PartitionKind {
  kIid,        // every node an equal share of every key
  kDirichlet,  // per key, shares over nodes ~ Dirichlet(alpha) (Hsu et al. 2019)
  kBySite,     // the generator's natural split: key k to node k % nodes (or shared
               // equally by the nodes mapped to it when there are more nodes than keys)
};

PartitionKind parse_partition_kind(const std::string& name);  // "iid", "dirichlet", "by-site"
std::string partition_kind_name(PartitionKind kind);

struct PartitionOptions {
  PartitionKind kind = PartitionKind::kIid;
  double alpha = 0.5;     // Dirichlet concentration; small = skewed
  int min_per_node = 1;   // items each node must get; Dirichlet redraws until it holds
  int max_draws = 1000;   // Dirichlet redraws before giving up
  std::uint64_t seed = 0;
};

// shares[key][node]: fraction of key's items that go to node (each row sums to 1).
struct PartitionPlan {
  int nodes = 0;
  std::vector<std::vector<double>> shares;
};

// A plan for `nodes` nodes over keys 0..num_keys-1.
PartitionPlan make_plan(int num_keys, int nodes, const PartitionOptions& options);

// Deals item indices out by the plan: for each key, its items in a seeded
// shuffle, cut at the cumulative shares. Returns per node the sorted indices.
std::vector<std::vector<std::size_t>> apply_plan(const PartitionPlan& plan, std::span<const int> keys,
                                                 std::uint64_t seed);

// make_plan + apply_plan, checking that every node gets at least min_per_node
// items (Dirichlet redraws up to max_draws times). Error(kInvalidInput) when it
// cannot, e.g. more nodes than items.
struct Partition {
  PartitionPlan plan;
  std::vector<std::vector<std::size_t>> per_node;
};
Partition partition(std::span<const int> keys, int num_keys, int nodes, const PartitionOptions& options);

}  // namespace fedge::sims
