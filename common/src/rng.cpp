#include "fedge/common/rng.h"

#include "fedge/common/error.h"

namespace fedge {

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t derive_seed(std::uint64_t seed, std::string_view key) {
  // FNV-1a over the key, then mixed with the seed: stable across platforms and
  // runs, unlike std::hash.
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return splitmix64(seed ^ splitmix64(h));
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index) {
  return splitmix64(seed ^ splitmix64(index + 0x632be59bd9b4e019ULL));
}

double Rng::uniform() {
  // 53 random bits -> [0, 1) exactly representable doubles.
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double Rng::normal(double mean, double stddev) {
  std::normal_distribution<double> dist(mean, stddev);
  return dist(engine_);
}

std::uint64_t Rng::below(std::uint64_t n) {
  if (n == 0) throw Error(ErrorKind::kInvalidInput, "Rng::below: n must be positive");
  // Rejection sampling avoids modulo bias.
  const std::uint64_t limit = max() - (max() % n);
  std::uint64_t x;
  do {
    x = engine_();
  } while (x >= limit);
  return x % n;
}

}  // namespace fedge
