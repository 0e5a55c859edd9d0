// One head's attention (kernels::attend, the decode step's inner loop) on
// every instruction set against a double-precision softmax(K q) V, for the
// head sizes the AVX-512 path holds in registers and one it does not, and
// for position counts that do and do not fill its four-position steps.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../../inference/src/kernels.h"  // internal to inference/, not installed
#include "kernel_test_support.h"

namespace kernels = fedge::inference::kernels;
using fedge::test::IsaGuard;

namespace {

std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& K, const std::vector<float>& V,
                              int last, int hd, float scale) {
  std::vector<double> score(last + 1), out(hd, 0.0);
  double mx = -INFINITY;
  for (int s = 0; s <= last; ++s) {
    double d = 0;
    for (int i = 0; i < hd; ++i) d += double(q[i]) * K[std::size_t(s) * hd + i];
    score[s] = d * scale;
    mx = std::max(mx, score[s]);
  }
  double sum = 0;
  for (double& v : score) sum += (v = std::exp(v - mx));
  for (int s = 0; s <= last; ++s)
    for (int i = 0; i < hd; ++i) out[i] += score[s] / sum * V[std::size_t(s) * hd + i];
  return out;
}

}  // namespace

TEST_CASE("kernels: one head's attention matches a double softmax(K q) V on every instruction set") {
  IsaGuard guard;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0F, 1.0F);
  for (int hd : {16, 64, 128, 40}) {
    for (int last : {0, 1, 3, 4, 5, 130}) {
      std::vector<float> q(hd), K(std::size_t(last + 1) * hd), V(K.size());
      for (auto* v : {&q, &K, &V})
        for (float& x : *v) x = normal(rng);
      const float scale = 1.0F / std::sqrt(float(hd));
      const auto want = reference(q, K, V, last, hd, scale);
      for (const std::string& isa : kernels::available_isas()) {
        REQUIRE(kernels::set_isa(isa.c_str()));
        std::vector<float> scores(last + 1), out(hd, 123.0F);  // out is overwritten, not added to
        kernels::attend(q.data(), K.data(), V.data(), last, hd, scale, scores.data(), out.data());
        INFO(isa << ": hd " << hd << ", positions " << last + 1);
        for (int i = 0; i < hd; ++i) CHECK(out[i] == Approx(want[i]).margin(2e-6).epsilon(2e-5));
      }
    }
  }
}
