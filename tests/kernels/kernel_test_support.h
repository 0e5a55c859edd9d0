// What the kernel tests share: random rows, the instruction-set guard and a
// bitwise float comparison.
#pragma once

#include <cstring>
#include <random>
#include <vector>

#include "../../inference/src/kernels.h"  // internal to inference/, not installed
#include "fedge/inference/quant.h"

namespace fedge::test {

// n normal values of standard deviation `scale`, the same for the same seed.
inline std::vector<float> random_row(std::size_t n, unsigned seed, float scale = 1.0F) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0F, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  return x;
}

// Restores run-time detection, for the float kernels and the quantized ones,
// after a test forced an instruction set.
struct IsaGuard {
  ~IsaGuard() {
    inference::kernels::set_isa("auto");
    inference::quant::set_isa("auto");
  }
};

inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace fedge::test
