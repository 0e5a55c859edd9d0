// GGUF read and write: a round trip of every metadata type and tensor type,
// the layout llama.cpp expects (magic, version 3, aligned data), and one
// refused file per hostile field, each error naming the field.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

#include "fedge/common/error.h"
#include "fedge/common/gguf.h"

using namespace fedge;

namespace {

std::vector<std::byte> bytes_of(std::initializer_list<float> values) {
  std::vector<std::byte> out(values.size() * 4);
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

std::shared_ptr<const GgufArray> string_array(std::vector<std::string> items) {
  auto a = std::make_shared<GgufArray>();
  a->element_type = GgufType::kString;
  for (auto& s : items) a->values.emplace_back(std::move(s));
  return a;
}

struct Sample {
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<std::byte> w, q;
  std::vector<GgufTensorView> tensors;
  Sample() {
    metadata = {{"general.architecture", std::string("llama")},
                {"llama.block_count", std::uint32_t{2}},
                {"llama.rope.freq_base", 10000.0F},
                {"general.file_type", std::int32_t{7}},
                {"tokenizer.ggml.tokens", string_array({"<s>", "</s>", "a"})},
                {"flag", true},
                {"u64", std::uint64_t{1} << 40},
                {"f64", 0.25}};
    w = bytes_of({1, 2, 3, 4, 5, 6});
    q.assign(34 * 2, std::byte{7});  // two Q8_0 blocks
    tensors = {{"token_embd.weight", {3, 2}, GgmlType::kF32, w}, {"blk.0.attn_q.weight", {32, 2}, GgmlType::kQ8_0, q}};
  }
  std::vector<std::byte> file() const { return gguf_bytes(metadata, tensors); }
};

template <class T>
void put(std::vector<std::byte>& b, std::size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

void refused(std::vector<std::byte> bytes, const std::string& needle) {
  CHECK_THROWS_WITH(GgufFile::from_bytes(std::move(bytes), "hostile.gguf"), Catch::Contains(needle));
}

}  // namespace

TEST_CASE("gguf: a written file reads back with every metadata type and aligned tensor data") {
  const Sample s;
  const auto bytes = s.file();
  REQUIRE(bytes.size() > 24);
  CHECK(std::memcmp(bytes.data(), "GGUF", 4) == 0);
  const GgufFile f = GgufFile::from_bytes(bytes, "sample.gguf");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  REQUIRE(f.metadata().size() == s.metadata.size());
  CHECK(f.metadata_string("general.architecture") == "llama");
  CHECK(f.metadata_uint("llama.block_count") == 2);
  CHECK(std::get<float>(*f.find_metadata("llama.rope.freq_base")) == 10000.0F);
  CHECK(std::get<bool>(*f.find_metadata("flag")));
  CHECK(f.metadata_uint("u64") == (std::uint64_t{1} << 40));
  const auto& tokens = std::get<std::shared_ptr<const GgufArray>>(*f.find_metadata("tokenizer.ggml.tokens"));
  REQUIRE(tokens->values.size() == 3);
  CHECK(std::get<std::string>(tokens->values[2]) == "a");
  const GgufTensorInfo& q = f.at("blk.0.attn_q.weight");
  CHECK(q.type == GgmlType::kQ8_0);
  CHECK(q.dims == std::vector<std::uint64_t>{32, 2});
  CHECK(q.bytes == 68);
  CHECK(q.offset % 32 == 0);
  CHECK(f.bytes(q).size() == 68);
  CHECK(f.bytes(q)[0] == std::byte{7});
  const auto e = f.bytes(f.at("token_embd.weight"));
  float v[6];
  std::memcpy(v, e.data(), sizeof v);
  CHECK(v[5] == 6.0F);
  CHECK_THROWS_AS(f.at("missing"), Error);
  CHECK_THROWS_WITH(f.metadata_string("llama.block_count"), Catch::Contains("not a string"));

  const auto path = std::filesystem::temp_directory_path() / "fedge_test_sample.gguf";
  write_gguf(path, s.metadata, s.tensors);
  const GgufFile mapped = GgufFile::open(path);
  CHECK(mapped.tensors().size() == 2);
  CHECK(std::equal(mapped.bytes(mapped.at("blk.0.attn_q.weight")).begin(),
                   mapped.bytes(mapped.at("blk.0.attn_q.weight")).end(), s.q.begin()));
  std::filesystem::remove(path);
}

TEST_CASE("gguf: the writer refuses data that does not match dims and type") {
  Sample s;
  s.tensors[1].dims = {33, 2};  // not whole Q8_0 blocks
  CHECK_THROWS_WITH(s.file(), Catch::Contains("whole number of 32-value blocks"));
  s = Sample();
  s.tensors[0].dims = {4, 2};
  CHECK_THROWS_WITH(s.file(), Catch::Contains("need 32"));
  s = Sample();
  s.metadata.push_back({"flag", false});
  CHECK_THROWS_WITH(s.file(), Catch::Contains("appears twice"));
}

TEST_CASE("gguf: hostile headers are refused naming the field, before any large allocation") {
  const auto good = Sample().file();
  auto b = good;
  b[0] = std::byte{'X'};
  refused(b, "magic");
  b = good;
  put<std::uint32_t>(b, 4, 1);
  refused(b, "version 1 is not supported");
  b = good;
  put<std::uint64_t>(b, 8, std::uint64_t{1} << 40);
  refused(b, "tensor count");
  b = good;
  put<std::uint64_t>(b, 16, std::uint64_t{1} << 62);
  refused(b, "metadata count");
  // The first key's length: a string that runs past the end.
  b = good;
  put<std::uint64_t>(b, 24, std::uint64_t{1} << 20);
  refused(b, "runs past the end");
  b = good;
  put<std::uint64_t>(b, 24, ~std::uint64_t{0});
  refused(b, "limit");
  for (std::size_t cut : {std::size_t{3}, std::size_t{20}, std::size_t{40}, good.size() - 1})
    refused(std::vector<std::byte>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)), "hostile.gguf");
}

TEST_CASE("gguf: hostile metadata values and tensor infos are refused naming the entry") {
  Sample s;
  auto a = std::make_shared<GgufArray>();
  a->element_type = GgufType::kU8;
  a->values = {std::uint8_t{1}};
  s.metadata = {{"arr", a}};
  auto b = s.file();
  // header 24 + key (8 + 3) + type 4 + element type 4, then the count.
  put<std::uint64_t>(b, 24 + 11 + 4 + 4, std::uint64_t{1} << 50);
  refused(b, "cannot fit");
  b = s.file();
  put<std::uint32_t>(b, 24 + 11, 99);
  refused(b, "unknown value type 99");

  s = Sample();
  s.metadata = {{"b", true}};
  b = s.file();
  put<std::uint8_t>(b, 24 + 9 + 4, 2);
  refused(b, "0 or 1");

  s = Sample();
  s.metadata = {{"general.alignment", std::uint32_t{32}}};
  b = s.file();
  put<std::uint32_t>(b, 24 + 8 + 17 + 4, 48);
  refused(b, "not a power of two");

  // Tensor info of a file without metadata: name (8 + 17), dims count, dims, type, offset.
  s = Sample();
  s.metadata.clear();
  const auto base = s.file();
  const std::size_t info = 24 + 8 + 17;
  b = base;
  put<std::uint32_t>(b, info, 9);
  refused(b, "9 dimensions");
  b = base;
  put<std::uint32_t>(b, info + 4 + 16, 10);  // Q2_K: not read
  refused(b, "ggml type 10");
  b = base;
  put<std::uint32_t>(b, info + 4 + 16, 12);  // Q4_K, read, but a 3-value row is no whole 256-value super-block
  refused(b, "a row of 3 Q4_K values is not a whole number of 256-value blocks");
  b = base;
  put<std::uint64_t>(b, info + 4 + 16 + 4, 7);
  refused(b, "not a multiple of the alignment");
  b = base;
  put<std::uint64_t>(b, info + 4 + 16 + 4, 1u << 20);
  refused(b, "run past the end");
  b = base;
  put<std::uint64_t>(b, info + 4, ~std::uint64_t{0});
  put<std::uint64_t>(b, info + 4 + 8, ~std::uint64_t{0});
  refused(b, "overflows");
  b = base;
  put<std::uint64_t>(b, info + 4 + 16 + 4, 32);  // onto the second tensor's bytes
  refused(b, "overlaps");
}

TEST_CASE("gguf: a file cut inside its tensor data is refused naming the tensor") {
  const auto good = Sample().file();
  // The Q8_0 tensor is last: cutting its final block leaves its bytes past the end.
  std::vector<std::byte> cut(good.begin(), good.end() - 10);
  refused(cut, "tensor 'blk.0.attn_q.weight'");
  refused(cut, "run past the end of the file");
  // Cut at the start of the data section: the first tensor is named.
  const GgufFile file = GgufFile::from_bytes(good, "good.gguf");
  const std::size_t data_start = good.size() - (file.at("blk.0.attn_q.weight").offset + 68);
  refused(std::vector<std::byte>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(data_start) + 4),
          "tensor 'token_embd.weight'");
}
