// safetensors: read (memory-mapped, fully validated) and write.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian
// header length N, then N bytes of UTF-8 JSON mapping tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte
// buffer that follows the header) plus an optional "__metadata__" object of
// string to string. Writers pad the header with spaces so the buffer starts
// 8-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedge {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);     // "F32", "BF16", ...
DType parse_dtype(std::string_view name);     // throws Error(kInvalidInput) for unknown names
bool is_floating(DType dtype);
// "[2, 3]": a shape as errors and tools print it.
std::string format_shape(const std::vector<std::int64_t>& shape);

// Scalar conversions (round-to-nearest-even when narrowing).
float f16_to_f32(std::uint16_t bits);
std::uint16_t f32_to_f16(float value);
float bf16_to_f32(std::uint16_t bits);
std::uint16_t f32_to_bf16(float value);

// Largest header accepted when reading, as the reference implementation does.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets into the data buffer
  std::uint64_t end = 0;
  std::int64_t numel() const;
  std::uint64_t nbytes() const { return end - begin; }
};

// A read-only safetensors file. Opening validates everything up front, so any
// tensor that open() returns can be read without further checks:
// header length (>= 2, <= kMaxSafetensorsHeaderBytes, within the file), JSON
// syntax, entry types, known dtypes, non-negative shapes, offsets within the
// buffer, size == numel * dtype size, no overlapping ranges, no gaps, and the
// buffer covered exactly. Each failure is an Error(kInvalidInput) naming the
// file and the tensor or field at fault.
class SafetensorsFile {
 public:
  // Memory-maps the file.
  static SafetensorsFile open(const std::filesystem::path& path);
  // Parses bytes already in memory (copied); `source_name` names them in errors.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes, std::string source_name);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& source_name() const;
  // Tensors in file order (ascending offset).
  const std::vector<TensorInfo>& tensors() const;
  const std::map<std::string, std::string>& metadata() const;
  const TensorInfo* find(std::string_view name) const;
  // Throws Error(kNotFound) naming the tensor and the file.
  const TensorInfo& at(std::string_view name) const;
  // Raw little-endian bytes of one tensor.
  std::span<const std::byte> bytes(const TensorInfo& tensor) const;
  // Values of a floating-point tensor converted to f32 (F64/F32/F16/BF16).
  std::vector<float> to_f32(const TensorInfo& tensor) const;
  void to_f32(const TensorInfo& tensor, std::span<float> out) const;

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One tensor to write; `data` holds numel * dtype_size bytes, little-endian.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
};

// Serialises tensors (data ordered by element size, largest first, then by
// name, as the reference writer does, so each tensor is aligned) with
// optional metadata. Throws Error(kInvalidInput) on duplicate names or a data
// size that does not match the shape.
std::vector<std::byte> serialize_safetensors(
    const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Writes atomically (temporary file, then rename).
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace fedge
