// CurveZMQ keys: generation, Z85 text form, and key files.
//
// File format (both files are plain text): lines that are blank or start with
// '#' (and are not themselves a key) are comments; the key is one line of 40
// Z85 characters. PREFIX.key holds the secret key (mode 0600), PREFIX.pub the
// public key. An allow-list file holds one public key per line, optionally
// followed by whitespace and a free-text name.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/protocol/messages.h"

namespace fedge::protocol {

inline constexpr std::size_t kZ85KeyChars = 40;

struct CurveKeyPair {
  std::string public_z85;  // 40 Z85 characters
  std::string secret_z85;
};

// A fresh key pair (zmq_curve_keypair). Throws Error(kRuntime) if libzmq was
// built without CURVE.
CurveKeyPair generate_curve_keypair();
// Public key of a Z85 secret key. Throws Error(kInvalidInput) for a bad key.
std::string curve_public_of(std::string_view secret_z85);

bool is_z85_key(std::string_view text);
// Throws Error(kInvalidInput) naming `what` unless `z85` is a 40-char Z85 key.
Key32 z85_to_key(std::string_view z85, std::string_view what);
std::string key_to_z85(const Key32& key);

// Writes PREFIX.key (secret, created with mode 0600) and PREFIX.pub. Refuses
// (Error(kInvalidInput)) to replace existing files unless `overwrite`.
void write_key_files(const std::filesystem::path& prefix, const CurveKeyPair& pair, bool overwrite = false);

// Reads a secret key file (PREFIX.key) and derives its public key; if the
// matching .pub file exists it must agree. Warns when the file is readable by
// group or others. Throws Error(kNotFound) for a missing file and
// Error(kInvalidInput) naming file and line for anything malformed.
CurveKeyPair load_key_pair(const std::filesystem::path& secret_file);
// Reads a public key file (PREFIX.pub).
std::string load_public_key(const std::filesystem::path& public_file);
// Reads an allow-list file; duplicates are refused.
std::vector<std::string> load_allow_list(const std::filesystem::path& file);

// ---- Ed25519 signing keys of the malicious-server SecAgg mode ----
// PREFIX.sign holds the secret 32-byte Ed25519 seed (Z85, mode 0600),
// PREFIX.sign.pub the public key (Z85) the operator puts in the roster. The
// caller derives the key pair (privacy::signing_keypair_from_seed).
void write_signing_key_files(const std::filesystem::path& prefix, const Key32& seed, const Key32& public_key,
                             bool overwrite = false);
Key32 load_signing_seed(const std::filesystem::path& secret_file);
// A roster file: one line per node, "NODE_ID Z85_PUBLIC_KEY [name]"; blank
// lines and lines starting with '#' are comments. Node ids and keys must be
// unique. Throws Error(kInvalidInput) naming file and line.
std::map<NodeId, Key32> load_roster(const std::filesystem::path& file);

}  // namespace fedge::protocol
