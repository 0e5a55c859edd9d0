// The AES-256 paths behind aes.h, one per file: aes_x86.cpp (AES-NI and
// VAES intrinsics, compiled on x86-64 only) and aes_openssl.cpp (OpenSSL's
// EVP, every CPU). aes.cpp picks one. Private to privacy/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedge::privacy::aes_detail {

#if defined(__x86_64__)
#define FEDGE_AES_X86 1
// CPU checks (the OS's saving of the AVX-512 state included for VAES).
bool cpu_has_aes_ni();
bool cpu_has_vaes();
// `wide`: the 512-bit VAES loop for whole groups of 32 blocks, AES-NI for the rest.
void x86_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]);
void x86_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                       std::size_t blocks, bool wide);
void x86_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc, std::size_t blocks,
                 bool subtract, bool wide);
#endif

void openssl_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16]);
void openssl_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                           std::size_t blocks);
void openssl_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc, std::size_t blocks,
                     bool subtract);

}  // namespace fedge::privacy::aes_detail
