// AES-256 in counter mode: the faster of fedge's two mask PRGs where the CPU
// has AES instructions. Counter block i is the 128-bit little-endian integer
// i; the key is a fresh 32-byte seed per stream, so no nonce is needed.
// Low-level: callers use prg.h with PrgKind::kAes256Ctr.
//
// Three paths give the same keystream, byte for byte (tests compare them):
// VAES + AVX-512 (4 blocks per instruction), AES-NI, and the portable path,
// OpenSSL's EVP AES-256 (every CPU; OpenSSL itself uses ARMv8's or x86's AES
// instructions where it finds them). kAuto takes the fastest the CPU has, and
// always the portable one in a FEDGE_PORTABLE build.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedge::privacy {

enum class AesPath : std::uint8_t { kAuto, kPortable, kAesNi, kVaes };

// True when the CPU has AES-NI (and SSE4.1); false on every non-x86 CPU.
bool aes_ni_available();
// True when the CPU has VAES and AVX-512F (and AES-NI).
bool vaes_available();
// Whether `path` runs here (kAuto and kPortable always do).
bool aes_path_available(AesPath path);
// The path kAuto stands for on this CPU and build (never kAuto).
AesPath aes_auto_path();
// "auto", "openssl", "aes-ni" or "vaes".
const char* aes_path_name(AesPath path);

// The functions below throw Error(kUnimplemented) for a path that does not
// run here (see aes_path_available).

// Encrypts one 16-byte block (for known-answer tests).
void aes256_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16],
                          AesPath path = AesPath::kAuto);

// Writes the keystream of counters [first_block, first_block + blocks) to out
// (16 * blocks bytes).
void aes256_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                          std::size_t blocks, AesPath path = AesPath::kAuto);

// acc (as 4 uint32 words per AES block) += (or -=) the keystream of counters
// [first_block, first_block + blocks); fused on the x86 paths, so the
// keystream never touches memory.
void aes256_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc,
                    std::size_t blocks, bool subtract, AesPath path = AesPath::kAuto);

}  // namespace fedge::privacy
