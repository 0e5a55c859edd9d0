#include "fedge/privacy/quantize.h"

#include <string>

#include "fedge/common/error.h"

namespace fedge::privacy {

namespace {
constexpr std::uint64_t kInt32Max = 0x7fffffffULL;
}

Quantizer::Quantizer(double clip, std::uint32_t bits) : clip_(clip), bits_(bits) {
  if (!(clip > 0.0) || !std::isfinite(clip))
    throw Error(ErrorKind::kInvalidInput, "quantizer clip range must be a positive finite number");
  if (bits < 2 || bits > 32)
    throw Error(ErrorKind::kInvalidInput,
                "quantizer bits must be in 2..32, got " + std::to_string(bits));
  qmax_ = (std::int64_t{1} << (bits - 1)) - 1;
}

std::uint32_t Quantizer::bits_for(std::uint64_t n, std::uint64_t noise_bound) {
  if (n == 0) throw Error(ErrorKind::kInvalidInput, "bits_for: need at least one input");
  for (std::uint32_t bits = 32; bits >= 2; --bits) {
    const std::uint64_t qmax = (std::uint64_t{1} << (bits - 1)) - 1;
    if (qmax + noise_bound <= kInt32Max / n) return bits;
  }
  throw Error(ErrorKind::kPrivacy, "cannot quantise " + std::to_string(n) +
                                       " inputs into a 32-bit ring without overflow; "
                                       "reduce the number of clients per aggregate or the noise bound");
}

void Quantizer::check_capacity(std::uint64_t n, std::uint64_t noise_bound) const {
  const std::uint64_t per = static_cast<std::uint64_t>(qmax_) + noise_bound;
  if (n == 0 || per > kInt32Max / n)
    throw Error(ErrorKind::kPrivacy,
                "quantised sum of " + std::to_string(n) + " inputs with " + std::to_string(bits_) +
                    " bits (+noise bound " + std::to_string(noise_bound) +
                    ") can overflow the 32-bit ring; use Quantizer::bits_for(n) bits or fewer");
}

void Quantizer::check_sizes(std::size_t a, std::size_t b) const {
  if (a != b)
    throw Error(ErrorKind::kInvalidInput, "quantizer: input has " + std::to_string(a) +
                                              " values but output has " + std::to_string(b));
}

void Quantizer::decode_sum(std::span<const std::uint32_t> sum, std::span<float> out) const {
  check_sizes(sum.size(), out.size());
  const double inv = 1.0 / scale();
  for (std::size_t i = 0; i < sum.size(); ++i)
    out[i] = static_cast<float>(static_cast<double>(static_cast<std::int32_t>(sum[i])) * inv);
}

}  // namespace fedge::privacy
