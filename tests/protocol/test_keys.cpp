#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <catch2/catch.hpp>

#include "fedge/common/error.h"
#include "fedge/protocol/keys.h"

using namespace fedge::protocol;

namespace {

std::filesystem::path fresh_dir() {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("fedge_keys_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }

// The message of the fedge::Error that `f` throws, checking its kind.
template <class F>
std::string error_of(F f, fedge::ErrorKind kind) {
  try {
    f();
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == kind);
    return e.what();
  }
  FAIL("no error");
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("key pairs round-trip through key files with a private secret file") {
  auto dir = fresh_dir();
  const auto pair = generate_curve_keypair();
  CHECK(is_z85_key(pair.public_z85));
  CHECK(curve_public_of(pair.secret_z85) == pair.public_z85);
  write_key_files(dir / "node1", pair);
  struct stat st {};
  REQUIRE(::stat((dir / "node1.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto loaded = load_key_pair(dir / "node1.key");
  CHECK(loaded.public_z85 == pair.public_z85);
  CHECK(loaded.secret_z85 == pair.secret_z85);
  CHECK(load_public_key(dir / "node1.pub") == pair.public_z85);
  CHECK(key_to_z85(z85_to_key(pair.public_z85, "k")) == pair.public_z85);

  auto msg = error_of([&] { write_key_files(dir / "node1", generate_curve_keypair()); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "already exists"));
  const auto other = generate_curve_keypair();
  write_key_files(dir / "node1", other, true);
  CHECK(load_key_pair(dir / "node1.key").public_z85 == other.public_z85);
  std::filesystem::remove_all(dir);
}

TEST_CASE("malformed key files are clear errors") {
  auto dir = fresh_dir();
  const auto pair = generate_curve_keypair();

  auto msg = error_of([&] { load_key_pair(dir / "missing.key"); }, fedge::ErrorKind::kNotFound);
  CHECK(contains(msg, "missing.key does not exist"));

  write(dir / "short.key", "# comment\nabc\n");
  msg = error_of([&] { load_key_pair(dir / "short.key"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "short.key:2: expected a 40-character Z85 key"));

  write(dir / "empty.pub", "# nothing here\n\n");
  msg = error_of([&] { load_public_key(dir / "empty.pub"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "holds 0 keys"));

  write(dir / "two.pub", pair.public_z85 + "\n" + pair.public_z85 + "\n");
  msg = error_of([&] { load_public_key(dir / "two.pub"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "holds 2 keys"));

  write(dir / "junk.pub", pair.public_z85 + " trailing\n");
  msg = error_of([&] { load_public_key(dir / "junk.pub"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "junk.pub:1: unexpected text after the key"));

  std::string bad = pair.public_z85;
  bad[5] = '"';  // not in the Z85 alphabet
  write(dir / "chars.pub", bad + "\n");
  msg = error_of([&] { load_public_key(dir / "chars.pub"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "chars.pub:1"));

  write_key_files(dir / "a", pair);
  write(dir / "a.pub", generate_curve_keypair().public_z85 + "\n");
  msg = error_of([&] { load_key_pair(dir / "a.key"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "a.pub does not match"));

  msg = error_of([&] { write_key_files(dir / "nope" / "x", pair); }, fedge::ErrorKind::kNotFound);
  CHECK(contains(msg, "does not exist"));
  msg = error_of([&] { z85_to_key("abc", "the server key"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "the server key is not a 40-character Z85 key"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("allow-list files hold keys with optional names") {
  auto dir = fresh_dir();
  const auto a = generate_curve_keypair(), b = generate_curve_keypair();
  write(dir / "allow.txt", "# nodes\n" + a.public_z85 + "  well-site-a\n\n" + b.public_z85 + "\n");
  CHECK(load_allow_list(dir / "allow.txt") == std::vector<std::string>{a.public_z85, b.public_z85});
  write(dir / "dup.txt", a.public_z85 + "\n" + a.public_z85 + " again\n");
  auto msg = error_of([&] { load_allow_list(dir / "dup.txt"); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "dup.txt:2: key listed twice"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("signing key files and rosters (malicious-mode secure aggregation)") {
  auto dir = fresh_dir();
  Key32 seed{}, pub{};
  seed.fill(7);
  pub.fill(9);
  write_signing_key_files(dir / "n1", seed, pub);
  CHECK(load_signing_seed(dir / "n1.sign") == seed);
  struct stat st {};
  REQUIRE(::stat((dir / "n1.sign").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(load_public_key(dir / "n1.sign.pub") == key_to_z85(pub));
  auto msg = error_of([&] { write_signing_key_files(dir / "n1", seed, pub); }, fedge::ErrorKind::kInvalidInput);
  CHECK(contains(msg, "already exists"));

  Key32 other = pub;
  other[0] ^= 1;
  write(dir / "roster.txt", "# node id, Ed25519 key, name\n1 " + key_to_z85(pub) + " site-a\n\n7\t" + key_to_z85(other) + "\n");
  const auto roster = load_roster(dir / "roster.txt");
  REQUIRE(roster.size() == 2);
  CHECK(roster.at(1) == pub);
  CHECK(roster.at(7) == other);

  const auto refusal = [&](const std::string& text) {
    write(dir / "bad.txt", text);
    return error_of([&] { load_roster(dir / "bad.txt"); }, fedge::ErrorKind::kInvalidInput);
  };
  CHECK(contains(refusal("1 " + key_to_z85(pub) + "\n1 " + key_to_z85(other) + "\n"), "bad.txt:2: node 1 is listed twice"));
  CHECK(contains(refusal("1 " + key_to_z85(pub) + "\n2 " + key_to_z85(pub) + "\n"),
                 "bad.txt:2: this key is already listed for another node"));
  CHECK(contains(refusal("0 " + key_to_z85(pub) + "\n"), "bad.txt:1: expected \"NODE_ID PUBLIC_KEY [name]\""));
  CHECK(contains(refusal("4294967296 " + key_to_z85(pub) + "\n"), "node id in 1..4294967295"));
  CHECK(contains(refusal("x1 " + key_to_z85(pub) + "\n"), "got \"x1\""));
  CHECK(contains(refusal("3 short\n"), "bad.txt:1: the public key"));
  CHECK(contains(refusal("3\n"), "is not a 40-character Z85 key (got 0 characters)"));
  msg = error_of([&] { load_roster(dir / "missing.txt"); }, fedge::ErrorKind::kNotFound);
  CHECK(contains(msg, "missing.txt"));
  std::filesystem::remove_all(dir);
}
