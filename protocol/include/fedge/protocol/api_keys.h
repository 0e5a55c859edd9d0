// API keys for fedge's HTTP endpoints: the node's OpenAI-compatible API
// (docs/SERVING.md, "API keys") and the coordinator's metrics and dashboard
// (docs/FEDERATION.md, "Metrics and dashboard"). HTTP transport auth, kept in
// protocol/ so that both drivers use this one implementation.
//
// Key file (the node config's serve.api_keys, the coordinator's
// http.api_keys): plain text, one key per line,
// optionally followed by whitespace and a name that the logs use for the
// caller; blank lines and lines starting with '#' are comments:
//
//   # dashboard of site A
//   3f9c0a7b5e2d4c1f8a6b9e0d7c3a5f1e2b4d6c8a0e9f7b5d3c1a2e4f6b8d0c9a dashboard
//
// A key is 32..256 printable ASCII characters without spaces (e.g.
// `openssl rand -hex 32`); a name at most 64 printable characters. The file
// must not be readable or writable by others (chmod 600; group access is
// warned about), at most 1 MiB, at most 10000 keys, no key twice.
//
// Clients send `Authorization: Bearer <key>`, as OpenAI's clients do. Only a
// BLAKE2b digest of each key is kept, and a presented key is compared with
// every listed one in constant time (sodium_memcmp), so neither the timing
// nor the position of a match says anything about the keys.
#pragma once

#include <array>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fedge::protocol {

inline constexpr std::size_t kMinApiKeyChars = 32;
inline constexpr std::size_t kMaxApiKeyChars = 256;
inline constexpr std::size_t kMaxApiKeyNameChars = 64;
inline constexpr std::size_t kMaxApiKeyFileBytes = std::size_t{1} << 20;
inline constexpr std::size_t kMaxApiKeys = 10000;

class ApiKeys {
 public:
  // Reads a key file. Throws Error(kNotFound) for a missing file,
  // Error(kInvalidInput) naming the file (and line) for one readable by
  // others, too large, empty of keys, or with a malformed line. `setting` is
  // the config key that named the file, for messages that say what to change.
  static ApiKeys load(const std::filesystem::path& file, const std::string& setting = "serve.api_keys");
  // The same checks on the file's text; `origin` names it in errors.
  static ApiKeys parse(std::string_view text, const std::string& origin,
                       const std::string& setting = "serve.api_keys");

  // The name of the listed key that an Authorization header value carries
  // ("Bearer <key>"; the scheme is case-insensitive), or nullopt when the
  // header is absent, malformed or carries no listed key. A key without a
  // name is called "key <line>".
  std::optional<std::string> authenticate(std::string_view authorization) const;

  std::size_t size() const { return keys_.size(); }
  const std::string& origin() const { return origin_; }
  const std::string& setting() const { return setting_; }

 private:
  struct Entry {
    std::array<unsigned char, 32> digest;
    std::string name;
  };
  std::vector<Entry> keys_;
  std::string origin_;
  std::string setting_;
};

// What a refused request gets: 401 with this OpenAI-style body
// ({"error": {..., "type": "invalid_request_error", "code": "invalid_api_key"}})
// and the WWW-Authenticate header kApiKeyChallenge. `header_sent` picks the
// message (no key sent, or a key that is not listed); `setting` names the
// config key of the key file (ApiKeys::setting()).
inline constexpr const char* kApiKeyChallenge = "Bearer realm=\"fedge\"";
std::string api_key_refusal_body(bool header_sent, const std::string& setting = "serve.api_keys");

}  // namespace fedge::protocol
