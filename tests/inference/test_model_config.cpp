// config.json inputs that fuzz_model_config showed to be accepted wrongly.
#include <catch2/catch.hpp>

#include <cmath>

#include "fedge/common/error.h"
#include "fedge/inference/model_config.h"
#include "test_support.h"

using namespace fedge;
using namespace fedge::inference;

TEST_CASE("config.json: a rope_scaling factor below 1 is refused, so RoPE frequencies stay finite") {
  // A subnormal factor passed the "> 0" check, and rope_inv_freq divided by it
  // to infinity (every attention score NaN).
  for (const char* type : {"linear", "llama3"}) {
    auto j = test::config_json(test::Shape{});
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 1e-310}};
    CHECK_THROWS_WITH(ModelConfig::from_json_text(j.dump(), "cfg"), Catch::Contains("rope_scaling.factor"));
    j["rope_scaling"]["factor"] = 0.5;
    CHECK_THROWS_WITH(ModelConfig::from_json_text(j.dump(), "cfg"), Catch::Contains("rope_scaling.factor"));
    j["rope_scaling"]["factor"] = 1.0;
    for (double f : rope_inv_freq(ModelConfig::from_json_text(j.dump(), "cfg"))) CHECK(std::isfinite(f));
  }
}
