// update_codec: weighting, clipping, quantised encoding and decoding of the
// secure sum, and refusal of bad inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "fedge/federation/update_codec.h"
#include "fedge/common/error.h"
#include "fedge/privacy/quantize.h"

using namespace fedge;
using namespace fedge::federation;

namespace {

UpdateEncoding enc_for(std::size_t len, std::uint64_t n = 4) {
  UpdateEncoding e;
  e.update_length = len;
  e.clip_range = 0.5;
  e.example_scale = 400;
  e.loss_cap = 16;
  e.num_clients = static_cast<std::uint32_t>(n);
  choose_quant_bits(e, n);
  return e;
}

privacy::Key32 seed(std::uint8_t b) {
  privacy::Key32 k{};
  k.fill(b);
  return k;
}

std::vector<std::uint32_t> ring_add(std::vector<std::uint32_t> a, const std::vector<std::uint32_t>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

}  // namespace

TEST_CASE("update_codec: node weight is examples over the scale, capped at 1") {
  CHECK(node_weight(100, 400) == 0.25);
  CHECK(node_weight(400, 400) == 1.0);
  CHECK(node_weight(1000, 400) == 1.0);
  CHECK_THROWS_AS(node_weight(0, 400), Error);
  CHECK_THROWS_AS(node_weight(5, 0), Error);
}

TEST_CASE("update_codec: weighted vector layout and bounds") {
  UpdateEncoding e = enc_for(4);
  const std::vector<float> u{0.1F, -0.2F, 0.9F, -3.0F};
  const auto v = weighted_vector(e, u, 200, 4.0);
  REQUIRE(v.size() == 6);
  CHECK(v[0] == Approx(0.05));
  CHECK(v[1] == Approx(-0.1));
  CHECK(v[2] == Approx(0.25));   // clipped to 0.5, times 0.5
  CHECK(v[3] == Approx(-0.25));  // clipped to -0.5
  CHECK(v[4] == Approx(0.25));   // weight * clip_range
  CHECK(v[5] == Approx(0.5 * 0.5 * 4.0 / 16));
  for (float x : v) CHECK(std::abs(x) <= e.clip_range);
  // Losses above the cap and negative ones clamp.
  CHECK(weighted_vector(e, u, 400, 100.0)[5] == Approx(0.5));
  CHECK(weighted_vector(e, u, 400, -1.0)[5] == 0.0F);
  // loss_cap 0: not reported.
  e.loss_cap = 0;
  CHECK(weighted_vector(e, u, 400, 3.0)[5] == 0.0F);
}

TEST_CASE("update_codec: DP clips to the L2 norm first and drops the loss") {
  UpdateEncoding e = enc_for(2);
  e.dp = protocol::DpMode::kCentral;
  e.dp_clip_norm = 0.1;
  e.noise_multiplier = 1.0;
  const auto c = clip_update(e, std::vector<float>{0.3F, 0.4F});  // norm 0.5 -> 0.1
  CHECK(c[0] == Approx(0.06));
  CHECK(c[1] == Approx(0.08));
  CHECK(weighted_vector(e, std::vector<float>{0.3F, 0.4F}, 400, 2.0)[3] == 0.0F);
}

TEST_CASE("update_codec: the sum of encoded inputs decodes to the weighted sums") {
  const std::size_t len = 1000;
  UpdateEncoding e = enc_for(len);
  std::vector<std::uint32_t> sum(len + 2, 0);
  std::vector<double> expect(len, 0.0);
  double total_w = 0, loss_w = 0;
  const std::uint64_t examples[] = {100, 200, 300, 400};
  const double losses[] = {1.5, 2.5, 3.0, 0.5};
  for (int i = 0; i < 4; ++i) {
    std::vector<float> u(len);
    for (std::size_t j = 0; j < len; ++j) u[j] = static_cast<float>(0.3 * std::sin(0.1 * j + i));
    privacy::ChaChaRng rng(seed(static_cast<std::uint8_t>(i)));
    sum = ring_add(sum, encode_secure(e, u, examples[i], losses[i], rng));
    const double w = node_weight(examples[i], e.example_scale);
    for (std::size_t j = 0; j < len; ++j) expect[j] += w * u[j];
    total_w += w;
    loss_w += w * losses[i];
  }
  const DecodedSum d = decode_secure_sum(e, sum);
  const double step = e.clip_range / static_cast<double>(privacy::Quantizer(e.clip_range, e.quant_bits).qmax());
  REQUIRE(d.weighted_sum.size() == len);
  for (std::size_t j = 0; j < len; ++j) REQUIRE(std::abs(d.weighted_sum[j] - expect[j]) <= 4 * step + 1e-7);
  CHECK(d.total_weight == Approx(total_w).margin(4 * step / e.clip_range));
  CHECK(d.mean_train_loss == Approx(loss_w / total_w).epsilon(1e-6));
}

TEST_CASE("update_codec: distributed DP noise fits the ring and the sum still decodes near the truth") {
  const std::size_t len = 200;
  UpdateEncoding e;
  e.update_length = len;
  e.clip_range = 0.5;
  e.example_scale = 1;
  e.dp = protocol::DpMode::kDistributed;
  e.dp_clip_norm = 1.0;
  e.noise_multiplier = 0.5;
  e.num_clients = 10;
  e.min_survivors = 10;  // all 10 must survive: each adds 1/10 of the target variance
  const std::uint64_t bound = choose_quant_bits(e, 10);
  CHECK(bound > 0);
  CHECK(bound == skellam_noise_bound(e));
  privacy::Quantizer(e.clip_range, e.quant_bits).check_capacity(10, bound);  // does not throw
  std::vector<std::uint32_t> sum(len + 2, 0);
  for (int i = 0; i < 10; ++i) {
    privacy::ChaChaRng rng(seed(static_cast<std::uint8_t>(i + 1)));
    sum = ring_add(sum, encode_secure(e, std::vector<float>(len, 0.01F), 1, 0, rng));
  }
  const DecodedSum d = decode_secure_sum(e, sum);
  // Noise stddev on the sum is sigma * C = 0.5: the mean over coordinates is near 0.1.
  double mean = 0, var = 0;
  for (float v : d.weighted_sum) mean += v / len;
  for (float v : d.weighted_sum) var += (v - mean) * (v - mean) / len;
  CHECK(mean == Approx(0.1).margin(0.15));
  CHECK(std::sqrt(var) == Approx(0.5).epsilon(0.25));
  CHECK(std::isnan(d.mean_train_loss));
}

TEST_CASE("update_codec: bad inputs are refused with a specific error") {
  UpdateEncoding e = enc_for(4);
  privacy::ChaChaRng rng(seed(1));
  const std::vector<float> ok{0, 0, 0, 0};
  CHECK_THROWS_WITH(clip_update(e, std::vector<float>{1, 2, 3}), Catch::Contains("3 values") && Catch::Contains("4"));
  std::vector<float> nan = ok;
  nan[2] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(encode_secure(e, nan, 10, 0, rng), Catch::Contains("non-finite") && Catch::Contains("index 2"));
  std::vector<float> inf = ok;
  inf[0] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(weighted_vector(e, inf, 10, 0), Error);
  CHECK_THROWS_WITH(encode_secure(e, ok, 0, 0, rng), Catch::Contains("0 training examples"));
  CHECK_THROWS_WITH(decode_secure_sum(e, std::vector<std::uint32_t>(5)), Catch::Contains("expected 6"));

  UpdateEncoding b = e;
  b.update_length = 0;
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("update_length"));
  b = e;
  b.clip_range = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("clip_range"));
  b = e;
  b.quant_bits = 33;
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("quant_bits"));
  CHECK_NOTHROW(validate(b, false));  // the plain path does not quantise
  b = e;
  b.dp = protocol::DpMode::kDistributed;
  b.dp_clip_norm = 1;
  CHECK_THROWS_WITH(validate(b, false), Catch::Contains("secure"));
  b.dp_clip_norm = 0;
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("dp_clip_norm"));
  b = e;
  b.example_scale = 0;
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("example_scale"));
  b = e;
  b.loss_cap = -1;
  CHECK_THROWS_WITH(validate(b, true), Catch::Contains("loss_cap"));
  // Too many bits for the number of inputs: the capacity check refuses.
  b = enc_for(4, 4);
  b.dp = protocol::DpMode::kDistributed;
  b.dp_clip_norm = 1;
  b.noise_multiplier = 5;
  b.quant_bits = 31;
  CHECK_THROWS_AS(encode_secure(b, ok, 10, 0, rng), Error);
}
