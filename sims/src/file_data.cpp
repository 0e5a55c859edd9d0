#include "fedge/sims/file_data.h"

#include <map>
#include <span>

#include <spdlog/spdlog.h>

#include "fedge/common/error.h"
#include "fedge/common/rng.h"
#include "fedge/training/dataset.h"

namespace fedge::sims {
namespace {

namespace fs = std::filesystem;

training::RecordFormat format_of(const DataSettings& data, const fs::path& path) {
  return data.format == "auto" ? training::record_format_of(path) : training::parse_record_format(data.format);
}

struct RawSite {
  std::string name, origin;
  std::vector<training::Record> records;
};

// files = [...]: a site per file, named by the file (its path where two share a name).
std::vector<RawSite> sites_per_file(const DataSettings& data) {
  std::map<std::string, int> name_count;
  for (const auto& f : data.files) ++name_count[f.filename().string()];
  std::vector<RawSite> sites;
  for (const auto& f : data.files) {
    RawSite site{name_count[f.filename().string()] > 1 ? f.string() : f.filename().string(), f.string(), {}};
    for (auto& r : training::read_records(f, format_of(data, f))) site.records.push_back(std::move(r.record));
    sites.push_back(std::move(site));
  }
  return sites;
}

// file + site_column: a site per value of the column, in order of first appearance.
std::vector<RawSite> sites_by_column(const DataSettings& data) {
  std::vector<RawSite> sites;
  std::map<std::string, std::size_t> index;
  for (auto& r : training::read_records(data.file, format_of(data, data.file), data.site_column)) {
    auto [it, added] = index.emplace(r.key, sites.size());
    if (added) sites.push_back({r.key, data.file.string() + " (" + data.site_column + " = " + r.key + ")", {}});
    sites[it->second].records.push_back(std::move(r.record));
  }
  return sites;
}

FileSite split_site(RawSite raw, const DataSettings& data, std::uint64_t seed) {
  const std::string where = "site '" + raw.name + "' (" + raw.origin + ")";
  if (data.max_records_per_site > 0 && raw.records.size() > static_cast<std::size_t>(data.max_records_per_site)) {
    // A seeded sample rather than the file's first records, which may all be alike.
    raw.records = training::split_records(std::move(raw.records), 0.0, derive_seed(seed, "data/sample/" + raw.name)).first;
    raw.records.resize(static_cast<std::size_t>(data.max_records_per_site));
  }
  if (raw.records.size() < 2) {
    throw Error(ErrorKind::kInvalidInput, where + " has " + std::to_string(raw.records.size()) +
                                              " record(s); a site needs at least 2 (one to train on, one held out)");
  }
  auto [train, eval] = training::split_records(std::move(raw.records), data.eval_fraction,
                                               derive_seed(seed, "data/eval/" + raw.name));
  if (train.empty()) {
    throw Error(ErrorKind::kInvalidInput, where + ": eval_fraction = " + std::to_string(data.eval_fraction) +
                                              " holds out all " + std::to_string(eval.size()) +
                                              " of its records; lower it or add records");
  }
  return {std::move(raw.name), std::move(raw.origin), std::move(train), std::move(eval)};
}

std::string site_names(const std::vector<FileSite>& sites, const PartitionPlan& plan, int node) {
  std::string out;
  for (std::size_t k = 0; k < sites.size(); ++k) {
    if (plan.shares[k][static_cast<std::size_t>(node)] <= 0) continue;
    out += (out.empty() ? "" : ", ") + ("'" + sites[k].name + "' (" + std::to_string(sites[k].train.size()) +
                                         " training records, " + sites[k].origin + ")");
  }
  return out.empty() ? "no site" : out;
}

// by-site deals each site whole (or shared by the nodes mapped to it): a node
// short of records is the fault of a site, which the message names.
void check_by_site(const std::vector<FileSite>& sites, std::span<const int> keys, int nodes,
                   const PartitionOptions& options) {
  const PartitionPlan plan = make_plan(static_cast<int>(sites.size()), nodes, options);
  const auto per_node = apply_plan(plan, keys, options.seed);
  for (int n = 0; n < nodes; ++n) {
    if (per_node[static_cast<std::size_t>(n)].size() >= static_cast<std::size_t>(options.min_per_node)) continue;
    throw Error(ErrorKind::kInvalidInput,
                "by-site split: node " + std::to_string(n) + " would hold " +
                    std::to_string(per_node[static_cast<std::size_t>(n)].size()) + " training record(s) from " +
                    site_names(sites, plan, n) + ", below partition.min_per_node = " +
                    std::to_string(options.min_per_node) + " (more records there, fewer nodes, or a lower min_per_node)");
  }
}

}  // namespace

std::vector<FileSite> load_file_sites(const DataSettings& data, std::uint64_t seed) {
  auto raw = data.files.empty() ? sites_by_column(data) : sites_per_file(data);
  std::vector<FileSite> sites;
  std::size_t train = 0, eval = 0;
  for (auto& r : raw) {
    sites.push_back(split_site(std::move(r), data, seed));
    train += sites.back().train.size();
    eval += sites.back().eval.size();
    spdlog::debug("data: site '{}' ({}): {} training, {} held-out records", sites.back().name, sites.back().origin,
                  sites.back().train.size(), sites.back().eval.size());
  }
  spdlog::info("data: {} site(s) from files, {} training and {} held-out records", sites.size(), train, eval);
  return sites;
}

std::vector<NodeRecords> split_file_sites(const std::vector<FileSite>& sites, int nodes,
                                          const PartitionOptions& options) {
  struct Item { std::size_t site, row; };
  std::vector<Item> train_items, eval_items;
  std::vector<int> train_keys, eval_keys;
  for (std::size_t k = 0; k < sites.size(); ++k) {
    for (std::size_t i = 0; i < sites[k].train.size(); ++i) train_items.push_back({k, i}), train_keys.push_back(static_cast<int>(k));
    for (std::size_t i = 0; i < sites[k].eval.size(); ++i) eval_items.push_back({k, i}), eval_keys.push_back(static_cast<int>(k));
  }
  if (options.kind == PartitionKind::kBySite) check_by_site(sites, train_keys, nodes, options);
  Partition part;
  try {
    part = partition(train_keys, static_cast<int>(sites.size()), nodes, options);
  } catch (const Error& e) {
    throw Error(e.kind(), std::string(e.what()) + " [file data: " + std::to_string(train_items.size()) +
                              " training records over " + std::to_string(sites.size()) + " site(s)]");
  }
  const auto eval_split = apply_plan(part.plan, eval_keys, derive_seed(options.seed, "partition/eval"));
  std::vector<NodeRecords> out(static_cast<std::size_t>(nodes));
  for (std::size_t n = 0; n < out.size(); ++n) {
    for (auto i : part.per_node[n]) out[n].train.push_back(sites[train_items[i].site].train[train_items[i].row]);
    for (auto i : eval_split[n]) out[n].eval.push_back(sites[eval_items[i].site].eval[eval_items[i].row]);
    if (out[n].eval.empty()) out[n].eval = sites[train_items[part.per_node[n].front()].site].eval;
  }
  return out;
}

}  // namespace fedge::sims
