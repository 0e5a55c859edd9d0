// The mask generator of secure aggregation: ChaCha20 (IETF, libsodium) keyed by
// a 32-byte seed, expanded into a stream of uint32 words. Word w of the stream
// lives in block w / kPrgBlockWords, and block b is the keystream under nonce b,
// so any block can be produced on its own: threads split a vector by blocks
// without coordinating, and a server can expand only the range it needs.
#pragma once

#include <cstdint>
#include <limits>
#include <span>

#include "fedge/privacy/crypto.h"

namespace fedge::privacy {

// The stream cipher behind the masks; every party of a round must use the same.
// kChaCha20 runs anywhere (libsodium); kAes256Ctr runs anywhere too (aes.h: AES-NI
// or VAES intrinsics on x86, OpenSSL elsewhere, the same stream) and is about
// 2-3x faster on x86 servers with VAES; on a CPU without AES instructions
// OpenSSL's table-based AES is slower than ChaCha20.
enum class PrgKind : std::uint8_t { kChaCha20 = 0, kAes256Ctr = 1 };
// Whether this build can generate `kind`'s stream: true for both kinds since
// AES has a portable path; kept so that a future kind can say no.
bool prg_supported(PrgKind kind);
const char* prg_name(PrgKind kind);

// 16 KiB per block: big enough that the per-call key setup is noise, small
// enough that keystream and the target slice stay in L1/L2 while they are added.
inline constexpr std::size_t kPrgBlockWords = 4096;

// Writes stream words [offset, offset + out.size()) of `seed` into `out`.
void prg_fill(const Key32& seed, std::span<std::uint32_t> out, std::uint64_t offset = 0,
              PrgKind kind = PrgKind::kChaCha20);

// acc[i] += stream[offset + i] (mod 2^32), or -= when `subtract`. Generates the
// keystream block by block into a cache-resident buffer and adds in place.
void prg_add(const Key32& seed, std::span<std::uint32_t> acc, bool subtract = false,
             std::uint64_t offset = 0, PrgKind kind = PrgKind::kChaCha20);

// One mask of a sum: the stream of `seed`, added or subtracted.
struct MaskJob {
  Key32 seed{};
  bool subtract = false;
};

// acc += sum of all jobs' streams (words [0, acc.size())). Works block by block
// (each acc block stays in L1 while every job's keystream is added to it) and
// splits the blocks across `threads` OpenMP threads (<= 0: all available).
void prg_add_many(std::span<std::uint32_t> acc, std::span<const MaskJob> jobs, int threads = 1,
                  PrgKind kind = PrgKind::kChaCha20);

// A cryptographically secure UniformRandomBitGenerator (64-bit words) over the
// same ChaCha20 stream: for DP noise and stochastic rounding. Deterministic for
// a given seed (tests); seed it from random_key() in production.
class ChaChaRng {
 public:
  using result_type = std::uint64_t;
  explicit ChaChaRng(const Key32& seed);
  ChaChaRng();  // seeded from the OS CSPRNG
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()();
  double uniform();  // [0, 1) with 53 random bits

 private:
  void refill();
  Key32 seed_;
  std::uint64_t block_ = 0;
  std::uint64_t buf_[64]{};
  std::size_t pos_ = 64;
};

}  // namespace fedge::privacy
