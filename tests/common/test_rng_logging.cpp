#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>

#include "fedge/common/error.h"
#include "fedge/common/logging.h"
#include "fedge/common/rng.h"

TEST_CASE("rng is reproducible from a seed and streams are independent", "[rng]") {
  fedge::Rng a(7), b(7), c(8);
  std::vector<std::uint64_t> xa, xb, xc;
  for (int i = 0; i < 8; ++i) {
    xa.push_back(a());
    xb.push_back(b());
    xc.push_back(c());
  }
  CHECK(xa == xb);
  CHECK(xa != xc);
  CHECK(fedge::derive_seed(1, "node/1") != fedge::derive_seed(1, "node/2"));
  CHECK(fedge::derive_seed(1, "node/1") == fedge::derive_seed(1, "node/1"));
  CHECK(fedge::derive_seed(1, std::uint64_t{3}) != fedge::derive_seed(2, std::uint64_t{3}));
  // SplitMix64 reference values (Vigna's splitmix64.c with state 0 -> first output).
  CHECK(fedge::splitmix64(0) == 0xe220a8397b1dcdafULL);
}

TEST_CASE("rng uniform and below stay in range and cover it", "[rng]") {
  fedge::Rng rng(123, "test");
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    double u = rng.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    auto k = rng.below(10);
    REQUIRE(k < 10);
    seen.insert(k);
  }
  CHECK(seen.size() == 10);
  CHECK_THROWS_AS(rng.below(0), fedge::Error);
}

TEST_CASE("log level comes from the flag, then FEDGE_LOG_LEVEL, then info", "[logging]") {
  ::unsetenv("FEDGE_LOG_LEVEL");
  CHECK(fedge::resolve_log_level("") == spdlog::level::info);
  CHECK(fedge::resolve_log_level("debug") == spdlog::level::debug);
  CHECK(fedge::resolve_log_level("warning") == spdlog::level::warn);
  ::setenv("FEDGE_LOG_LEVEL", "error", 1);
  CHECK(fedge::resolve_log_level("") == spdlog::level::err);
  CHECK(fedge::resolve_log_level("trace") == spdlog::level::trace);
  ::unsetenv("FEDGE_LOG_LEVEL");
  try {
    fedge::resolve_log_level("loud");
    FAIL("unknown level accepted");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kInvalidInput);
    CHECK(std::string(e.what()).find("'loud'") != std::string::npos);
  }
}
