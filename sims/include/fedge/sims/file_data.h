// Your own data in a simulation ([data] source = "files"): sites read from the
// files a scenario names, each site's records split into training and held-out
// ones, and the sites dealt over the virtual nodes by the same partitioners
// (iid, dirichlet, by-site) as the generator's sites. docs/SIMULATOR.md, "Your
// own data", describes the formats and the split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fedge/sims/partition.h"
#include "fedge/sims/scenario.h"
#include "fedge/training/data_files.h"

namespace fedge::sims {

struct FileSite {
  std::string name;    // the file's name (files = [...]) or the site column's value
  std::string origin;  // the file it came from, for messages
  std::vector<training::Record> train, eval;
};

// Reads every file of `data` (a bad record is an Error(kInvalidInput) naming
// file:line), groups the records by site in order of first appearance, keeps a
// seeded sample of max_records_per_site per site, and holds out eval_fraction of
// each site's records by a seeded shuffle (training::split_records). The
// records depend on `seed` only: pass the scenario's seed, so every seed index
// of a run sees the same sites. A site with fewer than two records, or none
// left to train on, is an Error(kInvalidInput) naming it and its file.
std::vector<FileSite> load_file_sites(const DataSettings& data, std::uint64_t seed);

struct NodeRecords {
  std::vector<training::Record> train, eval;
};

// Deals the sites' training records over `nodes` nodes (key = site; seeded by
// options.seed) and their held-out records by the same plan, as the generator's
// rows are dealt: a node is evaluated on data like its own. A node the plan
// leaves without held-out records is evaluated on its first site's. When a node
// would hold fewer than options.min_per_node training records the
// Error(kInvalidInput) names the site(s) it would get.
std::vector<NodeRecords> split_file_sites(const std::vector<FileSite>& sites, int nodes,
                                          const PartitionOptions& options);

}  // namespace fedge::sims
