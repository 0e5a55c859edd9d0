// AES-256 through OpenSSL's EVP interface: the portable path of aes.h, for
// every CPU (OpenSSL uses ARMv8's AES instructions on ARM boards and AES-NI on
// x86 where it finds them; plain C elsewhere). Counter block i is the 128-bit
// little-endian integer i, as on the AES-NI path: OpenSSL's own CTR mode
// counts big-endian, so the counter blocks are written out here and encrypted
// with ECB, which gives the AES-NI path's keystream byte for byte.
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "aes_paths.h"
#include "fedge/common/error.h"

namespace fedge::privacy::aes_detail {
namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

// The calling thread's context (the PRG runs on OpenMP threads), keyed for
// AES-256-ECB without padding.
EVP_CIPHER_CTX* keyed_ecb(const std::uint8_t key[32]) {
  thread_local std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ecb(), nullptr, key, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1)
    throw Error(ErrorKind::kRuntime, "OpenSSL could not set up AES-256 (EVP_EncryptInit_ex failed)");
  return ctx.get();
}

// Encrypts `blocks` 16-byte blocks of buf in place (EVP allows in == out).
void encrypt_in_place(EVP_CIPHER_CTX* ctx, std::uint8_t* buf, std::size_t blocks) {
  int written = 0;
  if (EVP_EncryptUpdate(ctx, buf, &written, buf, static_cast<int>(16 * blocks)) != 1 ||
      written != static_cast<int>(16 * blocks))
    throw Error(ErrorKind::kRuntime, "OpenSSL AES-256 encryption failed (EVP_EncryptUpdate)");
}

// Counter blocks [first, first + blocks): 8 little-endian bytes, then 8 zeros.
void write_counters(std::uint64_t first, std::uint8_t* buf, std::size_t blocks) {
  std::memset(buf, 0, 16 * blocks);
  for (std::size_t i = 0; i < blocks; ++i) {
    const std::uint64_t c = first + i;
    for (int b = 0; b < 8; ++b) buf[16 * i + b] = static_cast<std::uint8_t>(c >> (8 * b));
  }
}

// Blocks per EVP call: 4 KiB of counters, large enough that the call's own
// cost vanishes and small enough to stay in L1.
constexpr std::size_t kChunkBlocks = 256;

}  // namespace

void openssl_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]) {
  std::memcpy(out, in, 16);
  encrypt_in_place(keyed_ecb(key), out, 1);
}

void openssl_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                           std::size_t blocks) {
  EVP_CIPHER_CTX* ctx = keyed_ecb(key);
  for (std::size_t done = 0; done < blocks;) {
    const std::size_t n = std::min(kChunkBlocks, blocks - done);
    write_counters(first_block + done, out + 16 * done, n);
    encrypt_in_place(ctx, out + 16 * done, n);
    done += n;
  }
}

void openssl_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc, std::size_t blocks,
                     bool subtract) {
  EVP_CIPHER_CTX* ctx = keyed_ecb(key);
  alignas(64) std::uint8_t stream[16 * kChunkBlocks];
  for (std::size_t done = 0; done < blocks;) {
    const std::size_t n = std::min(kChunkBlocks, blocks - done);
    write_counters(first_block + done, stream, n);
    encrypt_in_place(ctx, stream, n);
    // The keystream's bytes as little-endian words, as the AES-NI path adds them.
    std::uint32_t* dst = acc + 4 * done;
    for (std::size_t w = 0; w < 4 * n; ++w) {
      std::uint32_t k;
      std::memcpy(&k, stream + 4 * w, 4);
      dst[w] = subtract ? dst[w] - k : dst[w] + k;
    }
    done += n;
  }
}

}  // namespace fedge::privacy::aes_detail
