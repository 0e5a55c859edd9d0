// Which AES-256 path runs (aes.h): the x86 intrinsics where the CPU has them
// and the build is not FEDGE_PORTABLE, OpenSSL's EVP otherwise.
#include "fedge/privacy/aes.h"

#include <string>

#include "aes_paths.h"
#include "fedge/common/error.h"

namespace fedge::privacy {
namespace {

// The explicit path `path` stands for, after checking that it runs here.
AesPath resolve(AesPath path) {
  if (path == AesPath::kAuto) return aes_auto_path();
  if (!aes_path_available(path))
    throw Error(ErrorKind::kUnimplemented, std::string("the ") + aes_path_name(path) +
                                               " AES path needs CPU instructions this machine lacks; use "
                                               "AesPath::kAuto (or the ChaCha20 PRG)");
  return path;
}

}  // namespace

bool aes_ni_available() {
#ifdef FEDGE_AES_X86
  return aes_detail::cpu_has_aes_ni();
#else
  return false;
#endif
}

bool vaes_available() {
#ifdef FEDGE_AES_X86
  return aes_detail::cpu_has_vaes();
#else
  return false;
#endif
}

bool aes_path_available(AesPath path) {
  switch (path) {
    case AesPath::kAuto:
    case AesPath::kPortable: return true;
    case AesPath::kAesNi: return aes_ni_available();
    case AesPath::kVaes: return vaes_available();
  }
  return false;
}

AesPath aes_auto_path() {
#if defined(FEDGE_PORTABLE) && FEDGE_PORTABLE
  return AesPath::kPortable;
#else
  if (vaes_available()) return AesPath::kVaes;
  if (aes_ni_available()) return AesPath::kAesNi;
  return AesPath::kPortable;
#endif
}

const char* aes_path_name(AesPath path) {
  switch (path) {
    case AesPath::kAuto: return "auto";
    case AesPath::kPortable: return "openssl";
    case AesPath::kAesNi: return "aes-ni";
    case AesPath::kVaes: return "vaes";
  }
  return "unknown";
}

void aes256_encrypt_block(const std::uint8_t key[32], const std::uint8_t in[16], std::uint8_t out[16],
                          AesPath path) {
#ifdef FEDGE_AES_X86
  if (resolve(path) != AesPath::kPortable) return aes_detail::x86_encrypt_block(key, in, out);
#else
  resolve(path);
#endif
  aes_detail::openssl_encrypt_block(key, in, out);
}

void aes256_ctr_keystream(const std::uint8_t key[32], std::uint64_t first_block, std::uint8_t* out,
                          std::size_t blocks, AesPath path) {
  const AesPath use = resolve(path);
#ifdef FEDGE_AES_X86
  if (use != AesPath::kPortable) return aes_detail::x86_ctr_keystream(key, first_block, out, blocks, use == AesPath::kVaes);
#endif
  (void)use;
  aes_detail::openssl_ctr_keystream(key, first_block, out, blocks);
}

void aes256_ctr_add(const std::uint8_t key[32], std::uint64_t first_block, std::uint32_t* acc, std::size_t blocks,
                    bool subtract, AesPath path) {
  const AesPath use = resolve(path);
#ifdef FEDGE_AES_X86
  if (use != AesPath::kPortable)
    return aes_detail::x86_ctr_add(key, first_block, acc, blocks, subtract, use == AesPath::kVaes);
#endif
  (void)use;
  aes_detail::openssl_ctr_add(key, first_block, acc, blocks, subtract);
}

}  // namespace fedge::privacy
