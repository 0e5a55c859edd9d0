// safetensors: round trips for every dtype, the byte-exact layout of the
// reference format, and one test per malformed-header case.
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fedge/common/error.h"
#include "test_util.h"
#include "fedge/common/safetensors.h"

namespace fs = std::filesystem;
using fedge::DType;
using fedge::Error;
using fedge::ErrorKind;
using fedge::SafetensorsFile;
using fedge::TensorView;

namespace {

using fedge::testing::as_bytes;

struct TempDir : fedge::testing::TempDir {
  TempDir() : fedge::testing::TempDir("fedge_test_st_") {}
};

std::vector<std::byte> to_bytes(std::string_view s) {
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// A file with the given raw header (no padding added) and `data_size` data bytes.
std::vector<std::byte> raw_file(const std::string& header, std::size_t data_size) {
  std::vector<std::byte> out(8 + header.size() + data_size, std::byte{0});
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

// Expects from_bytes to fail with kInvalidInput, the message naming the source
// and containing every fragment.
void expect_invalid(std::vector<std::byte> bytes, std::initializer_list<std::string> fragments) {
  try {
    (void)SafetensorsFile::from_bytes(std::move(bytes), "model.safetensors");
    FAIL("expected an error containing '" << *fragments.begin() << "'");
  } catch (const Error& e) {
    INFO("message: " << e.what());
    CHECK(e.kind() == ErrorKind::kInvalidInput);
    const std::string msg = e.what();
    CHECK(msg.rfind("model.safetensors: ", 0) == 0);
    for (const auto& f : fragments) CHECK_THAT(msg, Catch::Contains(f));
  }
}

void expect_header_invalid(const std::string& header, std::size_t data_size,
                           std::initializer_list<std::string> fragments) {
  INFO("header: " << header);
  expect_invalid(raw_file(header, data_size), fragments);
}

std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing", "[safetensors]") {
  const std::vector<std::tuple<DType, std::string, std::size_t, bool>> all{
      {DType::kF64, "F64", 8, true},   {DType::kF32, "F32", 4, true}, {DType::kF16, "F16", 2, true},
      {DType::kBF16, "BF16", 2, true}, {DType::kI64, "I64", 8, false}, {DType::kI32, "I32", 4, false},
      {DType::kI16, "I16", 2, false},  {DType::kI8, "I8", 1, false},   {DType::kU8, "U8", 1, false},
      {DType::kBool, "BOOL", 1, false}};
  for (const auto& [dt, name, size, floating] : all) {
    CHECK(fedge::dtype_name(dt) == name);
    CHECK(fedge::dtype_size(dt) == size);
    CHECK(fedge::is_floating(dt) == floating);
    CHECK(fedge::parse_dtype(name) == dt);
  }
  REQUIRE_THROWS_WITH(fedge::parse_dtype("Q4"), Catch::Contains("unknown dtype 'Q4'"));
  REQUIRE_THROWS_WITH(fedge::parse_dtype("f32"), Catch::Contains("unknown dtype 'f32'"));
}

TEST_CASE("round trip of every dtype, scalars and zero-size tensors", "[safetensors]") {
  std::vector<double> f64{1.5, -2.25, 1e300};
  std::vector<float> f32{0.1f, -3.0f, 65504.0f, 1e-40f};
  std::vector<std::uint16_t> f16{0x3c00, 0xc000, 0x0001, 0x7c00};
  std::vector<std::uint16_t> bf16{0x3f80, 0xbf80, 0x7f7f};
  std::vector<std::int64_t> i64{std::numeric_limits<std::int64_t>::min(), -1, 0, 42};
  std::vector<std::int32_t> i32{-7, 1 << 30};
  std::vector<std::int16_t> i16{-32768, 32767, 5};
  std::vector<std::int8_t> i8{-128, 0, 127};
  std::vector<std::uint8_t> u8{0, 200, 255, 1, 2, 3};
  std::vector<std::uint8_t> boolean{1, 0, 1};
  std::vector<float> scalar{3.25f};
  std::vector<float> empty;

  const std::vector<TensorView> views{
      {"f64", DType::kF64, {3}, as_bytes(f64)},
      {"f32", DType::kF32, {2, 2}, as_bytes(f32)},
      {"f16", DType::kF16, {4}, as_bytes(f16)},
      {"bf16", DType::kBF16, {1, 3}, as_bytes(bf16)},
      {"i64", DType::kI64, {4}, as_bytes(i64)},
      {"i32", DType::kI32, {2}, as_bytes(i32)},
      {"i16", DType::kI16, {3}, as_bytes(i16)},
      {"i8", DType::kI8, {3}, as_bytes(i8)},
      {"u8", DType::kU8, {2, 3}, as_bytes(u8)},
      {"bool", DType::kBool, {3}, as_bytes(boolean)},
      {"scalar", DType::kF32, {}, as_bytes(scalar)},
      {"empty", DType::kF32, {0, 5}, as_bytes(empty)},
      {"empty_i8", DType::kI8, {3, 0}, as_bytes(empty)},
  };

  const auto check = [&](const SafetensorsFile& file) {
    REQUIRE(file.tensors().size() == views.size());
    CHECK(file.metadata().empty());
    for (const auto& v : views) {
      INFO("tensor " << v.name);
      const auto& t = file.at(v.name);
      CHECK(t.dtype == v.dtype);
      CHECK(t.shape == v.shape);
      CHECK(t.numel() * static_cast<std::int64_t>(fedge::dtype_size(v.dtype)) ==
            static_cast<std::int64_t>(v.data.size()));
      const auto got = file.bytes(t);
      REQUIRE(got.size() == v.data.size());
      CHECK(std::equal(got.begin(), got.end(), v.data.begin()));
    }
    // Tensors in file order: ascending offsets; the writer puts larger
    // element sizes first and sorts by name within one size.
    for (std::size_t i = 1; i < file.tensors().size(); ++i) {
      const auto& prev = file.tensors()[i - 1];
      const auto& next = file.tensors()[i];
      CHECK(prev.end == next.begin);
      const auto prev_size = fedge::dtype_size(prev.dtype), next_size = fedge::dtype_size(next.dtype);
      CHECK((prev_size > next_size || (prev_size == next_size && prev.name <= next.name)));
    }
    CHECK(file.at("scalar").numel() == 1);
    CHECK(file.to_f32(file.at("scalar")) == std::vector<float>{3.25f});
    CHECK(file.to_f32(file.at("empty")).empty());
    CHECK(file.to_f32(file.at("f32")) == f32);
    CHECK(file.to_f32(file.at("f64")) == std::vector<float>{1.5f, -2.25f, std::numeric_limits<float>::infinity()});
    CHECK(file.to_f32(file.at("f16")) ==
          std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24), std::numeric_limits<float>::infinity()});
    CHECK(file.to_f32(file.at("bf16")) ==
          std::vector<float>{1.0f, -1.0f, std::bit_cast<float>(std::uint32_t{0x7f7f0000})});
    CHECK(file.find("missing") == nullptr);
  };

  SECTION("in memory") {
    check(SafetensorsFile::from_bytes(fedge::serialize_safetensors(views), "mem"));
  }
  SECTION("on disk, memory-mapped") {
    TempDir dir;
    const auto path = dir.path / "all.safetensors";
    fedge::write_safetensors(path, views);
    check(SafetensorsFile::open(path));
    // The atomic write leaves no temporary file behind.
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
  }
}

TEST_CASE("metadata round trip", "[safetensors]") {
  std::vector<float> w{1, 2, 3};
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode \"quoted\""}, {"", "empty key"}};
  TempDir dir;
  const auto path = dir.path / "m.safetensors";
  fedge::write_safetensors(path, {{"w", DType::kF32, {3}, as_bytes(w)}}, meta);
  const auto file = SafetensorsFile::open(path);
  CHECK(file.metadata() == meta);
  CHECK(file.to_f32(file.at("w")) == w);

  // Metadata only, no tensors.
  const auto only = SafetensorsFile::from_bytes(fedge::serialize_safetensors({}, {{"k", "v"}}), "meta");
  CHECK(only.tensors().empty());
  CHECK(only.metadata().at("k") == "v");
}

TEST_CASE("writer output is byte-exact to the reference format", "[safetensors]") {
  std::vector<float> b{1.0f, 2.0f};
  std::vector<std::int8_t> a{-1, 0, 1};
  const auto bytes = fedge::serialize_safetensors(
      {{"b", DType::kF32, {2}, as_bytes(b)}, {"a", DType::kI8, {3}, as_bytes(a)}}, {{"k", "v"}});

  // Sorted keys (entries' fields too), compact JSON, offsets relative to the
  // buffer, data with larger dtypes first (F32 before I8, so the F32 tensor is
  // 4-byte aligned), header padded with spaces to 8 + N = 0 mod 8.
  const std::string json =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[8,11],"dtype":"I8","shape":[3]},)"
      R"("b":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
  std::string header = json;
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<std::byte> expected(8);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) expected[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  const auto hb = to_bytes(header);
  expected.insert(expected.end(), hb.begin(), hb.end());
  const std::vector<std::byte> fbytes{std::byte{0x00}, std::byte{0x00}, std::byte{0x80}, std::byte{0x3f},
                                      std::byte{0x00}, std::byte{0x00}, std::byte{0x00}, std::byte{0x40}};
  expected.insert(expected.end(), fbytes.begin(), fbytes.end());
  expected.insert(expected.end(), as_bytes(a).begin(), as_bytes(a).end());
  CHECK(bytes == expected);

  // The reference reader's rules, checked independently of fedge's reader.
  const std::uint64_t len = read_u64_le(bytes.data());
  CHECK(len == header.size());
  CHECK((8 + len) % 8 == 0);
  CHECK(std::to_integer<char>(bytes[8]) == '{');
  CHECK(std::to_integer<char>(bytes[8 + len - 1]) == ' ');
  CHECK(bytes.size() - 8 - len == 11);  // buffer covered exactly by [0,8) + [8,11)
}

TEST_CASE("writer pads every header length to a multiple of 8", "[safetensors]") {
  std::vector<std::uint8_t> d(1);
  for (std::size_t len = 1; len <= 16; ++len) {
    const std::string name(len, 'x');
    const auto bytes = fedge::serialize_safetensors({{name, DType::kU8, {1}, as_bytes(d)}});
    const std::uint64_t n = read_u64_le(bytes.data());
    CHECK(n % 8 == 0);
    CHECK(bytes.size() == 8 + n + 1);
    const auto file = SafetensorsFile::from_bytes(bytes, "pad");
    CHECK(file.at(name).nbytes() == 1);
  }
}

TEST_CASE("writer rejects duplicates and size mismatches", "[safetensors]") {
  std::vector<float> v{1, 2};
  REQUIRE_THROWS_WITH(fedge::serialize_safetensors({{"x", DType::kF32, {2}, as_bytes(v)},
                                                    {"x", DType::kF32, {2}, as_bytes(v)}}),
                      Catch::Contains("tensor name 'x' given twice"));
  REQUIRE_THROWS_WITH(fedge::serialize_safetensors({{"x", DType::kF32, {3}, as_bytes(v)}}),
                      Catch::Contains("tensor 'x': data has 8 bytes but shape [3] of F32 needs 12"));
  REQUIRE_THROWS_WITH(fedge::serialize_safetensors({{"x", DType::kF32, {-2}, as_bytes(v)}}),
                      Catch::Contains("negative dimension"));
  REQUIRE_THROWS_WITH(fedge::serialize_safetensors({{"__metadata__", DType::kF32, {2}, as_bytes(v)}}),
                      Catch::Contains("reserved"));
  TempDir dir;
  const auto path = dir.path / "bad.safetensors";
  REQUIRE_THROWS_AS(fedge::write_safetensors(path, {{"x", DType::kF32, {3}, as_bytes(v)}}), Error);
  CHECK(fs::is_empty(dir.path));  // validation happens before anything touches the disk
}

TEST_CASE("atomic write replaces an existing file", "[safetensors]") {
  TempDir dir;
  const auto path = dir.path / "w.safetensors";
  std::vector<float> one{1}, two{2, 2};
  fedge::write_safetensors(path, {{"w", DType::kF32, {1}, as_bytes(one)}});
  const auto first = SafetensorsFile::open(path);  // the old mapping stays valid
  fedge::write_safetensors(path, {{"w", DType::kF32, {2}, as_bytes(two)}});
  CHECK(first.to_f32(first.at("w")) == one);
  const auto second = SafetensorsFile::open(path);
  CHECK(second.to_f32(second.at("w")) == two);
  REQUIRE_THROWS_MATCHES(fedge::write_safetensors(dir.path / "no_such_dir" / "x.safetensors", {}), Error,
                         Catch::Predicate<Error>([](const Error& e) { return e.kind() == ErrorKind::kIo; }));
}

TEST_CASE("open: missing, empty and non-regular files", "[safetensors]") {
  TempDir dir;
  try {
    (void)SafetensorsFile::open(dir.path / "nope.safetensors");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kNotFound);
    CHECK_THAT(e.what(), Catch::Contains("nope.safetensors") && Catch::Contains("No such file"));
  }
  const auto empty = dir.path / "empty.safetensors";
  { std::FILE* f = std::fopen(empty.c_str(), "wb"); std::fclose(f); }
  REQUIRE_THROWS_WITH(SafetensorsFile::open(empty), Catch::Contains("file is 0 bytes, shorter than the 8-byte header"));
  REQUIRE_THROWS_WITH(SafetensorsFile::open(dir.path), Catch::Contains("not a regular file"));
}

TEST_CASE("at() names the missing tensor and the file", "[safetensors]") {
  const auto file = SafetensorsFile::from_bytes(fedge::serialize_safetensors({}), "x.safetensors");
  try {
    (void)file.at("lm_head.weight");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::kNotFound);
    CHECK_THAT(e.what(), Catch::Contains("x.safetensors") && Catch::Contains("'lm_head.weight'"));
  }
}

TEST_CASE("to_f32 refuses integer tensors and wrong output sizes", "[safetensors]") {
  std::vector<std::int32_t> i{1, 2};
  std::vector<float> f{1, 2};
  const auto file = SafetensorsFile::from_bytes(
      fedge::serialize_safetensors({{"i", DType::kI32, {2}, as_bytes(i)}, {"f", DType::kF32, {2}, as_bytes(f)}}),
      "t.safetensors");
  REQUIRE_THROWS_WITH(file.to_f32(file.at("i")), Catch::Contains("tensor 'i' has dtype I32"));
  std::vector<float> out(3);
  REQUIRE_THROWS_WITH(file.to_f32(file.at("f"), out), Catch::Contains("has 2 elements but the output holds 3"));
}

// ------------------------------------------------------------ malformed files

TEST_CASE("malformed: file shorter than 8 bytes", "[safetensors][malformed]") {
  expect_invalid(std::vector<std::byte>(5), {"file is 5 bytes, shorter than the 8-byte header length"});
  expect_invalid({}, {"file is 0 bytes"});
}

TEST_CASE("malformed: header length 0 or 1", "[safetensors][malformed]") {
  expect_invalid(std::vector<std::byte>(8), {"header length 0 is too small"});
  auto one = std::vector<std::byte>(9);
  one[0] = std::byte{1};
  one[8] = std::byte{'{'};
  expect_invalid(one, {"header length 1 is too small"});
}

TEST_CASE("malformed: header length over the 100 MB limit", "[safetensors][malformed]") {
  std::vector<std::byte> bytes(16, std::byte{' '});
  const std::uint64_t n = fedge::kMaxSafetensorsHeaderBytes + 1;
  std::memcpy(bytes.data(), &n, 8);
  expect_invalid(bytes, {"header length 100000001 exceeds the limit of 100000000 bytes"});
  const std::uint64_t huge = ~std::uint64_t{0};
  std::memcpy(bytes.data(), &huge, 8);
  expect_invalid(bytes, {"exceeds the limit"});
}

TEST_CASE("malformed: header length beyond the file", "[safetensors][malformed]") {
  auto bytes = raw_file("{}", 0);
  const std::uint64_t n = 3;
  std::memcpy(bytes.data(), &n, 8);
  expect_invalid(bytes, {"header length 3 runs past the end of the 10-byte file"});
}

TEST_CASE("malformed: header is not JSON", "[safetensors][malformed]") {
  expect_header_invalid("{\"a\": ", 0, {"header is not valid JSON", "parse error"});
  expect_header_invalid("not json", 0, {"header is not valid JSON"});
  expect_header_invalid("{}garbage", 0, {"header is not valid JSON"});
  expect_header_invalid(std::string("{\"\xff\":1}"), 0, {"header is not valid JSON"});  // not UTF-8
}

TEST_CASE("malformed: header nests too deep", "[safetensors][malformed]") {
  expect_header_invalid(std::string(1000, '[') + std::string(1000, ']'), 0, {"nests JSON deeper"});
  // Brackets inside strings do not count.
  const auto ok = SafetensorsFile::from_bytes(raw_file(R"({"__metadata__":{"k":"[[[[{{{{"}})", 0), "ok");
  CHECK(ok.metadata().at("k") == "[[[[{{{{");
}

TEST_CASE("malformed: header not an object", "[safetensors][malformed]") {
  expect_header_invalid("[1, 2]", 0, {"header is not a JSON object (got array)"});
  expect_header_invalid("\"str\"", 0, {"header is not a JSON object (got string)"});
}

TEST_CASE("malformed: duplicate tensor names", "[safetensors][malformed]") {
  expect_header_invalid(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                        R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                        2, {"header names 'a' twice"});
}

TEST_CASE("malformed: entry not an object", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w": [1, 2]})", 0, {"tensor 'w': entry must be a JSON object, got array"});
}

TEST_CASE("malformed: missing or ill-typed dtype", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4, {"tensor 'w': missing field 'dtype'"});
  expect_header_invalid(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4,
                        {"tensor 'w': field 'dtype' must be a string, got 4"});
}

TEST_CASE("malformed: unknown dtype", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F8_E9M9","shape":[1],"data_offsets":[0,1]}})", 1,
                        {"tensor 'w': unknown dtype 'F8_E9M9'", "F32"});
  expect_header_invalid(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1,
                        {"tensor 'w': unknown dtype 'Q4'"});
}

TEST_CASE("malformed: missing or ill-typed shape", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4, {"tensor 'w': missing field 'shape'"});
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", 4,
                        {"tensor 'w': field 'shape' must be an array of non-negative integers, got 4"});
}

TEST_CASE("malformed: negative or non-integer shape dimensions", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})", 0,
                        {"tensor 'w': shape [2,-1]: dimension 1 is -1"});
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4,
                        {"tensor 'w': shape [1.5]: dimension 0 is 1.5"});
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
                        {"dimension 0 is \"2\""});
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", 8,
                        {"dimension 0 is 18446744073709551615"});
}

TEST_CASE("malformed: shape product overflow", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
                        {"tensor 'w': shape [4294967296, 4294967296] overflows"});
  // numel fits but numel * dtype size does not.
  expect_header_invalid(R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", 0,
                        {"tensor 'w': shape [2305843009213693952] overflows"});
  // A zero dimension makes the product 0 whatever the others are.
  const auto ok = SafetensorsFile::from_bytes(
      raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0), "ok");
  CHECK(ok.at("w").numel() == 0);
}

TEST_CASE("malformed: data_offsets missing or not two non-negative integers", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[1]}})", 4, {"tensor 'w': missing field 'data_offsets'"});
  for (const std::string bad : {"[0]", "[0,4,8]", "\"0,4\"", "[0,4.0]", "[-4,0]", "[0,null]"}) {
    expect_header_invalid(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + bad + "}}", 4,
                          {"tensor 'w': field 'data_offsets' must be an array of two non-negative integers"});
  }
}

TEST_CASE("malformed: data_offsets begin after end", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4,
                        {"tensor 'w': data_offsets [4, 0]: begin is after end"});
}

TEST_CASE("malformed: data_offsets end beyond the buffer", "[safetensors][malformed]") {
  expect_header_invalid(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
                        {"tensor 'w': data_offsets [0, 8] end beyond the data buffer of 4 bytes"});
  expect_header_invalid(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})",
                        0, {"end beyond the data buffer"});
}

TEST_CASE("malformed: size does not match shape and dtype", "[safetensors][malformed]") {
  expect_header_invalid(R"({"lm_head.weight":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", 100,
                        {"tensor 'lm_head.weight': data_offsets [0, 100] give 100 bytes but shape [5, 6] of F32 needs 120"});
  expect_header_invalid(R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})", 4,
                        {"tensor 's': data_offsets [0, 4] give 4 bytes but shape [] of BF16 needs 2"});
}

TEST_CASE("malformed: overlapping ranges", "[safetensors][malformed]") {
  expect_header_invalid(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        12, {"tensor 'b': data_offsets [4, 12] overlap tensor 'a' at [0, 8]"});
  // A zero-size tensor inside another's bytes overlaps too.
  expect_header_invalid(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                        8, {"tensor 'z': data_offsets [4, 4] overlap tensor 'a'"});
}

TEST_CASE("malformed: gaps and buffer not covered exactly", "[safetensors][malformed]") {
  expect_header_invalid(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        12, {"tensor 'b': data_offsets [8, 12] leave a gap: bytes [4, 8)"});
  expect_header_invalid(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                        {"tensor 'a': data_offsets [4, 8] leave a gap: bytes [0, 4)"});
  expect_header_invalid(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6,
                        {"data buffer has 6 bytes but the tensors cover only 4"});
  expect_header_invalid("{}", 3, {"data buffer has 3 bytes but the tensors cover only 0"});
}

TEST_CASE("malformed: __metadata__ not an object of string to string", "[safetensors][malformed]") {
  expect_header_invalid(R"({"__metadata__":"x"})", 0, {"__metadata__ must be an object of string to string, got string"});
  expect_header_invalid(R"({"__metadata__":{"k":1}})", 0, {"__metadata__ key 'k' must map to a string, got number 1"});
  expect_header_invalid(R"({"__metadata__":{"k":{"x":"y"}}})", 0, {"__metadata__ key 'k' must map to a string, got object"});
}

TEST_CASE("accepts foreign but valid files: unpadded header, extra fields, any key order", "[safetensors]") {
  // 2 bytes of F16 right after an odd-length header: the data is unaligned.
  const std::string header = R"({"h":{"shape":[1],"data_offsets":[0,2],"dtype":"F16","extra":true}})";
  auto bytes = raw_file(header, 2);
  bytes[8 + header.size()] = std::byte{0x00};
  bytes[8 + header.size() + 1] = std::byte{0x3c};
  const auto file = SafetensorsFile::from_bytes(bytes, "foreign");
  CHECK(file.to_f32(file.at("h")) == std::vector<float>{1.0f});
}

TEST_CASE("truncations of a valid file are all rejected cleanly", "[safetensors][malformed]") {
  std::vector<float> a{1, 2, 3}, b{4};
  const auto good = fedge::serialize_safetensors({{"a", DType::kF32, {3}, as_bytes(a)}, {"b", DType::kF32, {}, as_bytes(b)}},
                                                 {{"k", "v"}});
  (void)SafetensorsFile::from_bytes(good, "good");
  for (std::size_t len = 0; len < good.size(); ++len) {
    INFO("length " << len);
    CHECK_THROWS_AS(SafetensorsFile::from_bytes({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len)}, "t"),
                    Error);
  }
}

// ------------------------------------------------------------ f16 / bf16

namespace {
std::uint32_t f32_bits(float f) { return std::bit_cast<std::uint32_t>(f); }
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }
}  // namespace

TEST_CASE("f16 edges: max, subnormals, signed zero, inf, nan", "[safetensors][f16]") {
  using fedge::f16_to_f32;
  using fedge::f32_to_f16;
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_f32(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(1023.0f, -24)) == 0x03ff);
  CHECK(f32_bits(f16_to_f32(0x8000)) == 0x80000000u);  // -0 stays -0
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f16_to_f32(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(f16_to_f32(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f32_to_f16(-std::numeric_limits<float>::infinity()) == 0xfc00);
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  CHECK(std::isnan(f16_to_f32(0x7c01)));  // signalling NaN is still NaN
  const std::uint16_t qnan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((qnan & 0x7c00) == 0x7c00);
  CHECK((qnan & 0x03ff) != 0);
  CHECK((f32_to_f16(from_bits(0xff800001u)) & 0xfe00) == 0xfe00);  // NaN with tiny payload: quiet, signed
  // Overflow: values from 65520 (the tie above 65504) round to infinity.
  CHECK(f32_to_f16(65519.996f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);
  CHECK(f32_to_f16(1e10f) == 0x7c00);
  // Ties to even in the normal range: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  // Subnormal rounding: 2^-25 is the tie between 0 and the smallest subnormal (even: 0).
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);
  CHECK(f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f) == 0x0001);
  CHECK(f32_to_f16(-std::ldexp(1.0f, -30)) == 0x8000);  // underflow keeps the sign
  // The largest subnormal rounds up into the smallest normal.
  CHECK(f32_to_f16(std::ldexp(1023.75f, -24)) == 0x0400);
}

TEST_CASE("f16: every bit pattern round-trips, bulk conversion matches scalar", "[safetensors][f16]") {
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<std::uint16_t>(h);
  // An odd-length header leaves the data buffer unaligned, so the bulk path
  // also proves it copes with unaligned input.
  const std::string header = R"({"h":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}})";
  REQUIRE(header.size() % 2 == 1);
  auto bytes = raw_file(header, 2 * all.size());
  std::memcpy(bytes.data() + 8 + header.size(), all.data(), 2 * all.size());
  const auto file = SafetensorsFile::from_bytes(std::move(bytes), "all-f16");
  std::vector<float> out(all.size());
  file.to_f32(file.at("h"), out);
  std::size_t mismatches = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float s = fedge::f16_to_f32(static_cast<std::uint16_t>(h));
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0;
    if (nan) {
      mismatches += !(std::isnan(s) && std::isnan(out[h]));
      continue;
    }
    mismatches += f32_bits(s) != f32_bits(out[h]);
    mismatches += fedge::f32_to_f16(s) != h;  // widening is exact, so narrowing gives it back
  }
  CHECK(mismatches == 0);
}

TEST_CASE("bf16: exact widening, round-to-nearest-even narrowing, specials", "[safetensors][bf16]") {
  using fedge::bf16_to_f32;
  using fedge::f32_to_bf16;
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  // Ties: 0x3f808000 is halfway between 0x3f80 (even) and 0x3f81.
  CHECK(f32_to_bf16(from_bits(0x3f808000u)) == 0x3f80);
  CHECK(f32_to_bf16(from_bits(0x3f818000u)) == 0x3f82);  // halfway 0x3f81/0x3f82: to even
  CHECK(f32_to_bf16(from_bits(0x3f808001u)) == 0x3f81);  // just above the tie
  CHECK(f32_to_bf16(from_bits(0x3f807fffu)) == 0x3f80);  // just below
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to inf
  CHECK(f32_to_bf16(from_bits(0x7f7f7fffu)) == 0x7f7f);
  CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(f32_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
  CHECK(f32_to_bf16(-0.0f) == 0x8000);
  CHECK(f32_bits(bf16_to_f32(0x8000)) == 0x80000000u);
  CHECK(f32_to_bf16(from_bits(0x00000001u)) == 0x0000);  // tiny subnormal rounds to 0
  CHECK(f32_to_bf16(from_bits(0x00008000u)) == 0x0000);  // tie at a subnormal: to even
  CHECK(f32_to_bf16(from_bits(0x00018000u)) == 0x0002);
  CHECK(bf16_to_f32(0x0001) == from_bits(0x00010000u));  // bf16 subnormal
  // NaN stays NaN even when the payload lives only in the dropped low bits.
  const std::uint16_t nan = f32_to_bf16(from_bits(0x7f800001u));
  CHECK(std::isnan(bf16_to_f32(nan)));
  CHECK(f32_to_bf16(from_bits(0xffc00000u)) == 0xffc0);
  // Every bf16 pattern widens and narrows back to itself (NaNs stay NaN).
  std::size_t mismatches = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_f32(static_cast<std::uint16_t>(b));
    if (std::isnan(f)) mismatches += !std::isnan(bf16_to_f32(f32_to_bf16(f)));
    else mismatches += f32_to_bf16(f) != b;
  }
  CHECK(mismatches == 0);
}

// ------------------------------------------------------------ independent reader

// A reader written from the format's rules alone (Python's json and struct),
// run on a file fedge wrote. Skipped where python3 is not installed.
TEST_CASE("a file written by fedge parses with an independent python reader", "[safetensors]") {
  if (std::system("command -v python3 > /dev/null 2>&1") != 0) {
    WARN("python3 not found; independent reader check skipped");
    return;
  }
  TempDir dir;
  std::vector<float> f32{1.0f, -2.5f};
  std::vector<std::uint16_t> f16{fedge::f32_to_f16(0.5f), fedge::f32_to_f16(-65504.0f)};
  std::vector<std::uint16_t> bf16{fedge::f32_to_bf16(1.5f)};
  std::vector<std::int64_t> i64{-3, 1LL << 40};
  std::vector<std::uint8_t> u8{7, 8, 9};
  const auto file = dir.path / "fedge.safetensors";
  fedge::write_safetensors(file,
                           {{"w.f32", DType::kF32, {2}, as_bytes(f32)},
                            {"w.f16", DType::kF16, {1, 2}, as_bytes(f16)},
                            {"b.bf16", DType::kBF16, {}, as_bytes(bf16)},
                            {"ids", DType::kI64, {2}, as_bytes(i64)},
                            {"mask", DType::kU8, {3}, as_bytes(u8)},
                            {"none", DType::kF32, {0}, {}}},
                           {{"format", "pt"}});
  const auto script = dir.path / "reader.py";
  {
    std::FILE* f = std::fopen(script.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs(R"PY(
import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
assert (8 + n) % 8 == 0, 'buffer not 8-byte aligned'
text = raw[8:8 + n].decode('utf-8')
assert text.startswith('{') and text == text.rstrip(' ') + ' ' * (len(text) - len(text.rstrip(' ')))
header = json.loads(text)
meta = header.pop('__metadata__', {})
assert meta == {'format': 'pt'}, meta
assert list(header) == sorted(header), 'keys not sorted'
buf = raw[8 + n:]
pos = 0
sizes = {'F64': 8, 'F32': 4, 'F16': 2, 'BF16': 2, 'I64': 8, 'I32': 4, 'I16': 2, 'I8': 1, 'U8': 1, 'BOOL': 1}
values = {}
for name, t in sorted(header.items(), key=lambda kv: kv[1]['data_offsets']):
    b, e = t['data_offsets']
    assert b == pos, ('gap or overlap', name)
    numel = 1
    for d in t['shape']:
        numel *= d
    assert e - b == numel * sizes[t['dtype']], name
    chunk = buf[b:e]
    fmt = {'F32': 'f', 'F16': 'e', 'I64': 'q', 'U8': 'B'}.get(t['dtype'])
    if t['dtype'] == 'BF16':
        values[name] = [struct.unpack('<f', b'\0\0' + chunk[i:i + 2])[0] for i in range(0, len(chunk), 2)]
    else:
        values[name] = list(struct.unpack('<%d%s' % (numel, fmt), chunk))
    pos = e
assert pos == len(buf), 'buffer not covered exactly'
expect = {'w.f32': [1.0, -2.5], 'w.f16': [0.5, -65504.0], 'b.bf16': [1.5], 'ids': [-3, 1 << 40],
          'mask': [7, 8, 9], 'none': []}
assert values == expect, values
print('ok')
)PY",
               f);
    std::fclose(f);
  }
  const std::string cmd = "python3 '" + script.string() + "' '" + file.string() + "'";
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("a moved SafetensorsFile keeps its mapping and index", "[safetensors]") {
  TempDir dir;
  std::vector<float> w{1, 2, 3};
  fedge::write_safetensors(dir.path / "m.safetensors", {{"w", DType::kF32, {3}, as_bytes(w)}});
  auto first = SafetensorsFile::open(dir.path / "m.safetensors");
  const auto span_before = first.bytes(first.at("w"));
  SafetensorsFile moved(std::move(first));
  CHECK(moved.bytes(moved.at("w")).data() == span_before.data());
  auto other = SafetensorsFile::from_bytes(fedge::serialize_safetensors({}), "empty");
  other = std::move(moved);
  CHECK(other.to_f32(other.at("w")) == w);
  CHECK(other.source_name() == (dir.path / "m.safetensors").string());
}

TEST_CASE("writer orders data by element size so every tensor is aligned to it", "[safetensors]") {
  std::vector<std::uint8_t> u8(3, 7);
  std::vector<std::uint16_t> half(3, 0x3c00);
  std::vector<float> f32 = {1.0f, 2.0f};
  std::vector<double> f64 = {3.0};
  auto view = [](const auto& v) { return std::as_bytes(std::span(v)); };
  std::vector<fedge::TensorView> tensors = {{"a_u8", fedge::DType::kU8, {3}, view(u8)},
                                            {"b_f16", fedge::DType::kF16, {3}, view(half)},
                                            {"c_f32", fedge::DType::kF32, {2}, view(f32)},
                                            {"d_f64", fedge::DType::kF64, {1}, view(f64)}};
  auto file = fedge::SafetensorsFile::from_bytes(fedge::serialize_safetensors(tensors), "aligned");
  for (const auto& t : file.tensors()) {
    INFO(t.name);
    CHECK(t.begin % fedge::dtype_size(t.dtype) == 0);
  }
  CHECK(file.at("d_f64").begin == 0);
  CHECK(file.at("c_f32").begin == 8);
  CHECK(file.at("b_f16").begin == 16);
  CHECK(file.at("a_u8").begin == 22);
  CHECK(file.to_f32(file.at("c_f32")) == std::vector<float>{1.0f, 2.0f});
}
