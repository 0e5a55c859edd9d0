// SharedALora: a real node's side of shared-A personalization (FedSA-LoRA).
// The expected values are taken by tensor name from the inputs, not from the
// flat-adapter helpers the class uses.
// lora.h brings libtorch, whose logging defines CHECK: it comes before Catch.
#include "fedge/inference/lora.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/inference/model_config.h"
#include "fedge/node/shared_a.h"

using namespace fedge;

namespace {

bool is_a(const std::string& name) { return name.find("lora_A") != std::string::npos; }

// A whole tiny-model adapter (rank 2, q and v) with every float distinct.
ParamVector whole_adapter(float base) {
  inference::LoraConfig lora;
  lora.r = 2;
  lora.alpha = 8;
  lora.target_modules = {"q_proj", "v_proj"};
  ParamVector v = inference::LoraAdapter::create(inference::ModelConfig::tiny(), lora, 1).to_params();
  for (std::size_t i = 0; i < v.size(); ++i) v.values()[i] = base + 0.001F * static_cast<float>(i);
  return v;
}

// The A matrices of `whole` as the coordinator holds them, in reverse order
// (a coordinator's layout need not be the adapter's).
ParamVector global_a_of(const ParamVector& whole) {
  ParamLayout layout;
  const auto& entries = whole.layout().entries();
  for (auto e = entries.rbegin(); e != entries.rend(); ++e)
    if (is_a(e->name)) layout.add(e->name, e->shape);
  ParamVector g(layout);
  for (const auto& e : layout.entries()) std::ranges::copy(whole.tensor(e.name), g.tensor(e.name).begin());
  return g;
}

// Whether every tensor of `got` equals `want`'s tensor of the same name,
// taking A from `a` and B from `b` (null: zero).
bool joins(const ParamVector& got, const ParamVector& a, const ParamVector* b) {
  for (const auto& e : got.layout().entries()) {
    const auto values = got.tensor(e.name);
    if (is_a(e.name)) {
      if (!std::ranges::equal(values, a.tensor(e.name))) return false;
    } else if (b != nullptr) {
      if (!std::ranges::equal(values, b->tensor(e.name))) return false;
    } else if (std::ranges::any_of(values, [](float x) { return x != 0.0F; })) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("shared-a node: its adapter is the global A with zero B and then the B its rounds trained") {
  node::SharedALora shared(inference::ModelConfig::tiny(), 8);
  const ParamVector global = global_a_of(whole_adapter(1.0F));
  const ParamVector start = shared.node_adapter(global);
  REQUIRE(start.size() == whole_adapter(0).size());
  CHECK(joins(start, global, nullptr));
  CHECK(joins(shared.global_adapter(global), global, nullptr));

  // Round 1: the update's A goes out in the global's layout, its B stays.
  const ParamVector update = whole_adapter(-0.5F).remapped(start.layout());
  const auto sent = shared.finish_round(start, update.values(), global.layout());
  REQUIRE(sent.size() == global.size());
  CHECK(joins(ParamVector(global.layout(), sent), update, nullptr));
  const ParamVector after = shared.node_adapter(global);
  CHECK(joins(after, global, &update));  // start's B was zero
  CHECK(joins(shared.global_adapter(global), global, nullptr));  // the global alone has no B

  // Round 2 from a new global: B = the first update's B + the second's.
  const ParamVector global2 = global_a_of(whole_adapter(2.0F));
  const ParamVector start2 = shared.node_adapter(global2);
  CHECK(joins(start2, global2, &update));
  const ParamVector update2 = whole_adapter(0.25F).remapped(start2.layout());
  shared.finish_round(start2, update2.values(), global2.layout());
  ParamVector b_sum = update;
  for (const auto& e : b_sum.layout().entries()) {
    if (is_a(e.name)) continue;
    auto dst = b_sum.tensor(e.name);
    const auto second = update2.tensor(e.name);
    for (std::size_t i = 0; i < dst.size(); ++i) dst[i] += second[i];
  }
  CHECK(joins(shared.node_adapter(global2), global2, &b_sum));
}

TEST_CASE("shared-a node: a restarted node keeps its saved B under the new global's A") {
  const ParamVector saved = whole_adapter(3.0F);
  node::SharedALora shared(inference::ModelConfig::tiny(), 8);
  shared.restore(saved);
  const ParamVector global = global_a_of(whole_adapter(1.0F));
  CHECK(joins(shared.node_adapter(global), global, &saved));
}

TEST_CASE("shared-a node: globals it cannot use are refused naming the settings and B stays") {
  node::SharedALora shared(inference::ModelConfig::tiny(), 8);
  // A coordinator that federates whole adapters.
  CHECK_THROWS_WITH(shared.node_adapter(whole_adapter(1.0F)),
                    Catch::Contains("[federation] personalization") && Catch::Contains("shared-a"));
  // A matrices made for another model (in = 999).
  ParamLayout other;
  other.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 999});
  CHECK_THROWS_WITH(shared.node_adapter(ParamVector(other)), Catch::Contains("does not fit this node's model"));
  // An A matrix missing (one target of layer 1 dropped).
  const ParamVector global = global_a_of(whole_adapter(1.0F));
  ParamLayout fewer;
  for (const auto& e : global.layout().entries())
    if (e.name.find("layers.1.self_attn.v_proj") == std::string::npos) fewer.add(e.name, e.shape);
  CHECK_THROWS_WITH(shared.node_adapter(ParamVector(fewer)), Catch::Contains("layers.1.self_attn.v_proj"));

  // A round's result that does not belong to the global leaves B as it was.
  const ParamVector start = shared.node_adapter(global);
  const std::vector<float> b_before = shared.own_b();
  const std::vector<float> short_update(start.size() - 1, 1.0F);
  CHECK_THROWS_AS(shared.finish_round(start, short_update, global.layout()), Error);
  CHECK(shared.own_b() == b_before);
  const ParamVector update = whole_adapter(0.5F).remapped(start.layout());
  CHECK_THROWS_AS(shared.finish_round(start, update.values(), fewer), Error);
  CHECK(shared.own_b() == b_before);
  CHECK_THROWS_AS(shared.finish_round(global, update.values(), global.layout()), Error);
  CHECK(shared.own_b() == b_before);
}
