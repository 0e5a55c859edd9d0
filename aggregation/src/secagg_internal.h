// Helpers shared by the SecAgg+ client and server (not part of the public API).
#pragma once

#include <array>
#include <string>

#include "fedge/aggregation/secagg.h"
#include "fedge/common/error.h"

namespace fedge::aggregation::detail {

inline constexpr const char* kShareLabel = "fedge/secagg/share-encryption/v1";
inline constexpr const char* kMaskLabel = "fedge/secagg/pairwise-mask/v1";
inline constexpr std::size_t kSecretBytes = 32;

inline std::array<std::uint8_t, 8> round_bytes(std::uint64_t round) {
  std::array<std::uint8_t, 8> b{};
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(round >> (8 * i));
  return b;
}

// Associated data binding an encrypted share to its round and both ends.
inline std::array<std::uint8_t, 16> share_ad(std::uint64_t round, ClientId from, ClientId to) {
  std::array<std::uint8_t, 16> ad{};
  for (int i = 0; i < 8; ++i) ad[i] = static_cast<std::uint8_t>(round >> (8 * i));
  for (int i = 0; i < 4; ++i) ad[8 + i] = static_cast<std::uint8_t>(from >> (8 * i));
  for (int i = 0; i < 4; ++i) ad[12 + i] = static_cast<std::uint8_t>(to >> (8 * i));
  return ad;
}

inline Key32 pairwise_seed(const Key32& my_s_secret, const Key32& my_s_public, const Key32& peer_s_public,
                           std::uint64_t round) {
  const auto rb = round_bytes(round);
  return privacy::agree(my_s_secret, my_s_public, peer_s_public, kMaskLabel, rb);
}

inline Key32 share_key(const privacy::KeyPair& mine, const Key32& peer_c_public, std::uint64_t round) {
  const auto rb = round_bytes(round);
  return privacy::agree(mine.secret_key, mine.public_key, peer_c_public, kShareLabel, rb);
}

[[noreturn]] inline void protocol_error(const std::string& msg) {
  throw Error(ErrorKind::kProtocol, "secure aggregation: " + msg);
}

inline std::string who(ClientId id) { return "client " + std::to_string(id); }

}  // namespace fedge::aggregation::detail
