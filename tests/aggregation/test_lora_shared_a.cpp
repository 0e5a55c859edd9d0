#include <catch2/catch.hpp>

#include <vector>

#include "fedge/aggregation/lora_shared_a.h"
#include "fedge/common/error.h"

using namespace fedge::aggregation;
using fedge::ParamLayout;

namespace {

// Two pairs of rank 2, named as LoraAdapter names them:
//   pair 0: A 2 x 3 (floats 0..5),   B 2 x 2 (floats 6..9)
//   pair 1: A 2 x 1 (floats 10..11), B 3 x 2 (floats 12..17)
ParamLayout two_pairs() {
  ParamLayout l;
  l.add("layers.0.q_proj.lora_A.weight", {2, 3});
  l.add("layers.0.q_proj.lora_B.weight", {2, 2});
  l.add("layers.0.v_proj.lora_A.weight", {2, 1});
  l.add("layers.0.v_proj.lora_B.weight", {3, 2});
  return l;
}

std::vector<float> one_to(int n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(i + 1);
  return v;
}

}  // namespace

TEST_CASE("shared-A: the A part is every A in pair order and the B part every B and joining them is the inverse",
          "[aggregation][shared_a]") {
  const auto layout = lora_layout(two_pairs());
  const auto adapter = one_to(18);  // value = flat index + 1
  CHECK(lora_a_size(layout) == 8);
  CHECK(lora_b_size(layout) == 10);
  const std::vector<float> a = {1, 2, 3, 4, 5, 6, 11, 12};
  const std::vector<float> b = {7, 8, 9, 10, 13, 14, 15, 16, 17, 18};
  CHECK(lora_a_part(layout, adapter) == a);
  CHECK(lora_b_part(layout, adapter) == b);
  CHECK(join_lora_parts(layout, a, b) == adapter);
  // The other way round: the parts of a join are its inputs.
  const std::vector<float> a2 = {-1, -2, -3, -4, -5, -6, -7, -8};
  const auto joined = join_lora_parts(layout, a2, b);
  CHECK(joined == std::vector<float>{-1, -2, -3, -4, -5, -6, 7, 8, 9, 10, -7, -8, 13, 14, 15, 16, 17, 18});
  CHECK(lora_a_part(layout, joined) == a2);
  CHECK(lora_b_part(layout, joined) == b);

  // The federated layout: the A entries alone, names and shapes kept.
  const auto a_layout = lora_a_layout(two_pairs());
  REQUIRE(a_layout.entries().size() == 2);
  CHECK(a_layout.entries()[0].name == "layers.0.q_proj.lora_A.weight");
  CHECK(a_layout.entries()[1].name == "layers.0.v_proj.lora_A.weight");
  CHECK(a_layout.entries()[1].shape == std::vector<std::int64_t>{2, 1});
  CHECK(a_layout.size() == lora_a_size(layout));
}

TEST_CASE("shared-A: wrong lengths and non-LoRA layouts are refused naming the part", "[aggregation][shared_a]") {
  const auto layout = lora_layout(two_pairs());
  CHECK_THROWS_WITH(lora_a_part(layout, one_to(17)), Catch::Contains("adapter has 17 floats, expected 18"));
  CHECK_THROWS_WITH(lora_b_part(layout, one_to(19)), Catch::Contains("expected 18"));
  CHECK_THROWS_WITH(join_lora_parts(layout, one_to(7), one_to(10)), Catch::Contains("the A part has 7 floats, expected 8"));
  CHECK_THROWS_WITH(join_lora_parts(layout, one_to(8), one_to(11)), Catch::Contains("the B part has 11 floats, expected 10"));
  CHECK_THROWS_WITH(shared_a_step(layout, one_to(18), one_to(8)), Catch::Contains("the update has 8 floats"));
  CHECK_THROWS_WITH(shared_a_step(layout, one_to(3), one_to(18)), Catch::Contains("the start adapter has 3 floats"));
  ParamLayout dense;
  dense.add("layers.0.q_proj.weight", {4, 4});
  CHECK_THROWS_AS(lora_a_layout(dense), fedge::Error);
}

TEST_CASE("shared-A: a node sends only its update's A and keeps start B plus its update's B", "[aggregation][shared_a]") {
  const auto layout = lora_layout(two_pairs());
  // start: A = 1..8 (the global), B = 100.. (the node's own); update: 0.5 * (index + 1).
  const std::vector<float> global_a = one_to(8);
  std::vector<float> own_b(10);
  for (std::size_t i = 0; i < own_b.size(); ++i) own_b[i] = 100.0F + static_cast<float>(i);
  const auto start = join_lora_parts(layout, global_a, own_b);
  std::vector<float> update = one_to(18);
  for (auto& u : update) u *= 0.5F;
  const auto step = shared_a_step(layout, start, update);
  // Sent: the update at A's flat positions 0..5 and 10..11, nothing else.
  CHECK(step.a_update == std::vector<float>{0.5F, 1, 1.5F, 2, 2.5F, 3, 5.5F, 6});
  // Kept: own B + the update at B's positions 6..9 and 12..17.
  CHECK(step.b == std::vector<float>{103.5F, 105, 106.5F, 108, 110.5F, 112, 113.5F, 115, 116.5F, 118});
  // A zero update leaves the node's B exactly where it was and sends zeros.
  const auto idle = shared_a_step(layout, start, std::vector<float>(18, 0.0F));
  CHECK(idle.b == own_b);
  CHECK(idle.a_update == std::vector<float>(8, 0.0F));
}

TEST_CASE("shared-A: a layout of A matrices alone is told from a whole adapter", "[aggregation][shared_a]") {
  const ParamLayout whole = two_pairs();
  CHECK_FALSE(is_lora_a_only(whole));
  CHECK(is_lora_a_only(lora_a_layout(whole)));
  CHECK_FALSE(is_lora_a_only(ParamLayout{}));
  ParamLayout other;
  other.add("layers.0.q_proj.lora_A.weight", {2, 3});
  other.add("lm_head.weight", {2, 2});
  CHECK_FALSE(is_lora_a_only(other));
  ParamLayout near;
  near.add("layers.0.q_proj.lora_A.weight.bak", {2, 3});
  CHECK_FALSE(is_lora_a_only(near));
}
