// FedBuff under secure aggregation: each node scales its own update by its
// staleness weight before masking (federation::encode_secure), a SecAgg+ round
// among the buffer's contributors sums them, and the decoded sum gives exactly
// the plain buffer's step (aggregation/fedbuff.h) on integer-friendly inputs.
#include <catch2/catch.hpp>

#include <vector>

#include "fedge/aggregation/fedbuff.h"
#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"
#include "fedge/federation/update_codec.h"

using namespace fedge;
using namespace fedge::federation;

namespace {

// Scale 1 (clip_range = qmax = 127 at 8 bits) and an example scale of 127,
// so every weighted coordinate below is an integer: stochastic rounding is exact.
UpdateEncoding integer_encoding() {
  UpdateEncoding e;
  e.update_length = 3;
  e.clip_range = 127;
  e.quant_bits = 8;
  e.example_scale = 127;
  e.loss_cap = 0;
  e.num_clients = 3;
  return e;
}

struct Contribution {
  std::vector<float> update;
  std::uint64_t examples;
  std::uint64_t base_version;
};

const std::uint64_t kServerVersion = 15;
// Staleness 0, 3 and 15: weights 1, 1/2, 1/4; times examples / 127 that is
// 100/127, 32/127 and 30/127.
const std::vector<Contribution> kBuffer = {
    {{127, 0, -127}, 100, 15},
    {{127, 127, 0}, 64, 12},
    {{-127, 127, 127}, 120, 0},
};

}  // namespace

TEST_CASE("FedBuff: the SecAgg+ buffer sum equals the plain buffer sum exactly", "[federation][fedbuff]") {
  const UpdateEncoding enc = integer_encoding();
  aggregation::SecAggParams params{3, 3, 2, enc.vector_length(), {}, kFederationPrg};
  params.graph_seed[0] = 9;
  std::vector<std::vector<std::uint32_t>> masked_inputs;
  privacy::Key32 seed{};
  privacy::ChaChaRng rng(seed);
  aggregation::FedBuffBuffer plain(3, 3, aggregation::StalenessPolicy{0.5, 15});
  for (const auto& c : kBuffer) {
    // The node knows its staleness from the version it trained on and the
    // version the server announced for this buffer.
    const double w = aggregation::staleness_weight(kServerVersion - c.base_version);
    masked_inputs.push_back(encode_secure(enc, c.update, c.examples, 0.0, rng, 0, w));
    REQUIRE(plain.add(c.update, static_cast<double>(c.examples), c.base_version, kServerVersion));
  }
  const auto result = aggregation::secure_sum_in_process(4, params, masked_inputs);
  const DecodedSum secure = decode_secure_sum(enc, result.sum);
  const auto expected = plain.take();
  // Plain: 100 [127, 0, -127] + 32 [127, 127, 0] + 30 [-127, 127, 127] = 127 [102, 62, -70], W = 162.
  REQUIRE(expected.weighted_sum == std::vector<double>{127.0 * 102, 127.0 * 62, 127.0 * -70});
  REQUIRE(expected.total_weight == 162.0);
  // Secure: the same sums in units of example_scale (127).
  CHECK(secure.weighted_sum == std::vector<float>{102, 62, -70});
  CHECK(secure.total_weight == 162.0 / 127.0);
  const std::vector<float> global = {0.5f, -1.0f, 2.0f};
  const auto via_secagg = aggregation::fedbuff_step(global, secure.weighted_sum, secure.total_weight, 1.0);
  const auto via_plain = aggregation::fedbuff_step(global, expected.weighted_sum, expected.total_weight, 1.0);
  CHECK(via_secagg == via_plain);
  // The mean update is S / W = 127 [102, 62, -70] / 162 (the updates are +-127).
  CHECK(via_plain[0] == Approx(0.5 + 127.0 * 102 / 162));
  CHECK(via_plain[2] == Approx(2.0 - 127.0 * 70 / 162));
}

TEST_CASE("FedBuff: a staleness weight of 1 leaves the secure vector as a synchronous round's",
          "[federation][fedbuff]") {
  UpdateEncoding enc = integer_encoding();
  const std::vector<float> u = {1.5f, -3.25f, 7.0f};
  CHECK(weighted_vector(enc, u, 50, 0.0) == weighted_vector(enc, u, 50, 0.0, 0, 1.0));
  const auto half = weighted_vector(enc, u, 127, 0.0, 0, 0.5);
  CHECK(half == std::vector<float>{0.75f, -1.625f, 3.5f, 63.5f, 0.0f});
  CHECK_THROWS_WITH(weighted_vector(enc, u, 50, 0.0, 0, 0.0), Catch::Contains("staleness weight"));
  CHECK_THROWS_WITH(weighted_vector(enc, u, 50, 0.0, 0, 1.5), Catch::Contains("outside (0, 1]"));
}
