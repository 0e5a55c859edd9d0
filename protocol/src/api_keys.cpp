#include "fedge/protocol/api_keys.h"

#include <sodium.h>
#include <strings.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fedge/common/error.h"

namespace fedge::protocol {
namespace {

constexpr std::string_view kSpace = " \t\r";

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

// The first byte that is not printable ASCII (or a space/tab where allowed).
std::optional<unsigned char> unprintable(std::string_view s, bool spaces_allowed) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    const bool space = u == ' ' || u == '\t';
    if (!(u > 0x20 && u < 0x7f) && !(spaces_allowed && space)) return u;
  }
  return std::nullopt;
}

std::array<unsigned char, 32> digest_of(std::string_view key) {
  std::array<unsigned char, 32> out{};
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr, 0);
  return out;
}

[[noreturn]] void bad_line(const std::string& origin, int line, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, origin + ":" + std::to_string(line) + ": " + what);
}

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", b);
  return buf;
}

// Others must not read the keys; group access is the operator's choice, but
// worth a word.
void check_mode(const std::filesystem::path& file, const std::string& setting) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno == ENOENT)
      throw Error(ErrorKind::kNotFound, "API key file " + file.string() + " does not exist (" + setting + ")");
    throw Error(ErrorKind::kIo, "cannot read API key file " + file.string() + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::kInvalidInput, "API key file " + file.string() + " is not a file");
  const unsigned mode = st.st_mode & 0777;
  if (mode & 007) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%03o", mode);
    throw Error(ErrorKind::kInvalidInput, "API key file " + file.string() + " is open to other users (mode " + buf +
                                              "); run chmod 600 " + file.string());
  }
  if (mode & 070) spdlog::warn("API key file {} is readable by its group (mode {:03o}); chmod 600 keeps it to its owner",
                               file.string(), mode);
  if (static_cast<std::uintmax_t>(st.st_size) > kMaxApiKeyFileBytes)
    throw Error(ErrorKind::kInvalidInput, "API key file " + file.string() + " is " + std::to_string(st.st_size) +
                                              " bytes; at most " + std::to_string(kMaxApiKeyFileBytes) + " are read");
}

}  // namespace

ApiKeys ApiKeys::load(const std::filesystem::path& file, const std::string& setting) {
  check_mode(file, setting);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, "cannot read API key file " + file.string() + ": " + std::strerror(errno));
  // Read one byte past the limit: a file that grew since stat() is refused too.
  std::string text(kMaxApiKeyFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return parse(text, file.string(), setting);
}

ApiKeys ApiKeys::parse(std::string_view text, const std::string& origin, const std::string& setting) {
  if (sodium_init() < 0) throw Error(ErrorKind::kRuntime, "libsodium failed to initialise");
  if (text.size() > kMaxApiKeyFileBytes)
    throw Error(ErrorKind::kInvalidInput, "API key file " + origin + " is over " +
                                              std::to_string(kMaxApiKeyFileBytes) + " bytes");
  ApiKeys keys;
  keys.origin_ = origin;
  keys.setting_ = setting;
  // Where each key was listed, by digest (the file is ours: no need for
  // constant time here).
  std::map<std::array<unsigned char, 32>, int> lines;
  int line = 0;
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view raw = trim(text.substr(at, end - at));
    at = end + 1;
    ++line;
    if (raw.empty() || raw.front() == '#') continue;
    const auto split = raw.find_first_of(" \t");
    const std::string_view key = raw.substr(0, split);
    const std::string_view name = split == std::string_view::npos ? std::string_view{} : trim(raw.substr(split));
    // Errors never echo the key: the file is secret.
    if (auto b = unprintable(key, false))
      bad_line(origin, line, "the key holds byte " + hex_byte(*b) + "; keys are printable ASCII without spaces");
    if (key.size() < kMinApiKeyChars || key.size() > kMaxApiKeyChars)
      bad_line(origin, line, "the key is " + std::to_string(key.size()) + " characters; an API key has " +
                                 std::to_string(kMinApiKeyChars) + ".." + std::to_string(kMaxApiKeyChars) +
                                 " (e.g. the output of 'openssl rand -hex 32')");
    if (auto b = unprintable(name, true))
      bad_line(origin, line, "the name after the key holds byte " + hex_byte(*b) + "; names are printable ASCII");
    if (name.size() > kMaxApiKeyNameChars)
      bad_line(origin, line, "the name after the key is " + std::to_string(name.size()) + " characters; at most " +
                                 std::to_string(kMaxApiKeyNameChars));
    if (keys.keys_.size() == kMaxApiKeys)
      bad_line(origin, line, "more than " + std::to_string(kMaxApiKeys) + " keys; one per client is plenty");
    Entry entry{digest_of(key), name.empty() ? "key " + std::to_string(line) : std::string(name)};
    if (auto [it, fresh] = lines.emplace(entry.digest, line); !fresh)
      bad_line(origin, line, "the key of line " + std::to_string(it->second) + " is listed again");
    keys.keys_.push_back(std::move(entry));
  }
  if (keys.keys_.empty())
    throw Error(ErrorKind::kInvalidInput, "API key file " + origin +
                                              " holds no keys; add one per line (e.g. 'openssl rand -hex 32'), or "
                                              "leave " + setting + " unset to serve on loopback only");
  return keys;
}

std::optional<std::string> ApiKeys::authenticate(std::string_view authorization) const {
  authorization = trim(authorization);
  const auto space = authorization.find_first_of(" \t");
  if (space == std::string_view::npos) return std::nullopt;
  const std::string_view scheme = authorization.substr(0, space);
  const std::string_view token = trim(authorization.substr(space));
  if (scheme.size() != 6 || ::strncasecmp(scheme.data(), "bearer", 6) != 0) return std::nullopt;
  if (token.empty() || token.size() > kMaxApiKeyChars) return std::nullopt;
  const auto digest = digest_of(token);
  // Every key is compared, so the time taken does not say which one matched.
  const Entry* match = nullptr;
  for (const Entry& e : keys_)
    if (sodium_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) match = &e;
  if (!match) return std::nullopt;
  return match->name;
}

std::string api_key_refusal_body(bool header_sent, const std::string& setting) {
  const std::string message =
      std::string(header_sent ? "Incorrect API key provided." : "No API key provided.") +
      " Send 'Authorization: Bearer <key>' with a key from the " + setting + " file of this server's config.";
  return nlohmann::json{{"error",
                         {{"message", message},
                          {"type", "invalid_request_error"},
                          {"param", nullptr},
                          {"code", "invalid_api_key"}}}}
      .dump();
}

}  // namespace fedge::protocol
