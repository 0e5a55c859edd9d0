// ParamLayout / ParamVector: offsets, spans, safetensors load/save in F32/F16/BF16.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "fedge/common/error.h"
#include "test_util.h"
#include "fedge/common/param_vector.h"

namespace fs = std::filesystem;
using fedge::DType;
using fedge::Error;
using fedge::ErrorKind;
using fedge::ParamLayout;
using fedge::ParamVector;

namespace {

using fedge::testing::as_bytes;

struct TempDir : fedge::testing::TempDir {
  TempDir() : fedge::testing::TempDir("fedge_test_pv_") {}
};

ParamLayout sample_layout() {
  ParamLayout layout;
  layout.add("layer.0.w", {2, 3});
  layout.add("layer.0.b", {3});
  layout.add("scale", {});
  layout.add("empty", {0, 4});
  layout.add("layer.1.w", {2, 2});
  return layout;
}

}  // namespace

TEST_CASE("layout: offsets, sizes, lookup", "[param_vector]") {
  const ParamLayout layout = sample_layout();
  CHECK(layout.size() == 6 + 3 + 1 + 0 + 4);
  REQUIRE(layout.entries().size() == 5);
  const std::vector<std::pair<std::size_t, std::size_t>> expect{{0, 6}, {6, 3}, {9, 1}, {10, 0}, {10, 4}};
  for (std::size_t i = 0; i < expect.size(); ++i) {
    CHECK(layout.entries()[i].offset == expect[i].first);
    CHECK(layout.entries()[i].numel == expect[i].second);
  }
  CHECK(layout.find("scale")->offset == 9);
  CHECK(layout.find("nope") == nullptr);
  CHECK(layout.at("layer.1.w").shape == std::vector<std::int64_t>{2, 2});
  REQUIRE_THROWS_MATCHES(layout.at("nope"), Error,
                         Catch::Predicate<Error>([](const Error& e) { return e.kind() == ErrorKind::kNotFound; }));
  CHECK(layout == sample_layout());
  ParamLayout other = sample_layout();
  other.add("extra", {1});
  CHECK_FALSE(layout == other);
}

TEST_CASE("layout: duplicates, negative and overflowing shapes are rejected", "[param_vector]") {
  ParamLayout layout;
  layout.add("w", {2});
  REQUIRE_THROWS_WITH(layout.add("w", {3}), Catch::Contains("tensor 'w' added twice"));
  REQUIRE_THROWS_WITH(layout.add("n", {2, -1}), Catch::Contains("tensor 'n': shape [2, -1] has a negative dimension"));
  REQUIRE_THROWS_WITH(layout.add("big", {1LL << 40, 1LL << 40}), Catch::Contains("too many elements"));
  CHECK(layout.size() == 2);  // failed adds leave the layout unchanged
  CHECK(layout.entries().size() == 1);
}

TEST_CASE("vector: zero-filled, spans alias the flat buffer", "[param_vector]") {
  ParamVector v(sample_layout());
  CHECK(v.size() == 14);
  for (float x : v.values()) CHECK(x == 0.0f);
  auto b = v.tensor("layer.0.b");
  REQUIRE(b.size() == 3);
  b[0] = 1.5f;
  b[2] = -2.0f;
  CHECK(v.values()[6] == 1.5f);
  CHECK(v.values()[8] == -2.0f);
  v.tensor("scale")[0] = 7.0f;
  CHECK(v.values()[9] == 7.0f);
  CHECK(v.tensor("empty").empty());
  const ParamVector& cv = v;
  CHECK(cv.tensor("layer.0.b").data() == v.values().data() + 6);
  REQUIRE_THROWS_AS(v.tensor("missing"), Error);
  REQUIRE_THROWS_WITH(ParamVector(sample_layout(), std::vector<float>(13)),
                      Catch::Contains("13 values given for a layout of 14 floats"));
}

TEST_CASE("from_safetensors: floating tensors in file order, integers ignored", "[param_vector]") {
  std::vector<float> a{1, 2, 3, 4};
  std::vector<std::uint16_t> b{0x3c00, 0xc000};  // f16: 1, -2
  std::vector<std::uint16_t> c{0x3fc0};          // bf16: 1.5
  std::vector<double> d{0.25, 8};
  std::vector<std::int64_t> ids{5, 6, 7};
  const auto bytes = fedge::serialize_safetensors({
      {"d", DType::kF64, {2}, as_bytes(d)},
      {"a", DType::kF32, {2, 2}, as_bytes(a)},
      {"ids", DType::kI64, {3}, as_bytes(ids)},
      {"c", DType::kBF16, {}, as_bytes(c)},
      {"b", DType::kF16, {2}, as_bytes(b)},
  });
  const auto file = fedge::SafetensorsFile::from_bytes(bytes, "pv");
  const ParamVector v = ParamVector::from_safetensors(file);
  REQUIRE(v.layout().entries().size() == 4);
  // File order for fedge-written files: larger dtypes first, then by name
  // (F64 d, F32 a, then the 2-byte b and c).
  CHECK(v.layout().entries()[0].name == "d");
  CHECK(v.layout().entries()[1].name == "a");
  CHECK(v.layout().entries()[2].name == "b");
  CHECK(v.layout().entries()[3].name == "c");
  CHECK(v.layout().find("ids") == nullptr);
  const std::vector<float> flat(v.values().begin(), v.values().end());
  CHECK(flat == std::vector<float>{0.25f, 8, 1, 2, 3, 4, 1, -2, 1.5f});
  CHECK(v.layout().at("c").shape.empty());
}

TEST_CASE("save and load in F32, F16 and BF16 with metadata", "[param_vector]") {
  TempDir dir;
  ParamVector v(sample_layout());
  // Values exact in f16 and bf16 (small integers and halves).
  for (std::size_t i = 0; i < v.size(); ++i) v.values()[i] = static_cast<float>(i) * 0.5f - 3.0f;
  const std::map<std::string, std::string> meta{{"round", "7"}, {"kind", "adapter"}};
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    INFO("dtype " << fedge::dtype_name(dt));
    const auto path = dir.path / (std::string(fedge::dtype_name(dt)) + ".safetensors");
    v.save(path, meta, dt);
    const auto file = fedge::SafetensorsFile::open(path);
    CHECK(file.metadata() == meta);
    for (const auto& t : file.tensors()) CHECK(t.dtype == dt);
    const ParamVector back = ParamVector::load(path);
    // Saved in name order, so the layout comes back sorted by name.
    std::vector<std::string> names;
    for (const auto& e : back.layout().entries()) names.push_back(e.name);
    CHECK(names == std::vector<std::string>{"empty", "layer.0.b", "layer.0.w", "layer.1.w", "scale"});
    for (const auto& e : v.layout().entries()) {
      const auto x = v.tensor(e.name);
      const auto y = back.tensor(e.name);
      CHECK(std::vector<float>(x.begin(), x.end()) == std::vector<float>(y.begin(), y.end()));
      CHECK(back.layout().at(e.name).shape == e.shape);
    }
  }
  // Narrowing rounds: 1/3 is not exact in bf16 (8-bit mantissa) or f16.
  ParamLayout one;
  one.add("x", {1});
  ParamVector third(one, {1.0f / 3.0f});
  third.save(dir.path / "t16.safetensors", {}, DType::kF16);
  third.save(dir.path / "tb16.safetensors", {}, DType::kBF16);
  CHECK(ParamVector::load(dir.path / "t16.safetensors").values()[0] == fedge::f16_to_f32(0x3555));
  CHECK(ParamVector::load(dir.path / "tb16.safetensors").values()[0] == fedge::bf16_to_f32(0x3eab));
  REQUIRE_THROWS_WITH(third.save(dir.path / "i.safetensors", {}, DType::kI32), Catch::Contains("cannot save as I32"));
}

TEST_CASE("from_safetensors follows offset order, not name order, in foreign files", "[param_vector]") {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::vector<std::byte> bytes(8 + header.size() + 8);
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  const float z = 10.0f, a = 20.0f;
  std::memcpy(bytes.data() + 8 + header.size(), &z, 4);
  std::memcpy(bytes.data() + 8 + header.size() + 4, &a, 4);
  const auto file = fedge::SafetensorsFile::from_bytes(bytes, "foreign");
  const ParamVector v = ParamVector::from_safetensors(file);
  CHECK(v.layout().entries()[0].name == "z");
  CHECK(v.layout().entries()[1].name == "a");
  CHECK(std::vector<float>(v.values().begin(), v.values().end()) == std::vector<float>{10.0f, 20.0f});
}

TEST_CASE("remapped lays tensors out in another order by name", "[param_vector]") {
  fedge::ParamLayout ab;
  ab.add("a", {2});
  ab.add("b", {1, 3});
  fedge::ParamVector v(ab, {1, 2, 3, 4, 5});
  fedge::ParamLayout ba;
  ba.add("b", {1, 3});
  ba.add("a", {2});
  auto r = v.remapped(ba);
  CHECK(r.layout() == ba);
  CHECK(std::vector<float>(r.values().begin(), r.values().end()) == std::vector<float>{3, 4, 5, 1, 2});
  CHECK(r.remapped(ab).values()[4] == 5.0f);

  fedge::ParamLayout wrong_shape;
  wrong_shape.add("b", {3});
  wrong_shape.add("a", {2});
  CHECK_THROWS_WITH(v.remapped(wrong_shape), Catch::Contains("'b' has shape [1, 3]"));
  fedge::ParamLayout other;
  other.add("a", {2});
  other.add("c", {1, 3});
  CHECK_THROWS_WITH(v.remapped(other), Catch::Contains("'c' is missing"));
  // A count that differs names the tensor at fault, either way.
  fedge::ParamLayout fewer;
  fewer.add("a", {2});
  CHECK_THROWS_WITH(v.remapped(fewer), Catch::Contains("'b' is extra"));
  fedge::ParamLayout more = ab;
  more.add("c", {1});
  CHECK_THROWS_WITH(v.remapped(more), Catch::Contains("'c' is missing"));
}
