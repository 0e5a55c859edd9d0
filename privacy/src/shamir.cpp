#include "fedge/privacy/shamir.h"

#include <algorithm>
#include <string>
#include <unordered_set>

#include "fedge/common/error.h"
#include "fedge/privacy/crypto.h"

namespace fedge::privacy {

std::uint64_t Fp61::pow(std::uint64_t a, std::uint64_t e) {
  std::uint64_t r = 1;
  while (e) {
    if (e & 1) r = mul(r, a);
    a = mul(a, a);
    e >>= 1;
  }
  return r;
}

std::uint64_t Fp61::inv(std::uint64_t a) {
  if (a % kP == 0) throw Error(ErrorKind::kInvalidInput, "Fp61::inv: zero has no inverse");
  return pow(a % kP, kP - 2);
}

std::uint64_t Fp61::random() {
  std::uint64_t v;
  do {
    random_bytes(std::span(reinterpret_cast<std::uint8_t*>(&v), sizeof v));
    v &= kP;  // uniform in [0, 2^61); reject the single value p
  } while (v == kP);
  return v;
}

namespace {

void check_xs(std::span<const std::uint32_t> xs) {
  std::unordered_set<std::uint32_t> seen;
  for (std::uint32_t x : xs) {
    if (x == 0) throw Error(ErrorKind::kInvalidInput, "Shamir: x-coordinate 0 would reveal the secret");
    if (!seen.insert(x).second)
      throw Error(ErrorKind::kProtocol, "Shamir: x-coordinate " + std::to_string(x) + " appears twice");
  }
}

std::vector<std::uint64_t> to_chunks(std::span<const std::uint8_t> secret) {
  std::vector<std::uint64_t> c(shamir_chunks(secret.size()), 0);
  for (std::size_t i = 0; i < secret.size(); ++i)
    c[i / kShamirChunkBytes] |= std::uint64_t(secret[i]) << (8 * (i % kShamirChunkBytes));
  return c;
}

}  // namespace

std::vector<Share> shamir_split(std::span<const std::uint8_t> secret, std::uint32_t threshold,
                                std::span<const std::uint32_t> xs) {
  if (threshold == 0 || threshold > xs.size())
    throw Error(ErrorKind::kInvalidInput, "Shamir: threshold " + std::to_string(threshold) +
                                              " must be in 1.." + std::to_string(xs.size()));
  check_xs(xs);
  const std::vector<std::uint64_t> chunks = to_chunks(secret);
  std::vector<Share> shares(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    shares[i].x = xs[i];
    shares[i].y.resize(chunks.size());
  }
  std::vector<std::uint64_t> coeff(threshold);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    coeff[0] = chunks[c];
    for (std::uint32_t k = 1; k < threshold; ++k) coeff[k] = Fp61::random();
    for (std::size_t i = 0; i < xs.size(); ++i) {  // Horner
      std::uint64_t acc = 0;
      for (std::uint32_t k = threshold; k-- > 0;) acc = Fp61::add(Fp61::mul(acc, xs[i]), coeff[k]);
      shares[i].y[c] = acc;
    }
  }
  std::fill(coeff.begin(), coeff.end(), 0);
  return shares;
}

std::vector<std::uint64_t> lagrange_at_zero(std::span<const std::uint32_t> xs) {
  check_xs(xs);
  const std::size_t t = xs.size();
  // coeff_i = prod_{j != i} x_j / (x_j - x_i); one batched inversion of the
  // denominators (Montgomery's trick) keeps it to O(t^2) multiplications.
  std::vector<std::uint64_t> num(t, 1), den(t, 1);
  std::uint64_t all = 1;
  for (std::uint32_t x : xs) all = Fp61::mul(all, x);
  for (std::size_t i = 0; i < t; ++i) {
    std::uint64_t d = xs[i];  // divides x_i back out of `all` below
    for (std::size_t j = 0; j < t; ++j)
      if (j != i) d = Fp61::mul(d, Fp61::sub(xs[j], xs[i]));
    den[i] = d;
  }
  std::vector<std::uint64_t> prefix(t + 1, 1);
  for (std::size_t i = 0; i < t; ++i) prefix[i + 1] = Fp61::mul(prefix[i], den[i]);
  std::uint64_t inv = Fp61::inv(prefix[t]);
  std::vector<std::uint64_t> out(t);
  for (std::size_t i = t; i-- > 0;) {
    out[i] = Fp61::mul(all, Fp61::mul(inv, prefix[i]));
    inv = Fp61::mul(inv, den[i]);
  }
  return out;
}

std::vector<std::uint64_t> interpolate_at_zero(std::span<const Share> shares) {
  if (shares.empty()) throw Error(ErrorKind::kPrivacy, "Shamir: no shares to interpolate");
  std::vector<std::uint32_t> xs;
  for (const Share& s : shares) {
    if (s.y.size() != shares[0].y.size())
      throw Error(ErrorKind::kProtocol, "Shamir: share from x=" + std::to_string(s.x) +
                                            " has a different length than the others");
    xs.push_back(s.x);
  }
  const std::vector<std::uint64_t> lc = lagrange_at_zero(xs);
  std::vector<std::uint64_t> out(shares[0].y.size(), 0);
  for (std::size_t i = 0; i < shares.size(); ++i)
    for (std::size_t c = 0; c < out.size(); ++c)
      out[c] = Fp61::add(out[c], Fp61::mul(lc[i], shares[i].y[c] % Fp61::kP));
  return out;
}

std::vector<std::uint8_t> shamir_reconstruct(std::span<const Share> shares, std::uint32_t threshold,
                                             std::size_t secret_len) {
  if (threshold == 0) throw Error(ErrorKind::kInvalidInput, "Shamir: threshold must be positive");
  if (shares.size() < threshold)
    throw Error(ErrorKind::kPrivacy, "Shamir: " + std::to_string(shares.size()) +
                                         " shares given, at least " + std::to_string(threshold) +
                                         " are needed to reconstruct");
  for (const Share& s : shares)
    if (s.y.size() != shamir_chunks(secret_len))
      throw Error(ErrorKind::kProtocol, "Shamir: share from x=" + std::to_string(s.x) + " has " +
                                            std::to_string(s.y.size()) + " elements, expected " +
                                            std::to_string(shamir_chunks(secret_len)));
  const std::vector<std::uint64_t> chunks = interpolate_at_zero(shares.first(threshold));
  std::vector<std::uint8_t> out(secret_len);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const std::size_t bytes = std::min(kShamirChunkBytes, secret_len - c * kShamirChunkBytes);
    if (chunks[c] >> (8 * bytes))
      throw Error(ErrorKind::kProtocol,
                  "Shamir: reconstructed value is not a valid encoding; some shares are corrupt");
    for (std::size_t b = 0; b < bytes; ++b)
      out[c * kShamirChunkBytes + b] = static_cast<std::uint8_t>(chunks[c] >> (8 * b));
  }
  return out;
}

std::vector<std::uint8_t> share_to_bytes(const Share& share) {
  std::vector<std::uint8_t> out(4 + 8 * share.y.size());
  for (int b = 0; b < 4; ++b) out[b] = static_cast<std::uint8_t>(share.x >> (8 * b));
  for (std::size_t i = 0; i < share.y.size(); ++i)
    for (int b = 0; b < 8; ++b) out[4 + 8 * i + b] = static_cast<std::uint8_t>(share.y[i] >> (8 * b));
  return out;
}

Share share_from_bytes(std::span<const std::uint8_t> bytes, std::size_t chunks) {
  if (bytes.size() != 4 + 8 * chunks)
    throw Error(ErrorKind::kProtocol, "Shamir share of " + std::to_string(bytes.size()) +
                                          " bytes, expected " + std::to_string(4 + 8 * chunks));
  Share s;
  for (int b = 0; b < 4; ++b) s.x |= std::uint32_t(bytes[b]) << (8 * b);
  s.y.resize(chunks);
  for (std::size_t i = 0; i < chunks; ++i) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v |= std::uint64_t(bytes[4 + 8 * i + b]) << (8 * b);
    if (v >= Fp61::kP) throw Error(ErrorKind::kProtocol, "Shamir share element is not reduced mod p");
    s.y[i] = v;
  }
  if (s.x == 0) throw Error(ErrorKind::kProtocol, "Shamir share with x = 0");
  return s;
}

}  // namespace fedge::privacy
