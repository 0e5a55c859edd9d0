// Clock and profile arithmetic, and the partitioners.
#include <catch2/catch.hpp>

#include <numeric>
#include <set>

#include "fedge/common/error.h"
#include "fedge/sims/clock.h"
#include "fedge/sims/partition.h"

using namespace fedge::sims;

TEST_CASE("transfer time is latency plus bits over bandwidth, stretched by loss") {
  NetworkProfile net{"t", 8e6, 16e6, 0.01, 0.0, 0.0};
  CHECK(transfer_seconds(net, 1'000'000, true) == Approx(0.01 + 1.0));
  CHECK(transfer_seconds(net, 1'000'000, false) == Approx(0.01 + 0.5));
  CHECK(transfer_seconds(net, 0, true) == Approx(0.01));
  net.loss = 0.5;
  CHECK(transfer_seconds(net, 1'000'000, true) == Approx(0.01 + 2.0));
}

TEST_CASE("compute time and energy follow FLOPs, rate and power") {
  DeviceProfile d{"d", 1e9, 1e9, 5.0};
  CHECK(compute_seconds(d, 3e9) == Approx(3.0));
  CHECK(energy_joules(d, 3.0) == Approx(15.0));
  CHECK(forward_flops(1000, 10) == Approx(20000.0));
  CHECK(train_flops(1000, 10) == Approx(60000.0));
  // A Pi is slower than a Jetson, which is slower than the cloud.
  CHECK(device_preset("raspberry-pi").flops < device_preset("jetson").flops);
  CHECK(device_preset("jetson").flops < device_preset("edge-server").flops);
  CHECK(device_preset("edge-server").flops < device_preset("cloud-gpu").flops);
  CHECK(network_preset("lan").latency_s < network_preset("wan").latency_s);
}

TEST_CASE("unknown presets name the known ones") {
  CHECK_THROWS_WITH(device_preset("toaster"), Catch::Contains("raspberry-pi") && Catch::Contains("toaster"));
  CHECK_THROWS_WITH(network_preset("carrier-pigeon"), Catch::Contains("wan"));
}

TEST_CASE("virtual clock only moves forward") {
  VirtualClock c;
  c.advance(1.5);
  c.advance_to(1.0);
  CHECK(c.now() == 1.5);
  c.advance_to(4.0);
  CHECK(c.now() == 4.0);
  CHECK_THROWS_AS(c.advance(-1), fedge::Error);
  OutageWindow w{10, 5};
  CHECK(!w.contains(9.99));
  CHECK(w.contains(10));
  CHECK(w.contains(14.99));
  CHECK(!w.contains(15));
  CHECK(!OutageWindow{}.contains(0));
}

namespace {
std::vector<int> keys(int num_keys, int per_key) {
  std::vector<int> k;
  for (int i = 0; i < num_keys; ++i) k.insert(k.end(), per_key, i);
  return k;
}
std::size_t total(const std::vector<std::vector<std::size_t>>& parts) {
  std::set<std::size_t> seen;
  std::size_t n = 0;
  for (const auto& p : parts) {
    n += p.size();
    seen.insert(p.begin(), p.end());
  }
  REQUIRE(seen.size() == n);  // no item twice
  return n;
}
}  // namespace

TEST_CASE("iid partition deals every key evenly and every item once") {
  auto k = keys(4, 30);
  PartitionOptions o;
  o.kind = PartitionKind::kIid;
  auto p = partition(k, 4, 6, o);
  CHECK(total(p.per_node) == k.size());
  for (const auto& node : p.per_node) {
    CHECK(node.size() == 20);
    std::vector<int> per_key(4);
    for (auto i : node) ++per_key[k[i]];
    for (int c : per_key) CHECK(c == 5);
  }
}

TEST_CASE("by-site partition gives each node its own sites") {
  auto k = keys(8, 10);
  PartitionOptions o;
  o.kind = PartitionKind::kBySite;
  auto p = partition(k, 8, 8, o);
  for (int n = 0; n < 8; ++n) {
    REQUIRE(p.per_node[n].size() == 10);
    for (auto i : p.per_node[n]) CHECK(k[i] == n);
  }
  // More nodes than sites: the nodes of a site split it.
  auto q = partition(k, 8, 16, o);
  CHECK(total(q.per_node) == 80);
  for (int n = 0; n < 16; ++n) {
    CHECK(q.per_node[n].size() == 5);
    for (auto i : q.per_node[n]) CHECK(k[i] == n % 8);
  }
  // Fewer nodes than sites: node n takes sites n, n + nodes, ...
  auto r = partition(k, 8, 3, o);
  CHECK(r.per_node[0].size() == 30);
  CHECK(r.per_node[2].size() == 20);
}

TEST_CASE("dirichlet partition is reproducible from the seed and skews with small alpha") {
  auto k = keys(10, 100);
  PartitionOptions o;
  o.kind = PartitionKind::kDirichlet;
  o.alpha = 0.1;
  o.seed = 7;
  o.min_per_node = 5;
  auto a = partition(k, 10, 5, o);
  auto b = partition(k, 10, 5, o);
  CHECK(a.per_node == b.per_node);
  CHECK(total(a.per_node) == k.size());
  for (const auto& node : a.per_node) CHECK(node.size() >= 5);
  o.seed = 8;
  CHECK(partition(k, 10, 5, o).per_node != a.per_node);
  // Small alpha: most keys sit mostly on one node; large alpha: near even.
  auto dominant_share = [&](const PartitionPlan& plan) {
    double s = 0;
    for (const auto& row : plan.shares) s += *std::max_element(row.begin(), row.end());
    return s / plan.shares.size();
  };
  o.alpha = 1000;
  auto even = partition(k, 10, 5, o);
  CHECK(dominant_share(a.plan) > 0.6);
  CHECK(dominant_share(even.plan) < 0.3);
  for (const auto& row : a.plan.shares) CHECK(std::accumulate(row.begin(), row.end(), 0.0) == Approx(1.0));
}

TEST_CASE("partition refuses more nodes than items and an unreachable minimum") {
  auto k = keys(2, 3);
  PartitionOptions o;
  CHECK_THROWS_WITH(partition(k, 2, 7, o), Catch::Contains("7 nodes") && Catch::Contains("6 items"));
  o.kind = PartitionKind::kDirichlet;
  o.alpha = 0.001;  // one key lands (almost) wholly on one node
  o.min_per_node = 3;
  o.max_draws = 5;
  auto one_key = keys(1, 8);
  CHECK_THROWS_WITH(partition(one_key, 1, 2, o), Catch::Contains("min_per_node"));
  CHECK_THROWS_AS(parse_partition_kind("random"), fedge::Error);
  std::vector<int> bad = {0, 5};
  CHECK_THROWS_WITH(apply_plan(make_plan(2, 1, {}), bad, 0), Catch::Contains("key 5"));
}
