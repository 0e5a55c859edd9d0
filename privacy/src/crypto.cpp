#include "fedge/privacy/crypto.h"

#include <sodium.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "fedge/common/error.h"

namespace fedge::privacy {

void ensure_sodium() {
  static std::once_flag flag;
  static int status = 0;
  std::call_once(flag, [] { status = sodium_init(); });
  if (status < 0) throw Error(ErrorKind::kRuntime, "libsodium failed to initialise (sodium_init < 0)");
}

void random_bytes(std::span<std::uint8_t> out) {
  ensure_sodium();
  randombytes_buf(out.data(), out.size());
}

Key32 random_key() {
  Key32 k;
  random_bytes(k);
  return k;
}

std::uint64_t random_below(std::uint64_t bound) {
  if (bound == 0) throw Error(ErrorKind::kInvalidInput, "random_below: bound must be positive");
  ensure_sodium();
  if (bound <= 0xffffffffULL) return randombytes_uniform(static_cast<std::uint32_t>(bound));
  // Rejection sampling on the smallest power-of-two range that covers bound.
  const int bits = 64 - __builtin_clzll(bound - 1);
  const std::uint64_t mask = bits == 64 ? ~0ULL : ((1ULL << bits) - 1);
  for (;;) {
    std::uint64_t v;
    randombytes_buf(&v, sizeof v);
    v &= mask;
    if (v < bound) return v;
  }
}

KeyPair generate_keypair() {
  ensure_sodium();
  KeyPair kp;
  randombytes_buf(kp.secret_key.data(), kp.secret_key.size());
  crypto_scalarmult_base(kp.public_key.data(), kp.secret_key.data());
  return kp;
}

Key32 public_key_of(const Key32& secret_key) {
  ensure_sodium();
  Key32 pk;
  crypto_scalarmult_base(pk.data(), secret_key.data());
  return pk;
}

Key32 x25519(const Key32& secret_key, const Key32& peer_public) {
  ensure_sodium();
  Key32 out;
  if (crypto_scalarmult(out.data(), secret_key.data(), peer_public.data()) != 0)
    throw Error(ErrorKind::kProtocol,
                "X25519: peer public key is a low-order point; reject this peer's key");
  return out;
}

Key32 derive_key(const Key32& input_key, std::string_view label,
                 std::span<const std::uint8_t> context) {
  ensure_sodium();
  crypto_generichash_state st;
  crypto_generichash_init(&st, input_key.data(), input_key.size(), 32);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(label.data()), label.size());
  const unsigned char zero = 0;  // separates label from context unambiguously
  crypto_generichash_update(&st, &zero, 1);
  crypto_generichash_update(&st, context.data(), context.size());
  Key32 out;
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

SigningKeyPair generate_signing_keypair() { return signing_keypair_from_seed(random_key()); }

SigningKeyPair signing_keypair_from_seed(const Key32& seed) {
  ensure_sodium();
  static_assert(crypto_sign_SEEDBYTES == 32 && crypto_sign_PUBLICKEYBYTES == 32 && crypto_sign_BYTES == 64);
  SigningKeyPair kp;
  kp.seed = seed;
  std::array<unsigned char, crypto_sign_SECRETKEYBYTES> sk;
  crypto_sign_seed_keypair(kp.public_key.data(), sk.data(), seed.data());
  wipe(sk);
  return kp;
}

Signature sign(const SigningKeyPair& key, std::span<const std::uint8_t> message) {
  ensure_sodium();
  // libsodium's secret key is seed || public key; it is rebuilt per call so
  // that only the seed is kept between calls.
  std::array<unsigned char, crypto_sign_SECRETKEYBYTES> sk;
  std::copy(key.seed.begin(), key.seed.end(), sk.begin());
  std::copy(key.public_key.begin(), key.public_key.end(), sk.begin() + 32);
  Signature sig;
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), sk.data());
  wipe(sk);
  return sig;
}

bool verify_signature(const Key32& public_key, std::span<const std::uint8_t> message, const Signature& signature) {
  ensure_sodium();
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(), public_key.data()) == 0;
}

Key32 hash32(std::string_view label, std::span<const std::uint8_t> data) {
  ensure_sodium();
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(label.data()), label.size());
  const unsigned char zero = 0;
  crypto_generichash_update(&st, &zero, 1);
  crypto_generichash_update(&st, data.data(), data.size());
  Key32 out;
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

Key32 agree(const Key32& my_secret, const Key32& peer_public, std::string_view label,
            std::span<const std::uint8_t> context) {
  return agree(my_secret, public_key_of(my_secret), peer_public, label, context);
}

Key32 agree(const Key32& my_secret, const Key32& mine, const Key32& peer_public, std::string_view label,
            std::span<const std::uint8_t> context) {
  Key32 shared = x25519(my_secret, peer_public);
  const bool mine_first = std::lexicographical_compare(mine.begin(), mine.end(),
                                                       peer_public.begin(), peer_public.end());
  std::vector<std::uint8_t> ctx;
  ctx.reserve(64 + context.size());
  const Key32& a = mine_first ? mine : peer_public;
  const Key32& b = mine_first ? peer_public : mine;
  ctx.insert(ctx.end(), a.begin(), a.end());
  ctx.insert(ctx.end(), b.begin(), b.end());
  ctx.insert(ctx.end(), context.begin(), context.end());
  Key32 out = derive_key(shared, label, ctx);
  wipe(shared);
  return out;
}

std::vector<std::uint8_t> aead_encrypt(const Key32& key, std::span<const std::uint8_t> plaintext,
                                       std::span<const std::uint8_t> associated_data) {
  ensure_sodium();
  constexpr std::size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  std::vector<std::uint8_t> box(nb + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  randombytes_buf(box.data(), nb);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(box.data() + nb, &clen, plaintext.data(),
                                             plaintext.size(), associated_data.data(),
                                             associated_data.size(), nullptr, box.data(),
                                             key.data());
  box.resize(nb + clen);
  return box;
}

std::vector<std::uint8_t> aead_decrypt(const Key32& key, std::span<const std::uint8_t> box,
                                       std::span<const std::uint8_t> associated_data) {
  ensure_sodium();
  constexpr std::size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  if (box.size() < kAeadOverhead)
    throw Error(ErrorKind::kProtocol, "AEAD box of " + std::to_string(box.size()) +
                                          " bytes is shorter than nonce+tag (40 bytes)");
  std::vector<std::uint8_t> plain(box.size() - kAeadOverhead);
  unsigned long long mlen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain.data(), &mlen, nullptr, box.data() + nb,
                                                 box.size() - nb, associated_data.data(),
                                                 associated_data.size(), box.data(),
                                                 key.data()) != 0)
    throw Error(ErrorKind::kProtocol,
                "AEAD authentication failed: the share was tampered with or sent to the wrong peer");
  plain.resize(mlen);
  return plain;
}

void wipe(std::span<std::uint8_t> bytes) { sodium_memzero(bytes.data(), bytes.size()); }

}  // namespace fedge::privacy
