// A flat parameter vector: named tensors laid end to end in one float buffer.
// Aggregation, secure aggregation and DP work on the flat buffer; models and
// files work on the named tensors. The layout makes the mapping explicit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fedge/common/safetensors.h"

namespace fedge {


struct ParamEntry {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  // in floats, within the flat buffer
  std::size_t numel = 0;
};

class ParamLayout {
 public:
  // Appends a tensor; throws Error(kInvalidInput) on a duplicate name or a
  // negative dimension.
  void add(std::string name, std::vector<std::int64_t> shape);
  std::size_t size() const { return total_; }  // total floats
  const std::vector<ParamEntry>& entries() const { return entries_; }
  const ParamEntry* find(std::string_view name) const;
  const ParamEntry& at(std::string_view name) const;  // throws Error(kNotFound)
  bool operator==(const ParamLayout& other) const;

 private:
  std::vector<ParamEntry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::size_t total_ = 0;
};

class ParamVector {
 public:
  ParamVector() = default;
  explicit ParamVector(ParamLayout layout);  // zero-filled
  ParamVector(ParamLayout layout, std::vector<float> values);  // sizes must match

  const ParamLayout& layout() const { return layout_; }
  std::span<float> values() { return values_; }
  std::span<const float> values() const { return values_; }
  std::size_t size() const { return values_.size(); }
  std::span<float> tensor(std::string_view name);
  std::span<const float> tensor(std::string_view name) const;
  // The same tensors laid out as `target` says (matched by name; shapes must
  // agree), e.g. the coordinator's federated layout to an adapter's own order.
  // Throws Error(kInvalidInput) naming the first tensor that is missing, extra
  // or mis-shaped.
  ParamVector remapped(const ParamLayout& target) const;

  // Every floating-point tensor of the file, in file order, converted to f32.
  static ParamVector from_safetensors(const SafetensorsFile& file);
  static ParamVector load(const std::filesystem::path& path);
  // Writes every tensor in `dtype` (F32, F16 or BF16) with the metadata.
  void save(const std::filesystem::path& path,
            const std::map<std::string, std::string>& metadata = {},
            DType dtype = DType::kF32) const;

 private:
  ParamLayout layout_;
  std::vector<float> values_;
};

}  // namespace fedge
