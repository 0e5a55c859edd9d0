// GGUF (llama.cpp's model file, version 3; version 2 has the same layout):
// read (memory-mapped, every field validated up front) and write.
//
// Layout, little-endian: "GGUF", u32 version, u64 tensor count, u64 metadata
// count; metadata entries (string key, u32 value type, value); tensor infos
// (string name, u32 dimension count, u64 dimensions with the fastest first,
// u32 ggml type, u64 offset into the data section); padding to
// general.alignment (32 unless set); the data section. A string is a u64
// length and that many UTF-8 bytes; an array is a u32 element type, a u64
// count and the elements.
//
// A GGUF file is untrusted input: counts, lengths, types, dimensions, offsets
// and the alignment are each checked against the file's size and fixed limits
// before anything is allocated, and every failure is an Error(kInvalidInput)
// naming the file and the field (and entry) at fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fedge {

// Metadata value types (gguf_type).
enum class GgufType : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Tensor element types fedge reads and writes (ggml_type ids).
enum class GgmlType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ5_0 = 6,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ6_K = 14,
  kBF16 = 30
};
std::string_view ggml_type_name(GgmlType type);  // "F32", "Q8_0", ...
// Elements per block (1 for plain types, 32 for Q8_0/Q4_0/Q5_0, 256 for the
// k-quants Q4_K/Q6_K) and bytes per block.
std::uint64_t ggml_block_size(GgmlType type);
std::uint64_t ggml_block_bytes(GgmlType type);

struct GgufArray;
// One metadata value: the type is the alternative held (an array is a GgufArray).
using GgufValue = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t, std::int32_t,
                               float, bool, std::string, std::shared_ptr<const GgufArray>, std::uint64_t,
                               std::int64_t, double>;
struct GgufArray {
  GgufType element_type = GgufType::kU8;
  std::vector<GgufValue> values;
};
GgufType gguf_type_of(const GgufValue& value);

struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> dims;  // as in the file: fastest-varying first (ne[0] = row length)
  GgmlType type = GgmlType::kF32;
  std::uint64_t offset = 0;         // into the data section
  std::uint64_t bytes = 0;          // computed from dims and type
  std::uint64_t numel() const;
};

// Limits on what a file may ask the reader to hold.
inline constexpr std::uint64_t kGgufMaxTensors = 1u << 20;
inline constexpr std::uint64_t kGgufMaxMetadata = 1u << 20;
inline constexpr std::uint64_t kGgufMaxStringBytes = 1u << 26;  // 64 MiB (a chat template, a merges list entry)
inline constexpr std::uint32_t kGgufMaxDims = 4;                // GGML_MAX_DIMS
inline constexpr std::uint32_t kGgufMaxArrayDepth = 2;          // arrays of arrays, not deeper
// Metadata array elements in the whole file (a 256k-token vocabulary has three
// arrays of 256k): bounds the memory a small hostile file can make us allocate.
inline constexpr std::uint64_t kGgufMaxArrayElements = 1u << 23;

class GgufFile {
 public:
  static GgufFile open(const std::filesystem::path& path);
  static GgufFile from_bytes(std::vector<std::byte> bytes, std::string source_name);
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& source_name() const;
  std::uint32_t version() const;
  std::uint32_t alignment() const;
  // Metadata in file order, and by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const;
  const GgufValue* find_metadata(std::string_view key) const;
  // Throws Error(kNotFound) naming the key, Error(kInvalidInput) for another type.
  std::string metadata_string(std::string_view key) const;
  std::uint64_t metadata_uint(std::string_view key) const;  // any unsigned or non-negative signed integer type
  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find(std::string_view name) const;
  const GgufTensorInfo& at(std::string_view name) const;  // Error(kNotFound) naming the tensor
  std::span<const std::byte> bytes(const GgufTensorInfo& tensor) const;

 private:
  struct Impl;
  explicit GgufFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct GgufTensorView {
  std::string name;
  std::vector<std::uint64_t> dims;  // fastest-varying first
  GgmlType type = GgmlType::kF32;
  std::span<const std::byte> data;  // exactly the bytes dims and type call for
};

// Writes a GGUF v3 file atomically, tensors in the order given, each at an
// offset aligned to general.alignment (32 unless the metadata sets it as a
// u32). Throws Error(kInvalidInput) for duplicate keys or names, a data size
// that does not match dims and type, a row length that is not a whole number
// of blocks, or more than 4 dimensions.
void write_gguf(const std::filesystem::path& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorView>& tensors);
// The same bytes, in memory (for tests and tools).
std::vector<std::byte> gguf_bytes(const std::vector<std::pair<std::string, GgufValue>>& metadata,
                                  const std::vector<GgufTensorView>& tensors);

}  // namespace fedge
