// hetlora_training_rank: which LoRA rank a real node trains under HetLoRA,
// and the refusals that name the settings to change.
#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/node/lora_ranks.h"

using namespace fedge;

namespace {

// A rank-4 adapter of two pairs, named as LoraAdapter names them.
ParamVector rank4_global() {
  ParamLayout l;
  l.add("layers.0.q_proj.lora_A.weight", {4, 6});
  l.add("layers.0.q_proj.lora_B.weight", {6, 4});
  l.add("layers.0.v_proj.lora_A.weight", {4, 6});
  l.add("layers.0.v_proj.lora_B.weight", {2, 4});
  return ParamVector(l);
}

}  // namespace

TEST_CASE("hetlora node rank: the configured rank below the global's in a secure round and 0 otherwise") {
  const ParamVector global = rank4_global();
  CHECK(node::hetlora_training_rank(global, 0, false) == 0);  // not configured
  CHECK(node::hetlora_training_rank(global, 0, true) == 0);
  CHECK(node::hetlora_training_rank(global, 4, false) == 0);  // the global's own rank: nothing to report
  CHECK(node::hetlora_training_rank(global, 2, true) == 2);
  CHECK(node::hetlora_training_rank(global, 1, true) == 1);
}

TEST_CASE("hetlora node rank: refusals name the setting to change") {
  const ParamVector global = rank4_global();
  CHECK_THROWS_WITH(node::hetlora_training_rank(global, 5, true),
                    Catch::Contains("[train] lora_rank = 5 is above the global's LoRA rank 4"));
  CHECK_THROWS_WITH(node::hetlora_training_rank(global, 2, false),
                    Catch::Contains("needs secure rounds") && Catch::Contains("rank_aggregation = \"hetlora\""));
  ParamLayout not_lora;
  not_lora.add("lm_head.weight", {2, 2});
  not_lora.add("norm.weight", {2});
  CHECK_THROWS_AS(node::hetlora_training_rank(ParamVector(not_lora), 2, true), Error);
}
