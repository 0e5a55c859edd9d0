// The atomic write: no partial file is ever visible under the real name, no
// temporary file is left, and the file and then its directory are flushed to
// disk before the call returns (issue 16, finding 9: a file whose rename was
// never flushed can vanish at power loss after the database row that names it
// was committed).
#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "fedge/common/error.h"
#include "fedge/common/file_io.h"
#include "fsync_probe.h"
#include "test_util.h"

namespace fs = std::filesystem;
using fedge::testing::FsyncProbe;
using fedge::testing::TempDir;

namespace {

std::string read_all(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::size_t entries(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("atomic write: the file, then its directory, are flushed before it returns") {
  TempDir tmp;
  const fs::path dir = fs::canonical(tmp.path);
  const fs::path file = dir / "adapter_config.json";
  const std::string text = "{\"r\": 8}\n";
  FsyncProbe probe;
  fedge::write_file_atomically(file, {std::as_bytes(std::span(text.data(), text.size()))});
  const auto flushed = probe.paths();
  CHECK(read_all(file) == "{\"r\": 8}\n");
  CHECK(entries(dir) == 1);  // no temporary file left beside it
  INFO("flushed: " << [&] {
    std::string s;
    for (const auto& p : flushed) s += p.string() + " ";
    return s;
  }());
  // The temporary file's bytes first (under its temporary name, before the
  // rename), then the directory that holds the rename.
  REQUIRE(flushed.size() == 2);
  CHECK(flushed[0].parent_path() == dir);
  CHECK(flushed[0].filename().string().rfind("adapter_config.json.tmp", 0) == 0);
  CHECK(flushed[1] == dir);
}

TEST_CASE("atomic write: replacing a file never shows a partial one, and a failure leaves nothing behind") {
  TempDir tmp;
  const fs::path file = tmp.path / "a.txt";
  fedge::write_file_atomically(file, std::string_view("old"));
  fedge::write_file_atomically(file, std::string(1 << 20, 'n'));
  CHECK(read_all(file) == std::string(1 << 20, 'n'));
  CHECK(entries(tmp.path) == 1);
  CHECK_THROWS_AS(fedge::write_file_atomically(tmp.path / "missing" / "b.txt", std::string_view("x")), fedge::Error);
  // A target that is a directory: the temporary file is written, the rename
  // fails, and the temporary file is removed again.
  fs::create_directories(tmp.path / "dir_in_the_way");
  CHECK_THROWS_AS(fedge::write_file_atomically(tmp.path / "dir_in_the_way", std::string_view("x")), fedge::Error);
  CHECK(entries(tmp.path) == 2);
  CHECK(read_all(file) == std::string(1 << 20, 'n'));
}

TEST_CASE("fsync_directory: flushes a directory, names one it cannot open") {
  TempDir tmp;
  FsyncProbe probe;
  fedge::fsync_directory(tmp.path);
  REQUIRE(probe.paths().size() == 1);
  CHECK(probe.paths()[0] == fs::canonical(tmp.path));
  try {
    fedge::fsync_directory(tmp.path / "nope");
    FAIL("no error");
  } catch (const fedge::Error& e) {
    CHECK(e.kind() == fedge::ErrorKind::kIo);
    CHECK_THAT(e.what(), Catch::Contains((tmp.path / "nope").string()));
  }
}
