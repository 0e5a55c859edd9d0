// ParamLayout / ParamVector: named tensors laid end to end in one float buffer.
#include "fedge/common/param_vector.h"

#include <cstring>
#include <limits>

#include "fedge/common/error.h"
#include "float_convert.h"

namespace fedge {

void ParamLayout::add(std::string name, std::vector<std::int64_t> shape) {
  if (index_.count(name) != 0) {
    throw Error(ErrorKind::kInvalidInput, "parameter layout: tensor '" + name + "' added twice");
  }
  std::size_t numel = 1;
  bool zero = false;
  for (auto d : shape) {
    if (d < 0) {
      throw Error(ErrorKind::kInvalidInput, "parameter layout: tensor '" + name + "': shape " +
                                                format_shape(shape) + " has a negative dimension");
    }
    zero = zero || d == 0;
  }
  for (auto d : shape) {
    if (zero) { numel = 0; break; }
    if (__builtin_mul_overflow(numel, static_cast<std::size_t>(d), &numel)) {
      throw Error(ErrorKind::kInvalidInput, "parameter layout: tensor '" + name + "': shape " +
                                                format_shape(shape) + " has too many elements");
    }
  }
  std::size_t total = 0;
  if (__builtin_add_overflow(total_, numel, &total)) {
    throw Error(ErrorKind::kInvalidInput, "parameter layout: total size overflows at tensor '" + name + "'");
  }
  index_.emplace(name, entries_.size());
  entries_.push_back(ParamEntry{std::move(name), std::move(shape), total_, numel});
  total_ = total;
}

const ParamEntry* ParamLayout::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const ParamEntry& ParamLayout::at(std::string_view name) const {
  if (const ParamEntry* e = find(name)) return *e;
  throw Error(ErrorKind::kNotFound, "parameter layout has no tensor named '" + std::string(name) + "'");
}

bool ParamLayout::operator==(const ParamLayout& other) const {
  if (total_ != other.total_ || entries_.size() != other.entries_.size()) return false;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const auto& a = entries_[i];
    const auto& b = other.entries_[i];
    if (a.name != b.name || a.shape != b.shape || a.offset != b.offset || a.numel != b.numel) return false;
  }
  return true;
}

ParamVector::ParamVector(ParamLayout layout) : layout_(std::move(layout)), values_(layout_.size(), 0.0f) {}

ParamVector::ParamVector(ParamLayout layout, std::vector<float> values)
    : layout_(std::move(layout)), values_(std::move(values)) {
  if (values_.size() != layout_.size()) {
    throw Error(ErrorKind::kInvalidInput, "parameter vector: " + std::to_string(values_.size()) +
                                              " values given for a layout of " +
                                              std::to_string(layout_.size()) + " floats");
  }
}

std::span<float> ParamVector::tensor(std::string_view name) {
  const ParamEntry& e = layout_.at(name);
  return std::span<float>(values_).subspan(e.offset, e.numel);
}

std::span<const float> ParamVector::tensor(std::string_view name) const {
  const ParamEntry& e = layout_.at(name);
  return std::span<const float>(values_).subspan(e.offset, e.numel);
}

ParamVector ParamVector::remapped(const ParamLayout& target) const {
  ParamVector out(target);
  for (const ParamEntry& want : target.entries()) {
    const ParamEntry* have = layout_.find(want.name);
    if (have == nullptr) {
      throw Error(ErrorKind::kInvalidInput, "parameter vector: tensor '" + want.name + "' is missing");
    }
    if (have->shape != want.shape) {
      throw Error(ErrorKind::kInvalidInput, "parameter vector: tensor '" + want.name + "' has shape " +
                                                format_shape(have->shape) + ", expected " + format_shape(want.shape));
    }
    std::memcpy(out.values_.data() + want.offset, values_.data() + have->offset, want.numel * sizeof(float));
  }
  // Every tensor of the target is here; any left over is one too many.
  for (const ParamEntry& have : layout_.entries()) {
    if (target.find(have.name) == nullptr) {
      throw Error(ErrorKind::kInvalidInput, "parameter vector: tensor '" + have.name + "' is extra: the layout it "
                                                "is laid out as has no such tensor");
    }
  }
  return out;
}

ParamVector ParamVector::from_safetensors(const SafetensorsFile& file) {
  ParamLayout layout;
  for (const auto& t : file.tensors()) {
    if (is_floating(t.dtype)) layout.add(t.name, t.shape);
  }
  ParamVector out(std::move(layout));
  for (const auto& t : file.tensors()) {
    if (is_floating(t.dtype)) file.to_f32(t, out.tensor(t.name));
  }
  return out;
}

ParamVector ParamVector::load(const std::filesystem::path& path) {
  return from_safetensors(SafetensorsFile::open(path));
}

void ParamVector::save(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata,
                       DType dtype) const {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    throw Error(ErrorKind::kInvalidInput, "parameter vector: cannot save as " + std::string(dtype_name(dtype)) +
                                              " (use F32, F16 or BF16)");
  }
  std::vector<std::uint16_t> narrow;  // F16/BF16 copy of the whole buffer
  const std::byte* base = reinterpret_cast<const std::byte*>(values_.data());
  if (dtype != DType::kF32) {
    narrow.resize(values_.size());
    if (dtype == DType::kF16) detail::f32_to_f16_bulk(values_.data(), narrow.data(), values_.size());
    else detail::f32_to_bf16_bulk(values_.data(), narrow.data(), values_.size());
    base = reinterpret_cast<const std::byte*>(narrow.data());
  }
  const std::size_t width = dtype_size(dtype);
  std::vector<TensorView> views;
  views.reserve(layout_.entries().size());
  for (const auto& e : layout_.entries()) {
    views.push_back(TensorView{e.name, dtype, e.shape, {base + e.offset * width, e.numel * width}});
  }
  write_safetensors(path, views, metadata);
}

}  // namespace fedge
