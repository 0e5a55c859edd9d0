// SCAFFOLD in the simulator (levels 4/5): the federated vector is [x ; c],
// each node sends [y_i - x ; c_i+ - c_i] through SecAgg+, and the scenario
// refuses the combinations not built. The coordinator side runs against a
// block of virtual nodes wrapped by a spy that reads every message.
// ATen (through the model headers) defines CHECK too; Catch must come after it.
#include "fedge/inference/model.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "../../sims/src/federation_sim.h"  // internal to sims/, not installed
#include "fedge/federation/wire.h"
#include "fedge/inference/torch_setup.h"
#include "fedge/protocol/codec.h"
#include "fedge/sims/runner.h"
#include "fedge/sims/scenario.h"

using namespace fedge;
using namespace fedge::sims;

namespace {

// Three nodes, two rounds of two steps on the untrained tiny model, SecAgg+ on.
std::string tiny(const std::string& strategy_lines) {
  return R"(
name = "tiny-scaffold"
seed = 5
levels = [4]
[model]
base = "tiny-random"
lora_rank = 2
targets = ["q", "v"]
seq_len = 64
[data]
sites = 3
days = 4
wells_per_site = 1
[nodes]
count = 3
devices = ["jetson"]
[partition]
kind = "by-site"
[training]
rounds = 2
local_steps = 2
batch_size = 2
lr = 0.01
min_nodes = 3
)" + strategy_lines +
         R"(
[secagg]
enabled = true
dropout_rate = 0.00000001
)";
}

// The nodes of a LocalHost, with every message they send and every round the
// coordinator completes recorded on the way.
class SpyHost : public detail::HostLink {
 public:
  SpyHost(detail::Context& ctx, int nodes) : inner_(ctx, 0, nodes) {}
  int first_node() const override { return inner_.first_node(); }
  int end_node() const override { return inner_.end_node(); }
  std::string name() const override { return "spy on " + inner_.name(); }
  void send_start(int level) override { inner_.send_start(level); }
  void send_window(WindowOrder order) override {
    for (const auto& d : order.deliveries) down.push_back(d);
    for (const auto& r : order.completed) completed.push_back(r);
    inner_.send_window(std::move(order));
  }
  WindowReport collect() override {
    auto report = inner_.collect();
    for (const auto& d : report.messages) up.push_back(d);
    return report;
  }
  std::vector<Delivery> down, up;
  std::vector<RoundDone> completed;

 private:
  detail::LocalHost inner_;
};

struct SpiedRun {
  std::uint64_t adapter = 0;  // L: the adapter's floats
  std::vector<std::uint64_t> plan_update_lengths;
  std::vector<std::size_t> masked_lengths;
  std::vector<RoundDone> completed;
};

SpiedRun run_spied(const std::string& strategy_lines) {
  inference::setup_torch(1);
  const auto scenario = parse_scenario(tiny(strategy_lines), "tiny.toml");
  auto ctx = detail::build_context(scenario);
  ctx->progress_sink = [](const std::string&) {};
  SpyHost host(*ctx, scenario.nodes);
  std::vector<detail::HostLink*> hosts = {&host};
  const auto outcome = detail::run_federated(*ctx, 4, hosts);
  REQUIRE(outcome.rounds_completed == 2);
  SpiedRun run;
  run.adapter = ctx->adapter_floats();
  run.completed = host.completed;
  const protocol::Limits limits;
  std::map<std::uint64_t, protocol::RoundPlan> plans;  // by round (every node gets the same plan)
  for (const auto& d : host.down) {
    const auto env = protocol::decode(d.envelope, limits);
    if (const auto* plan = std::get_if<protocol::RoundPlan>(&env.body)) {
      if (plans.emplace(env.round, *plan).second)
        run.plan_update_lengths.push_back(federation::wire::update_encoding(*plan).update_length);
    }
  }
  for (const auto& d : host.up) {
    const auto env = protocol::decode(d.envelope, limits);
    if (const auto* masked = std::get_if<protocol::MaskedInputBody>(&env.body)) {
      const auto& plan = plans.at(env.round);
      // A node's SecAgg client id is its place in the plan's selection, from 1.
      const auto at = std::find(plan.selected.begin(), plan.selected.end(), env.sender);
      REQUIRE(at != plan.selected.end());
      const auto client = static_cast<aggregation::ClientId>(at - plan.selected.begin() + 1);
      // Refused unless it holds exactly the plan's d = L' + 2 elements.
      const auto d_len = federation::wire::update_encoding(plan).vector_length();
      const auto input = federation::wire::from_wire(*masked, env.round, client, d_len);
      run.masked_lengths.push_back(input.masked.size());
    }
  }
  return run;
}

double max_abs(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

}  // namespace

TEST_CASE("scaffold in the simulator: [x ; c] in the plan and the masked inputs, c moves, round 1's x is FedAvg's",
          "[scaffold]") {
  const auto scaffold = run_spied("strategy = \"scaffold\"\n");
  const std::uint64_t L = scaffold.adapter;
  REQUIRE(L > 0);
  // Every round plan encodes updates of 2L floats, and every node's masked
  // input carries 2L + 2 (the weight and the loss after both halves).
  REQUIRE(scaffold.plan_update_lengths.size() == 2);
  for (auto len : scaffold.plan_update_lengths) CHECK(len == 2 * L);
  REQUIRE(scaffold.masked_lengths.size() == 2 * 3);  // 3 nodes x 2 rounds
  for (auto len : scaffold.masked_lengths) CHECK(len == 2 * L + 2);

  REQUIRE(scaffold.completed.size() == 2);
  for (const auto& done : scaffold.completed) {
    REQUIRE(done.global.size() == 2 * L);
    CHECK(done.survivors.size() == 3);
    const std::span<const float> c = std::span<const float>(done.global).subspan(L);
    // c starts at zero; after a round it is the nodes' mean raw gradient
    // (|S| = N), non-zero and inside the quantiser's clip range.
    CHECK(max_abs(c) > 1e-6);
    CHECK(max_abs(c) <= 1.0);
    for (float v : c) REQUIRE(std::isfinite(v));
  }
  // Round 2 moved c again (the nodes' new mean gradients differ from round 1's).
  CHECK(std::vector<float>(scaffold.completed[0].global.begin() + static_cast<std::ptrdiff_t>(L),
                           scaffold.completed[0].global.end()) !=
        std::vector<float>(scaffold.completed[1].global.begin() + static_cast<std::ptrdiff_t>(L),
                           scaffold.completed[1].global.end()));

  // In round 1 every c_i and c are zero: no correction, so x moves as FedAvg's
  // global does (the same secure sum of the same updates, up to quantisation).
  const auto fedavg = run_spied("");
  for (auto len : fedavg.plan_update_lengths) CHECK(len == L);
  for (auto len : fedavg.masked_lengths) CHECK(len == L + 2);
  const auto& x1 = scaffold.completed[0].global;
  const auto& w1 = fedavg.completed[0].global;
  REQUIRE(w1.size() == L);
  double diff = 0;
  for (std::size_t i = 0; i < L; ++i) diff = std::max(diff, static_cast<double>(std::abs(x1[i] - w1[i])));
  CHECK(diff < 1e-6);
  // Round 2 corrects the gradients: x differs from FedAvg's from then on.
  double diff2 = 0;
  for (std::size_t i = 0; i < L; ++i)
    diff2 = std::max(diff2, static_cast<double>(std::abs(scaffold.completed[1].global[i] - fedavg.completed[1].global[i])));
  CHECK(diff2 > 1e-5);
}

TEST_CASE("scaffold scenario: the combinations not built are refused naming the key", "[scaffold]") {
  auto parse = [](const std::string& lines) { return parse_scenario(tiny("strategy = \"scaffold\"\n" + lines), "t.toml"); };
  CHECK_NOTHROW(parse(""));
  CHECK(federated_length(parse("")) == 2 * adapter_length(parse("")));
  CHECK_THROWS_WITH(parse("strategy_params = { num_nodes = 3 }\n"),
                    Catch::Contains("num_nodes") && Catch::Contains("set by the simulator"));
  CHECK_THROWS_WITH(parse("mode = \"fedbuff\"\nbuffer_size = 3\n"),
                    Catch::Contains("training.mode") && Catch::Contains("not built yet"));
  CHECK_THROWS_WITH(parse("personalization = \"ditto\"\n"),
                    Catch::Contains("training.personalization") && Catch::Contains("not built yet"));
  CHECK_THROWS_WITH(parse("rank_aggregation = \"hetlora\"\n"),
                    Catch::Contains("training.rank_aggregation") && Catch::Contains("not built yet"));
  CHECK_THROWS_WITH(parse("[dp]\nenabled = true\nnoise_multiplier = 0.5\n"),
                    Catch::Contains("dp.enabled") && Catch::Contains("not built yet"));
  CHECK_THROWS_WITH(parse("strategy_params = { global_learning_rate = -1 }\n"),
                    Catch::Contains("global_learning_rate"));
}
