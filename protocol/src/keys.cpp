#include "fedge/protocol/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>
#include <zmq.h>

#include "fedge/common/error.h"

namespace fedge::protocol {
namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

struct KeyLine {
  std::string key;
  std::string name;
  int line = 0;
};

// Parses key lines of `file`; `allow_names` permits text after the key.
std::vector<KeyLine> read_key_lines(const std::filesystem::path& file, bool allow_names) {
  std::ifstream in(file);
  if (!in) {
    if (!std::filesystem::exists(file)) throw Error(ErrorKind::kNotFound, "key file " + file.string() + " does not exist");
    throw Error(ErrorKind::kIo, "cannot read key file " + file.string() + ": " + std::strerror(errno));
  }
  std::vector<KeyLine> keys;
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string text = trim(raw);
    if (text.empty()) continue;
    const auto space = text.find_first_of(" \t");
    const std::string first = text.substr(0, space);
    if (is_z85_key(first)) {
      const std::string rest = space == std::string::npos ? "" : trim(text.substr(space));
      if (!rest.empty() && !allow_names) {
        throw Error(ErrorKind::kInvalidInput, file.string() + ":" + std::to_string(line) +
                                                  ": unexpected text after the key");
      }
      keys.push_back({first, rest, line});
    } else if (text[0] != '#') {
      throw Error(ErrorKind::kInvalidInput,
                  file.string() + ":" + std::to_string(line) + ": expected a " + std::to_string(kZ85KeyChars) +
                      "-character Z85 key (as written by 'fedge keygen'), got " + std::to_string(first.size()) +
                      " characters");
    }
  }
  return keys;
}

std::string single_key(const std::filesystem::path& file) {
  auto keys = read_key_lines(file, false);
  if (keys.size() != 1) {
    throw Error(ErrorKind::kInvalidInput, "key file " + file.string() + " holds " + std::to_string(keys.size()) +
                                              " keys; expected exactly one (as written by 'fedge keygen')");
  }
  return keys[0].key;
}

// Writes atomically: a fresh temp file with `mode`, then rename over `path`.
void write_file(const std::filesystem::path& path, const std::string& content, mode_t mode) {
  const std::string tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) throw Error(ErrorKind::kIo, "cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = ::fchmod(fd, mode) == 0;  // the umask must not widen or narrow it
  ok = ok && ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw Error(ErrorKind::kIo, "cannot write " + path.string() + ": " + std::strerror(ok ? errno : err));
  }
}

}  // namespace

CurveKeyPair generate_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    throw Error(ErrorKind::kRuntime, std::string("cannot generate a CurveZMQ key pair: ") + zmq_strerror(zmq_errno()) +
                                         " (is libzmq built with CURVE support?)");
  }
  return {pub, sec};
}

bool is_z85_key(std::string_view text) {
  return text.size() == kZ85KeyChars && text.find_first_not_of(kZ85Alphabet) == std::string_view::npos;
}

Key32 z85_to_key(std::string_view z85, std::string_view what) {
  if (!is_z85_key(z85)) {
    throw Error(ErrorKind::kInvalidInput, std::string(what) + " is not a " + std::to_string(kZ85KeyChars) +
                                              "-character Z85 key (got " + std::to_string(z85.size()) + " characters)");
  }
  Key32 key;
  const std::string copy(z85);
  if (zmq_z85_decode(key.data(), copy.c_str()) == nullptr) {
    throw Error(ErrorKind::kInvalidInput, std::string(what) + " does not decode as Z85");
  }
  return key;
}

std::string key_to_z85(const Key32& key) {
  char out[41] = {};
  zmq_z85_encode(out, key.data(), key.size());
  return out;
}

std::string curve_public_of(std::string_view secret_z85) {
  z85_to_key(secret_z85, "secret key");
  char pub[41] = {};
  const std::string secret(secret_z85);
  if (zmq_curve_public(pub, secret.c_str()) != 0) {
    throw Error(ErrorKind::kInvalidInput, std::string("cannot derive the public key: ") + zmq_strerror(zmq_errno()));
  }
  return pub;
}

void write_key_files(const std::filesystem::path& prefix, const CurveKeyPair& pair, bool overwrite) {
  z85_to_key(pair.public_z85, "public key");
  z85_to_key(pair.secret_z85, "secret key");
  const std::filesystem::path key = prefix.string() + ".key", pub = prefix.string() + ".pub";
  for (const auto& p : {key, pub}) {
    if (!overwrite && std::filesystem::exists(p)) {
      throw Error(ErrorKind::kInvalidInput, p.string() + " already exists; remove it or pass --force to replace it");
    }
  }
  if (prefix.has_parent_path() && !std::filesystem::is_directory(prefix.parent_path())) {
    throw Error(ErrorKind::kNotFound, "folder " + prefix.parent_path().string() + " does not exist");
  }
  write_file(key,
             "# fedge CurveZMQ secret key: keep private (mode 0600).\n# public key: " + pair.public_z85 + "\n" +
                 pair.secret_z85 + "\n",
             0600);
  write_file(pub, "# fedge CurveZMQ public key: add this line to the coordinator's allow-list.\n" + pair.public_z85 +
                      "\n", 0644);
}

CurveKeyPair load_key_pair(const std::filesystem::path& secret_file) {
  CurveKeyPair pair;
  pair.secret_z85 = single_key(secret_file);
  pair.public_z85 = curve_public_of(pair.secret_z85);
  struct stat st {};
  if (::stat(secret_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("secret key file {} is readable by others (mode {:o}); run chmod 600 {}", secret_file.string(),
                 st.st_mode & 0777, secret_file.string());
  }
  std::filesystem::path pub = secret_file;
  pub.replace_extension(".pub");
  if (secret_file.extension() == ".key" && std::filesystem::exists(pub) && load_public_key(pub) != pair.public_z85) {
    throw Error(ErrorKind::kInvalidInput,
                pub.string() + " does not match " + secret_file.string() + "; regenerate both with 'fedge keygen'");
  }
  return pair;
}

std::string load_public_key(const std::filesystem::path& public_file) { return single_key(public_file); }

std::vector<std::string> load_allow_list(const std::filesystem::path& file) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const auto& k : read_key_lines(file, true)) {
    if (!seen.insert(k.key).second) {
      throw Error(ErrorKind::kInvalidInput, file.string() + ":" + std::to_string(k.line) + ": key listed twice");
    }
    keys.push_back(k.key);
  }
  return keys;
}

void write_signing_key_files(const std::filesystem::path& prefix, const Key32& seed, const Key32& public_key,
                             bool overwrite) {
  const std::filesystem::path key = prefix.string() + ".sign", pub = prefix.string() + ".sign.pub";
  for (const auto& p : {key, pub})
    if (!overwrite && std::filesystem::exists(p))
      throw Error(ErrorKind::kInvalidInput, p.string() + " already exists; remove it or pass --force to replace it");
  if (prefix.has_parent_path() && !std::filesystem::is_directory(prefix.parent_path()))
    throw Error(ErrorKind::kNotFound, "folder " + prefix.parent_path().string() + " does not exist");
  const std::string pub_z85 = key_to_z85(public_key);
  write_file(key, "# fedge Ed25519 signing key (secure aggregation, malicious mode): keep private (mode 0600).\n"
                  "# public key: " + pub_z85 + "\n" + key_to_z85(seed) + "\n", 0600);
  write_file(pub, "# fedge Ed25519 public key: the operator adds \"NODE_ID " + pub_z85 + "\" to the roster.\n" +
                      pub_z85 + "\n", 0644);
}

Key32 load_signing_seed(const std::filesystem::path& secret_file) {
  const Key32 seed = z85_to_key(single_key(secret_file), secret_file.string());
  struct stat st {};
  if (::stat(secret_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0)
    spdlog::warn("signing key file {} is readable by others (mode {:o}); run chmod 600 {}", secret_file.string(),
                 st.st_mode & 0777, secret_file.string());
  return seed;
}

std::map<NodeId, Key32> load_roster(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw Error(ErrorKind::kNotFound, "roster file " + file.string() + " cannot be read");
  std::map<NodeId, Key32> roster;
  std::set<Key32> keys;
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) {
    const std::string text = trim(raw);
    if (text.empty() || text[0] == '#') continue;
    const std::string where = file.string() + ":" + std::to_string(line);
    std::istringstream fields(text);
    std::string id_text, key_text;
    fields >> id_text >> key_text;
    std::uint64_t id = 0;
    const bool digits = !id_text.empty() && id_text.size() <= 10 &&
                        id_text.find_first_not_of("0123456789") == std::string::npos;
    if (digits) id = std::stoull(id_text);
    if (!digits || id == 0 || id > 0xffffffffULL)
      throw Error(ErrorKind::kInvalidInput, where + ": expected \"NODE_ID PUBLIC_KEY [name]\" with a node id in "
                                                    "1..4294967295, got \"" + id_text + "\"");
    const Key32 key = z85_to_key(key_text, where + ": the public key (from 'fedge keygen', PREFIX.sign.pub)");
    if (!roster.emplace(static_cast<NodeId>(id), key).second)
      throw Error(ErrorKind::kInvalidInput, where + ": node " + id_text + " is listed twice");
    if (!keys.insert(key).second)
      throw Error(ErrorKind::kInvalidInput, where + ": this key is already listed for another node");
  }
  return roster;
}

}  // namespace fedge::protocol
