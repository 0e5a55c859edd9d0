// AES-256 in counter mode with AES-NI (and VAES/AVX-512 where present): the
// faster of fedge's two mask PRGs on x86 servers. Counter block i is the
// 128-bit little-endian integer i; the key is a fresh 32-byte seed per stream,
// so no nonce is needed. Low-level: callers use prg.h with PrgKind::kAes256Ctr.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedge::privacy {

// True when the CPU has AES-NI (and SSE4.1).
bool aes_ni_available();
// True when the wide VAES + AVX-512F path will be used.
bool vaes_available();

// Encrypts one 16-byte block (for known-answer tests). Needs AES-NI.
void aes256_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]);

// Writes the keystream of counters [first_block, first_block + blocks) to out
// (16 * blocks bytes). `wide` = false forces the 128-bit AES-NI path (tests).
void aes256_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                          std::size_t blocks, bool wide = true);

// acc (as 4 uint32 words per AES block) += (or -=) the keystream of counters
// [first_block, first_block + blocks): fused, so the keystream never touches memory.
void aes256_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc,
                    std::size_t blocks, bool subtract, bool wide = true);

}  // namespace fedge::privacy
