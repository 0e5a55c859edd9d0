// Thin wrappers over libsodium: the only cryptographic primitives fedge uses.
// X25519 key agreement, a keyed-BLAKE2b key-derivation step, XChaCha20-Poly1305
// AEAD for secret shares routed through the coordinator, and OS randomness.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace fedge::privacy {

using Key32 = std::array<std::uint8_t, 32>;  // secret keys, public keys, seeds

// Calls sodium_init() once per process (thread-safe); every wrapper calls it,
// so callers never need to. Throws Error(kRuntime) if libsodium cannot start.
void ensure_sodium();

// Fills `out` with bytes from the OS CSPRNG (randombytes_buf).
void random_bytes(std::span<std::uint8_t> out);
Key32 random_key();
// Uniform in [0, bound), no modulo bias (randombytes_uniform for 32-bit bounds,
// rejection sampling above).
std::uint64_t random_below(std::uint64_t bound);

struct KeyPair {
  Key32 public_key{};
  Key32 secret_key{};
};

// A fresh X25519 key pair.
KeyPair generate_keypair();
// The X25519 public key of a secret key.
Key32 public_key_of(const Key32& secret_key);
// Raw X25519(secret, peer_public). Throws Error(kProtocol) when the peer key is
// a low-order point (the result would be all zeros and predictable).
Key32 x25519(const Key32& secret_key, const Key32& peer_public);

// Derives a 32-byte key from `input_key`, bound to a purpose `label` and a
// `context` (e.g. round id and the two parties): BLAKE2b keyed with the input
// key over label || 0 || context. Distinct labels/contexts give independent keys.
Key32 derive_key(const Key32& input_key, std::string_view label,
                 std::span<const std::uint8_t> context = {});

// The agreed key between `my_secret` and `peer_public` for `label`, symmetric in
// the two parties: the context includes both public keys in sorted order.
Key32 agree(const Key32& my_secret, const Key32& peer_public, std::string_view label,
            std::span<const std::uint8_t> context = {});

// Same, with the caller's own public key precomputed (saves one base-point
// multiplication per call when one secret agrees with many peers).
Key32 agree(const Key32& my_secret, const Key32& my_public, const Key32& peer_public,
            std::string_view label, std::span<const std::uint8_t> context = {});

// XChaCha20-Poly1305: output is nonce(24) || ciphertext || tag(16). The random
// 192-bit nonce makes key reuse across messages safe.
inline constexpr std::size_t kAeadOverhead = 24 + 16;
std::vector<std::uint8_t> aead_encrypt(const Key32& key, std::span<const std::uint8_t> plaintext,
                                       std::span<const std::uint8_t> associated_data);
// Throws Error(kProtocol) if the box is too short or fails authentication.
std::vector<std::uint8_t> aead_decrypt(const Key32& key, std::span<const std::uint8_t> box,
                                       std::span<const std::uint8_t> associated_data);

// ---- Ed25519 signatures (the malicious-server SecAgg mode's long-term identities) ----
using Signature = std::array<std::uint8_t, 64>;
struct SigningKeyPair {
  Key32 public_key{};  // the verification key peers hold in their roster
  Key32 seed{};        // secret: the 32-byte Ed25519 seed the key pair is derived from
};
// A fresh Ed25519 key pair (crypto_sign_keypair).
SigningKeyPair generate_signing_keypair();
// The key pair of a stored seed (crypto_sign_seed_keypair), for key files.
SigningKeyPair signing_keypair_from_seed(const Key32& seed);
// Detached Ed25519 signature of `message`.
Signature sign(const SigningKeyPair& key, std::span<const std::uint8_t> message);
// True when `signature` is `public_key`'s signature of `message`.
bool verify_signature(const Key32& public_key, std::span<const std::uint8_t> message, const Signature& signature);

// Unkeyed BLAKE2b-256 of label || 0 || data: commitments and message digests.
Key32 hash32(std::string_view label, std::span<const std::uint8_t> data);

// Overwrites secrets in memory (sodium_memzero), so the compiler keeps it.
void wipe(std::span<std::uint8_t> bytes);

}  // namespace fedge::privacy
