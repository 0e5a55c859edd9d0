// AES-256-CTR, the fast mask PRG: a FIPS-197 known answer and the same
// keystream on every path this CPU runs (OpenSSL's portable path, AES-NI,
// VAES), so a node on an ARM board masks exactly as an x86 node does.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/cpu_features.h"
#include "fedge/privacy/aes.h"
#include "fedge/privacy/prg.h"

using namespace fedge::privacy;

namespace {

// Every explicit path that runs here; the portable one always does.
std::vector<AesPath> paths_here() {
  std::vector<AesPath> out;
  for (AesPath p : {AesPath::kPortable, AesPath::kAesNi, AesPath::kVaes})
    if (aes_path_available(p)) out.push_back(p);
  return out;
}

Key32 test_seed(std::uint8_t tag) {
  Key32 seed{};
  for (std::size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<std::uint8_t>(tag * 31 + i * 7);
  return seed;
}

}  // namespace

TEST_CASE("AES-256: FIPS-197's known answer on every path, and counter block i is AES(k, le128(i))",
          "[privacy][prg]") {
  std::uint8_t key[32], pt[16];
  for (int i = 0; i < 32; ++i) key[i] = static_cast<std::uint8_t>(i);
  for (int i = 0; i < 16; ++i) pt[i] = static_cast<std::uint8_t>(i * 0x11);
  const std::uint8_t want[16] = {0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf,
                                 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60, 0x89};
  for (AesPath path : paths_here()) {
    INFO("path " << aes_path_name(path));
    std::uint8_t ct[16];
    aes256_encrypt_block(key, pt, ct, path);
    CHECK(std::equal(ct, ct + 16, want));
    // Counter 5 + 37 = 42, and one whose high word carries (2^32 + 1).
    std::vector<std::uint8_t> stream(16 * 100);
    aes256_ctr_keystream(key, 5, stream.data(), 100, path);
    std::uint8_t ctr[16] = {}, one[16];
    ctr[0] = 5 + 37;
    aes256_encrypt_block(key, ctr, one, path);
    CHECK(std::equal(one, one + 16, stream.begin() + 16 * 37));
    aes256_ctr_keystream(key, (1ULL << 32) - 1, stream.data(), 3, path);
    const std::uint8_t carried[16] = {1, 0, 0, 0, 1};
    aes256_encrypt_block(key, carried, one, path);
    CHECK(std::equal(one, one + 16, stream.begin() + 32));
  }
}

TEST_CASE("AES-256-CTR: every path gives the portable path's keystream and fused sums, any length and start",
          "[privacy][prg]") {
  const Key32 seed = test_seed(3);
  const std::vector<AesPath> paths = paths_here();
  if (paths.size() == 1) WARN("only the portable AES path runs on this CPU: nothing to compare it with");
  // 32 blocks is one VAES step; the lengths cut it everywhere.
  for (std::size_t blocks : {1u, 7u, 31u, 32u, 33u, 255u, 256u, 257u, 1000u}) {
    for (std::uint64_t first : {0ULL, 9ULL, (1ULL << 32) - 17, (1ULL << 62) + 5}) {
      INFO(blocks << " blocks from counter " << first);
      std::vector<std::uint8_t> reference(16 * blocks);
      aes256_ctr_keystream(seed.data(), first, reference.data(), blocks, AesPath::kPortable);
      std::vector<std::uint32_t> base(4 * blocks);
      for (std::size_t i = 0; i < base.size(); ++i) base[i] = static_cast<std::uint32_t>(i * 2654435761u);
      std::vector<std::uint32_t> added = base, subtracted = base;
      aes256_ctr_add(seed.data(), first, added.data(), blocks, false, AesPath::kPortable);
      aes256_ctr_add(seed.data(), first, subtracted.data(), blocks, true, AesPath::kPortable);
      for (std::size_t w = 0; w < base.size(); ++w) {
        std::uint32_t k = 0;
        for (int b = 0; b < 4; ++b) k |= std::uint32_t(reference[4 * w + b]) << (8 * b);
        REQUIRE(added[w] == base[w] + k);
        REQUIRE(subtracted[w] == base[w] - k);
      }
      for (AesPath path : paths) {
        INFO("path " << aes_path_name(path));
        std::vector<std::uint8_t> stream(16 * blocks);
        aes256_ctr_keystream(seed.data(), first, stream.data(), blocks, path);
        CHECK(stream == reference);
        std::vector<std::uint32_t> a = base, s = base;
        aes256_ctr_add(seed.data(), first, a.data(), blocks, false, path);
        aes256_ctr_add(seed.data(), first, s.data(), blocks, true, path);
        CHECK(a == added);
        CHECK(s == subtracted);
      }
    }
  }
}

TEST_CASE("AES-256: the automatic path is one that runs, and a path the CPU lacks is refused by name",
          "[privacy][prg]") {
  const AesPath chosen = aes_auto_path();
  CHECK(chosen != AesPath::kAuto);
  CHECK(aes_path_available(chosen));
  if (fedge::portable_build()) CHECK(chosen == AesPath::kPortable);
  CHECK(std::string(aes_path_name(AesPath::kPortable)) == "openssl");
  std::uint8_t key[32] = {}, block[16] = {};
  for (AesPath path : {AesPath::kAesNi, AesPath::kVaes}) {
    if (aes_path_available(path)) continue;
    try {
      aes256_ctr_keystream(key, 0, block, 1, path);
      FAIL("an unavailable AES path ran");
    } catch (const fedge::Error& e) {
      CHECK(e.kind() == fedge::ErrorKind::kUnimplemented);
      CHECK_THAT(e.what(), Catch::Contains(aes_path_name(path)));
    }
  }
  // The AES PRG runs everywhere now, through the portable path where needed.
  CHECK(prg_supported(PrgKind::kAes256Ctr));
  CHECK(prg_supported(PrgKind::kChaCha20));
}

TEST_CASE("AES PRG: seekable at any word offset, fused add equals fill, add and subtract cancel",
          "[privacy][prg]") {
  const Key32 seed = test_seed(9);
  std::vector<std::uint32_t> all(20000);
  prg_fill(seed, all, 0, PrgKind::kAes256Ctr);
  std::vector<std::uint32_t> part(5001);
  prg_fill(seed, part, 3001, PrgKind::kAes256Ctr);
  CHECK(std::equal(part.begin(), part.end(), all.begin() + 3001));
  std::vector<std::uint32_t> chacha(all.size());
  prg_fill(seed, chacha);
  CHECK(chacha != all);
  for (std::size_t off : {0u, 1u, 2u, 3u, 4097u}) {
    for (std::size_t len : {1u, 7u, 8u, 63u, 64u, 65u, 5003u}) {
      std::vector<std::uint32_t> acc(len, 10);
      prg_add(seed, acc, false, off, PrgKind::kAes256Ctr);
      for (std::size_t i = 0; i < len; ++i) REQUIRE(acc[i] == all[off + i] + 10u);
      prg_add(seed, acc, true, off, PrgKind::kAes256Ctr);
      REQUIRE(acc == std::vector<std::uint32_t>(len, 10));
    }
  }
  std::vector<std::uint32_t> acc(9000, 1);
  std::vector<MaskJob> jobs = {{seed, false}, {seed, true}, {seed, false}};
  prg_add_many(acc, jobs, 2, PrgKind::kAes256Ctr);
  for (std::size_t i = 0; i < acc.size(); ++i) REQUIRE(acc[i] == all[i] + 1u);
}
