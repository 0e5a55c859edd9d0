// Seeded randomness for reproducible runs. Everything that draws random numbers
// for simulation, data or initialisation takes an Rng derived from the run's
// seed, so one seed reproduces a whole run. (Cryptographic randomness lives in
// privacy/ and never comes from here.)
#pragma once

#include <cstdint>
#include <random>
#include <string_view>

namespace fedge {

// SplitMix64 step: a well-mixed 64-bit function used to derive seeds.
std::uint64_t splitmix64(std::uint64_t x);

// Seed of an independent stream named by `key` (e.g. "node/17", "partition").
std::uint64_t derive_seed(std::uint64_t seed, std::string_view key);
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index);

class Rng {
 public:
  using result_type = std::uint64_t;
  explicit Rng(std::uint64_t seed) : engine_(splitmix64(seed)) {}
  Rng(std::uint64_t seed, std::string_view stream) : Rng(derive_seed(seed, stream)) {}

  static constexpr result_type min() { return std::mt19937_64::min(); }
  static constexpr result_type max() { return std::mt19937_64::max(); }
  result_type operator()() { return engine_(); }

  double uniform();                                  // [0, 1)
  double normal(double mean = 0.0, double stddev = 1.0);
  std::uint64_t below(std::uint64_t n);              // [0, n), n > 0
  Rng fork(std::string_view stream) { return Rng(engine_(), stream); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace fedge
