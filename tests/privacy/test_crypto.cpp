#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "fedge/common/error.h"
#include "fedge/privacy/crypto.h"
#include "fedge/privacy/prg.h"
#include "fedge/privacy/quantize.h"

using namespace fedge::privacy;

TEST_CASE("X25519 agreement is symmetric and label-bound", "[privacy][crypto]") {
  const KeyPair a = generate_keypair(), b = generate_keypair();
  CHECK(public_key_of(a.secret_key) == a.public_key);
  const std::uint8_t ctx[] = {1, 2, 3};
  CHECK(agree(a.secret_key, b.public_key, "mask", ctx) == agree(b.secret_key, a.public_key, "mask", ctx));
  CHECK(agree(a.secret_key, b.public_key, "mask", ctx) != agree(a.secret_key, b.public_key, "enc", ctx));
  const Key32 zero{};
  CHECK_THROWS_AS(x25519(a.secret_key, zero), fedge::Error);  // low-order point
}

TEST_CASE("AEAD round trip and tamper detection", "[privacy][crypto]") {
  const Key32 k = random_key();
  const std::vector<std::uint8_t> msg = {10, 20, 30, 40};
  const std::uint8_t ad[] = {9, 9};
  auto box = aead_encrypt(k, msg, ad);
  CHECK(box.size() == msg.size() + kAeadOverhead);
  CHECK(aead_decrypt(k, box, ad) == msg);
  const std::uint8_t other_ad[] = {9, 8};
  CHECK_THROWS_AS(aead_decrypt(k, box, other_ad), fedge::Error);
  box[30] ^= 1;
  CHECK_THROWS_AS(aead_decrypt(k, box, ad), fedge::Error);
  CHECK_THROWS_AS(aead_decrypt(k, std::span(box).first(10), ad), fedge::Error);
}

TEST_CASE("PRG: deterministic, seekable, add/sub cancel", "[privacy][prg]") {
  Key32 seed{};
  seed[0] = 42;
  std::vector<std::uint32_t> a(10000), b(10000);
  prg_fill(seed, a);
  prg_fill(seed, b);
  CHECK(a == b);
  // Any offset matches the same words of the full stream.
  std::vector<std::uint32_t> part(3000);
  prg_fill(seed, part, 4000);
  CHECK(std::equal(part.begin(), part.end(), a.begin() + 4000));
  Key32 other = seed;
  other[31] = 1;
  prg_fill(other, b);
  CHECK(a != b);
  std::vector<std::uint32_t> acc(10000, 7);
  prg_add(seed, acc);
  for (std::size_t i = 0; i < acc.size(); ++i) REQUIRE(acc[i] == a[i] + 7u);
  prg_add(seed, acc, true);
  CHECK(acc == std::vector<std::uint32_t>(10000, 7));
  ChaChaRng r1(seed), r2(seed);
  for (int i = 0; i < 100; ++i) CHECK(r1() == r2());
  double u = r1.uniform();
  CHECK((u >= 0.0 && u < 1.0));
}

TEST_CASE("Quantizer: exact sums, rounding unbiased, overflow rule", "[privacy][quantize]") {
  Quantizer q(1.0, 16);
  CHECK(q.qmax() == 32767);
  std::mt19937_64 rng(1);
  std::vector<float> x = {0.5f, -0.25f, 2.0f, -3.0f, 0.0f};
  std::vector<std::uint32_t> e(5);
  q.encode(x, e, rng);
  CHECK(static_cast<std::int32_t>(e[2]) == 32767);   // clipped
  CHECK(static_cast<std::int32_t>(e[3]) == -32767);  // clipped
  CHECK(e[4] == 0u);
  std::vector<float> back(5);
  q.decode_sum(e, back);
  CHECK(back[0] == Approx(0.5).margin(1.0 / 32767));
  CHECK(back[1] == Approx(-0.25).margin(1.0 / 32767));
  // Stochastic rounding is unbiased: mean of many encodings of 0.3 / scale step.
  Quantizer coarse(1.0, 2);  // qmax = 1: values round to -1, 0, 1
  std::vector<float> v(20000, 0.3f);
  std::vector<std::uint32_t> ev(v.size());
  coarse.encode(v, ev, rng);
  double mean = 0;
  for (auto w : ev) mean += static_cast<std::int32_t>(w);
  mean /= v.size();
  CHECK(mean == Approx(0.3).margin(0.02));
  // Overflow rule: n * qmax <= 2^31 - 1.
  CHECK(Quantizer::bits_for(1) == 32);
  CHECK(Quantizer::bits_for(2) == 31);
  CHECK(Quantizer::bits_for(1000) == 22);  // 1000 * (2^21 - 1) < 2^31
  Quantizer(1.0, 22).check_capacity(1000);
  CHECK_THROWS_AS(Quantizer(1.0, 23).check_capacity(1000), fedge::Error);
  CHECK_THROWS_AS(Quantizer(1.0, 1), fedge::Error);
  CHECK_THROWS_AS(Quantizer(0.0, 8), fedge::Error);
  CHECK_THROWS_AS(Quantizer(1.0, 8).encode(x, std::span(e).first(2), rng), fedge::Error);
}
