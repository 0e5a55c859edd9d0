// Helpers for the tests that run the libtorch model: logits of a prompt, their
// distance to a reference, and a LoRA adapter that changes the outputs.
// Include it before Catch2 (ATen's glog CHECK macro clashes with Catch's).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fedge/inference/model.h"

namespace fedge::test {

// ||got - want|| / ||want||
inline double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(err / norm);
}

// Logits of every position of one prompt, in one forward call.
inline std::vector<float> prompt_logits(inference::Model& m, const std::vector<inference::TokenId>& ids) {
  inference::KVCache cache = m.make_cache(1, 64);
  return m.forward(ids, {}, 1, int(ids.size()), cache, /*all_logits=*/true);
}

// A rank-4 adapter on `targets` with random non-zero B (a fresh adapter's B is
// zero, which leaves the base's outputs unchanged).
inline inference::LoraAdapter random_adapter(const inference::ModelConfig& c, std::vector<std::string> targets,
                                             std::uint64_t seed) {
  inference::LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = std::move(targets);
  inference::LoraAdapter ad = inference::LoraAdapter::create(c, lc, seed);
  at::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (int l = 0; l < c.num_layers; ++l)
    for (int t = 0; t < inference::kNumLoraTargets; ++t)
      if (ad.b(l, inference::LoraTarget(t)).defined()) ad.b(l, inference::LoraTarget(t)).normal_(0.0, 0.1, gen);
  return ad;
}

}  // namespace fedge::test
