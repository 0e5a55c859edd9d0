#include <catch2/catch.hpp>

#include <numeric>
#include <random>

#include "fedge/common/error.h"
#include "fedge/privacy/crypto.h"
#include "fedge/privacy/shamir.h"

using namespace fedge::privacy;
using P = Fp61;

TEST_CASE("Fp61 arithmetic at the edges", "[privacy][shamir]") {
  const std::uint64_t p = P::kP;
  CHECK(P::add(p - 1, 1) == 0);
  CHECK(P::add(p - 1, p - 1) == p - 2);
  CHECK(P::sub(0, 1) == p - 1);
  CHECK(P::sub(5, 5) == 0);
  CHECK(P::mul(p - 1, p - 1) == 1);  // (-1)^2
  CHECK(P::mul(p - 1, 2) == p - 2);
  CHECK(P::mul(0, p - 1) == 0);
  CHECK(P::mul(1ULL << 60, 2) == 0 + 1);  // 2^61 = 1 mod p
  CHECK(P::reduce(static_cast<unsigned __int128>(p)) == 0);
  for (std::uint64_t a : std::vector<std::uint64_t>{1, 2, 3, 10000, p - 1, p - 2, 123456789012345ULL})
    CHECK(P::mul(a, P::inv(a)) == 1);
  CHECK(P::inv(p - 1) == p - 1);
  CHECK_THROWS_AS(P::inv(0), fedge::Error);
  for (int i = 0; i < 1000; ++i) CHECK(P::random() < p);
}

TEST_CASE("Shamir: any t of n reconstruct, fewer fail", "[privacy][shamir]") {
  const Key32 secret = random_key();
  const std::uint32_t n = 7, t = 4;
  std::vector<std::uint32_t> xs(n);
  std::iota(xs.begin(), xs.end(), 1);
  const auto shares = shamir_split(secret, t, xs);
  REQUIRE(shares.size() == n);
  // Every subset of size t (and larger) reconstructs.
  int subsets = 0;
  for (std::uint32_t mask = 0; mask < (1u << n); ++mask) {
    if (__builtin_popcount(mask) < static_cast<int>(t)) continue;
    std::vector<Share> pick;
    for (std::uint32_t i = 0; i < n; ++i)
      if (mask & (1u << i)) pick.push_back(shares[i]);
    const auto got = shamir_reconstruct(pick, t, secret.size());
    CHECK(std::equal(got.begin(), got.end(), secret.begin()));
    ++subsets;
  }
  CHECK(subsets == 64);  // C(7,4)+C(7,5)+C(7,6)+C(7,7)
  // t - 1 shares: a clear error, and interpolation from them gives a wrong value.
  std::vector<Share> few(shares.begin(), shares.begin() + (t - 1));
  try {
    shamir_reconstruct(few, t, secret.size());
    FAIL("expected an error");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kPrivacy);
    CHECK(std::string(e.what()).find("at least 4") != std::string::npos);
  }
  const auto wrong = interpolate_at_zero(few);
  std::vector<Share> full(shares.begin(), shares.begin() + t);
  CHECK(wrong != interpolate_at_zero(full));
}

TEST_CASE("Shamir: large ids, edge secrets, serialisation", "[privacy][shamir]") {
  std::vector<std::uint32_t> xs = {1, 9999, 10000, 5000, 2};
  for (std::uint8_t fill : {std::uint8_t{0}, std::uint8_t{0xff}}) {
    std::vector<std::uint8_t> secret(32, fill);
    auto shares = shamir_split(secret, 3, xs);
    std::vector<Share> pick = {shares[4], shares[2], shares[1]};
    CHECK(shamir_reconstruct(pick, 3, 32) == secret);
    for (auto& s : shares) {
      const auto bytes = share_to_bytes(s);
      const Share back = share_from_bytes(bytes, shamir_chunks(32));
      CHECK(back.x == s.x);
      CHECK(back.y == s.y);
    }
  }
  // threshold 1: every share is the secret itself.
  std::vector<std::uint8_t> secret = {1, 2, 3};
  auto one = shamir_split(secret, 1, xs);
  CHECK(shamir_reconstruct(std::span(one).subspan(3, 1), 1, 3) == secret);
}

TEST_CASE("Shamir: bad input is refused", "[privacy][shamir]") {
  std::vector<std::uint8_t> secret(32, 7);
  std::vector<std::uint32_t> dup = {1, 2, 2};
  CHECK_THROWS_AS(shamir_split(secret, 2, dup), fedge::Error);
  std::vector<std::uint32_t> zero = {0, 1, 2};
  CHECK_THROWS_AS(shamir_split(secret, 2, zero), fedge::Error);
  std::vector<std::uint32_t> xs = {1, 2, 3};
  CHECK_THROWS_AS(shamir_split(secret, 4, xs), fedge::Error);
  CHECK_THROWS_AS(shamir_split(secret, 0, xs), fedge::Error);
  auto shares = shamir_split(secret, 2, xs);
  std::vector<Share> same = {shares[0], shares[0]};
  CHECK_THROWS_AS(shamir_reconstruct(same, 2, 32), fedge::Error);
  // Corrupted share: the decoded chunk is out of range (or at least wrong).
  std::vector<Share> bad = {shares[0], shares[1]};
  bad[1].y[0] = P::add(bad[1].y[0], 1);
  bool threw = false;
  try {
    threw = shamir_reconstruct(bad, 2, 32) != secret;
  } catch (const fedge::Error&) {
    threw = true;
  }
  CHECK(threw);
  // Wire form: truncated, oversized, unreduced element.
  auto bytes = share_to_bytes(shares[0]);
  CHECK_THROWS_AS(share_from_bytes(std::span(bytes).first(bytes.size() - 1), shamir_chunks(32)), fedge::Error);
  bytes.push_back(0);
  CHECK_THROWS_AS(share_from_bytes(bytes, shamir_chunks(32)), fedge::Error);
  bytes.pop_back();
  for (int b = 4; b < 12; ++b) bytes[b] = 0xff;
  CHECK_THROWS_AS(share_from_bytes(bytes, shamir_chunks(32)), fedge::Error);
}
