// ScaffoldControl: a real node's control variate c_i under SCAFFOLD, and when
// it moves (only once its update is in a completed round's sum).
#include <catch2/catch.hpp>

#include <filesystem>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/node/scaffold.h"
#include "test_util.h"

using namespace fedge;

namespace {

ParamLayout adapter_layout() {
  ParamLayout l;
  l.add("layers.0.q_proj.lora_A.weight", {2, 3});
  l.add("layers.0.q_proj.lora_B.weight", {3, 2});
  return l;
}

// [x ; c] with x_i = 1 + i and c_i = 0.5 * (i + 1).
ParamVector scaffold_global() {
  const ParamLayout x = adapter_layout();
  std::vector<float> v(2 * x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    v[i] = 1.0F + static_cast<float>(i);
    v[x.size() + i] = 0.5F * static_cast<float>(i + 1);
  }
  return {node::scaffold_layout(x), v};
}

std::vector<float> filled(std::size_t n, float base) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = base + 0.25F * static_cast<float>(i);
  return v;
}

std::vector<float> values(const ParamVector& p) { return {p.values().begin(), p.values().end()}; }

}  // namespace

TEST_CASE("scaffold node: the layout is the adapter then its scaffold.c twins") {
  const ParamLayout x = adapter_layout();
  const ParamLayout g = node::scaffold_layout(x);
  REQUIRE(g.entries().size() == 4);
  CHECK(g.entries()[2].name == "scaffold.c/layers.0.q_proj.lora_A.weight");
  CHECK(node::is_scaffold_layout(g));
  CHECK_FALSE(node::is_scaffold_layout(x));
  CHECK(node::scaffold_adapter_layout(g) == x);
  ParamLayout odd = x;
  odd.add("scaffold.c/layers.0.q_proj.lora_B.weight", {3, 2});
  odd.add("scaffold.c/layers.0.q_proj.lora_A.weight", {2, 3});  // twins in the wrong order
  CHECK_FALSE(node::is_scaffold_layout(odd));
  CHECK_THROWS_WITH(node::scaffold_adapter_layout(odd), Catch::Contains("scaffold.c/<entry>"));
}

TEST_CASE("scaffold node: c_i moves only when the round's sum held the update and survives a restart") {
  testing::TempDir dir("fedge_scaffold_node_");
  const auto file = dir.path / "scaffold_control.safetensors";
  const ParamVector global = scaffold_global();
  const std::size_t n = global.size() / 2;
  const std::vector<float> c(global.values().begin() + static_cast<std::ptrdiff_t>(n), global.values().end());

  node::ScaffoldControl control(file);
  const ParamVector x = node::scaffold_adapter(global);
  CHECK(x.layout() == adapter_layout());
  for (std::size_t i = 0; i < n; ++i) CHECK(x.values()[i] == 1.0F + static_cast<float>(i));

  // Round 1: c_i = 0, so the offset is c and the control half is c_i+.
  CHECK(values(control.gradient_offset(global)) == c);
  const auto update = filled(n, -1.0F), gradient = filled(n, 2.0F);
  auto sent = control.finish_round(global, update, gradient);
  std::vector<float> expected = update;
  expected.insert(expected.end(), gradient.begin(), gradient.end());
  CHECK(sent == expected);
  // A new global without the unmask's word: c_i stays zero, nothing written.
  control.on_global_installed();
  CHECK(control.control().empty());
  CHECK_FALSE(std::filesystem::exists(file));

  // Round 2: the update is in the sum, so c_i+ becomes c_i at the next global.
  control.gradient_offset(global);
  control.finish_round(global, update, gradient);
  control.on_update_in_sum();
  control.on_global_installed();
  CHECK(control.control() == gradient);
  REQUIRE(std::filesystem::exists(file));

  // A restarted node reads it back: the offset is c - c_i, the control half c_i+ - c_i.
  node::ScaffoldControl restarted(file);
  const auto offset = values(restarted.gradient_offset(global));
  const auto gradient3 = filled(n, 5.0F);
  sent = restarted.finish_round(global, update, gradient3);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(offset[i] == c[i] - gradient[i]);
    CHECK(sent[n + i] == gradient3[i] - gradient[i]);
  }
  // A round that starts again before the outcome forgets the waiting c_i+.
  restarted.on_update_in_sum();
  restarted.gradient_offset(global);
  restarted.on_global_installed();
  CHECK(restarted.control() == gradient);
}

TEST_CASE("scaffold node: bad shapes are refused and c_i is kept") {
  testing::TempDir dir("fedge_scaffold_node_bad_");
  node::ScaffoldControl control(dir.path / "c.safetensors");
  const ParamVector global = scaffold_global();
  const std::size_t n = global.size() / 2;
  CHECK_THROWS_AS(node::scaffold_adapter(ParamVector(adapter_layout())), Error);
  CHECK_THROWS_AS(control.gradient_offset(ParamVector(adapter_layout())), Error);
  // finish_round before any round started from this global
  CHECK_THROWS_AS(control.finish_round(global, filled(n, 0), filled(n, 0)), Error);
  control.gradient_offset(global);
  CHECK_THROWS_WITH(control.finish_round(global, filled(n - 1, 0), filled(n, 0)), Catch::Contains("expected"));
  CHECK_THROWS_AS(control.finish_round(global, filled(n, 0), filled(n + 1, 0)), Error);
  control.on_update_in_sum();
  control.on_global_installed();
  CHECK(control.control().empty());
}
