#include "fedge/privacy/prg.h"

#include "fedge/privacy/aes.h"

#include <sodium.h>

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace fedge::privacy {
namespace {

// Keystream of block `block` (nonce = block index, little-endian) into `out`
// (at most kPrgBlockWords words).
inline void keystream_block(PrgKind kind, const Key32& seed, std::uint64_t block, std::uint32_t* out,
                            std::size_t words) {
  if (kind == PrgKind::kAes256Ctr) {
    // 4 words per AES block; the buffer holds a whole PRG block, so rounding up is safe.
    aes256_ctr_keystream(seed.data(), block * (kPrgBlockWords / 4), reinterpret_cast<std::uint8_t*>(out),
                         (words + 3) / 4);
    return;
  }
  unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  for (int i = 0; i < 8; ++i) nonce[i] = static_cast<unsigned char>(block >> (8 * i));
  crypto_stream_chacha20_ietf(reinterpret_cast<unsigned char*>(out), words * 4, nonce, seed.data());
}

// Calls fn(stream_ptr, dst_index, count) over the stream range [offset, offset+n),
// one keystream block at a time from a thread-local buffer.
template <class Fn>
void for_each_block(PrgKind kind, const Key32& seed, std::size_t n, std::uint64_t offset, Fn&& fn) {
  alignas(64) static thread_local std::uint32_t buf[kPrgBlockWords];
  std::size_t done = 0;
  while (done < n) {
    const std::uint64_t pos = offset + done;
    const std::uint64_t block = pos / kPrgBlockWords;
    const std::size_t skip = static_cast<std::size_t>(pos % kPrgBlockWords);
    const std::size_t take = std::min(kPrgBlockWords - skip, n - done);
    keystream_block(kind, seed, block, buf, skip + take);
    fn(buf + skip, done, take);
    done += take;
  }
}

}  // namespace

bool prg_supported(PrgKind kind) { return kind == PrgKind::kChaCha20 || kind == PrgKind::kAes256Ctr; }

const char* prg_name(PrgKind kind) { return kind == PrgKind::kChaCha20 ? "chacha20" : "aes256ctr"; }

void prg_fill(const Key32& seed, std::span<std::uint32_t> out, std::uint64_t offset, PrgKind kind) {
  ensure_sodium();
  for_each_block(kind, seed, out.size(), offset, [&](const std::uint32_t* ks, std::size_t at, std::size_t k) {
    std::memcpy(out.data() + at, ks, k * 4);
  });
}

void prg_add(const Key32& seed, std::span<std::uint32_t> acc, bool subtract, std::uint64_t offset,
             PrgKind kind) {
  ensure_sodium();
  if (kind == PrgKind::kAes256Ctr && acc.size() >= 8) {
    // Fused AES path for whole AES blocks; the unaligned head/tail words go
    // through the buffered path below.
    const std::size_t head = static_cast<std::size_t>((4 - offset % 4) % 4);
    const std::size_t body = (acc.size() - head) / 4;
    if (head) prg_add(seed, acc.first(head), subtract, offset, kind);
    aes256_ctr_add(seed.data(), (offset + head) / 4, acc.data() + head, body, subtract);
    const std::size_t tail_at = head + 4 * body;
    if (tail_at < acc.size()) prg_add(seed, acc.subspan(tail_at), subtract, offset + tail_at, kind);
    return;
  }
  std::uint32_t* a = acc.data();
  if (subtract) {
    for_each_block(kind, seed, acc.size(), offset, [a](const std::uint32_t* ks, std::size_t at, std::size_t k) {
      std::uint32_t* __restrict dst = a + at;
      for (std::size_t i = 0; i < k; ++i) dst[i] -= ks[i];
    });
  } else {
    for_each_block(kind, seed, acc.size(), offset, [a](const std::uint32_t* ks, std::size_t at, std::size_t k) {
      std::uint32_t* __restrict dst = a + at;
      for (std::size_t i = 0; i < k; ++i) dst[i] += ks[i];
    });
  }
}

void prg_add_many(std::span<std::uint32_t> acc, std::span<const MaskJob> jobs, int threads, PrgKind kind) {
  ensure_sodium();
  const std::size_t n = acc.size();
  const std::int64_t blocks = static_cast<std::int64_t>((n + kPrgBlockWords - 1) / kPrgBlockWords);
  if (threads <= 0) threads = omp_get_max_threads();
  if (blocks < 2) threads = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::size_t lo = static_cast<std::size_t>(b) * kPrgBlockWords;
    const std::size_t len = std::min(kPrgBlockWords, n - lo);
    for (const MaskJob& job : jobs) prg_add(job.seed, acc.subspan(lo, len), job.subtract, lo, kind);
  }
}

ChaChaRng::ChaChaRng(const Key32& seed) : seed_(seed) { ensure_sodium(); }
ChaChaRng::ChaChaRng() : seed_(random_key()) {}

void ChaChaRng::refill() {
  // A separate nonce space from prg_fill (top bit set) so the same seed used for
  // both never yields correlated streams.
  unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  for (int i = 0; i < 8; ++i) nonce[i] = static_cast<unsigned char>(block_ >> (8 * i));
  nonce[11] = 0x80;
  crypto_stream_chacha20_ietf(reinterpret_cast<unsigned char*>(buf_), sizeof buf_, nonce, seed_.data());
  ++block_;
  pos_ = 0;
}

ChaChaRng::result_type ChaChaRng::operator()() {
  if (pos_ == 64) refill();
  return buf_[pos_++];
}

double ChaChaRng::uniform() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

}  // namespace fedge::privacy
