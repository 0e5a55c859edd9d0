// Shamir secret sharing over the Mersenne prime field p = 2^61 - 1. Any byte
// string (a 32-byte seed or X25519 secret key) is cut into 7-byte chunks, each
// one field element shared with its own random polynomial of degree t - 1.
// x-coordinates are participant ids 1..n (n <= 10,000 << p).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fedge::privacy {

// Arithmetic mod p = 2^61 - 1. Inputs must be reduced (< p).
struct Fp61 {
  static constexpr std::uint64_t kP = (1ULL << 61) - 1;
  static std::uint64_t reduce(unsigned __int128 v) {
    std::uint64_t r = static_cast<std::uint64_t>(v & kP) + static_cast<std::uint64_t>(v >> 61);
    r = (r & kP) + (r >> 61);
    return r == kP ? 0 : r;
  }
  static std::uint64_t add(std::uint64_t a, std::uint64_t b) {
    std::uint64_t r = a + b;
    return r >= kP ? r - kP : r;
  }
  static std::uint64_t sub(std::uint64_t a, std::uint64_t b) { return a >= b ? a - b : a + kP - b; }
  static std::uint64_t mul(std::uint64_t a, std::uint64_t b) {
    return reduce(static_cast<unsigned __int128>(a) * b);
  }
  static std::uint64_t pow(std::uint64_t a, std::uint64_t e);
  // Multiplicative inverse (Fermat); throws Error(kInvalidInput) for 0.
  static std::uint64_t inv(std::uint64_t a);
  // A uniform element from the OS CSPRNG (rejection sampling: no modulo bias).
  static std::uint64_t random();
};

inline constexpr std::size_t kShamirChunkBytes = 7;  // 56 bits < 61: every chunk fits

struct Share {
  std::uint32_t x = 0;             // the holder's id, never 0
  std::vector<std::uint64_t> y;    // one element per chunk of the secret
};

// Splits `secret` into one share per x in `xs` (distinct, 1..2^31); any
// `threshold` of them reconstruct it. Throws Error(kInvalidInput) for
// threshold 0, threshold > xs.size(), x = 0 or repeated x.
std::vector<Share> shamir_split(std::span<const std::uint8_t> secret, std::uint32_t threshold,
                                std::span<const std::uint32_t> xs);

// Lagrange coefficients at 0 for the points `xs` (distinct, nonzero): the
// secret is sum_i coeff[i] * y_i. O(t^2); reuse across secrets with the same xs.
std::vector<std::uint64_t> lagrange_at_zero(std::span<const std::uint32_t> xs);

// Interpolates at 0 from exactly the shares given (no threshold check): with
// fewer than t shares this returns an unrelated value. Low-level; prefer
// shamir_reconstruct.
std::vector<std::uint64_t> interpolate_at_zero(std::span<const Share> shares);

// Reconstructs a `secret_len`-byte secret from the first `threshold` shares.
// Throws Error(kPrivacy) with fewer than `threshold` shares, Error(kProtocol)
// for repeated x, mismatched share lengths, or a result that is not a valid
// chunk encoding (a sign of corrupted shares).
std::vector<std::uint8_t> shamir_reconstruct(std::span<const Share> shares, std::uint32_t threshold,
                                             std::size_t secret_len);

// Elements in a share of a secret of `secret_len` bytes.
inline std::size_t shamir_chunks(std::size_t secret_len) {
  return (secret_len + kShamirChunkBytes - 1) / kShamirChunkBytes;
}

// Wire form: x (u32 LE) then each y (u64 LE). Parsing checks the length for
// `chunks` elements and that every element is < p (Error(kProtocol) otherwise).
std::vector<std::uint8_t> share_to_bytes(const Share& share);
Share share_from_bytes(std::span<const std::uint8_t> bytes, std::size_t chunks);

}  // namespace fedge::privacy
