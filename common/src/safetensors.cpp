// safetensors reading (memory-mapped, validated up front) and writing
// (sorted, space-padded header, atomic rename). Validation follows the
// reference implementation's rules so that a file fedge accepts is one
// Hugging Face accepts, and vice versa.
#include "fedge/common/safetensors.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "fedge/common/error.h"
#include "fedge/common/file_io.h"
#include "float_convert.h"

namespace fedge {

using json = nlohmann::json;

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  std::size_t size;
  bool floating;
};

constexpr std::array<DTypeEntry, 10> kDTypes{{
    {DType::kF64, "F64", 8, true},
    {DType::kF32, "F32", 4, true},
    {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true},
    {DType::kI64, "I64", 8, false},
    {DType::kI32, "I32", 4, false},
    {DType::kI16, "I16", 2, false},
    {DType::kI8, "I8", 1, false},
    {DType::kU8, "U8", 1, false},
    {DType::kBool, "BOOL", 1, false},
}};

const DTypeEntry& dtype_entry(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  throw Error(ErrorKind::kInvalidInput, "invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

std::string known_dtype_list() {
  std::string out;
  for (const auto& e : kDTypes) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}


std::string range_string(std::uint64_t begin, std::uint64_t end) {
  std::string out(1, '[');
  out.append(std::to_string(begin)).append(", ").append(std::to_string(end)).push_back(']');
  return out;
}

// A JSON value quoted for an error message, cut short so a hostile header
// cannot make a megabyte-long message.
std::string brief(const json& value) {
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

[[noreturn]] void invalid(const std::string& source, const std::string& what) {
  throw Error(ErrorKind::kInvalidInput, source + ": " + what);
}

[[noreturn]] void invalid_tensor(const std::string& source, const std::string& name,
                                 const std::string& what) {
  invalid(source, "tensor '" + name + "': " + what);
}

// Exact element count of a shape (any zero dimension makes it 0) or nullopt on
// overflow of int64.
std::optional<std::uint64_t> checked_numel(const std::vector<std::int64_t>& shape) {
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  std::uint64_t n = 1;
  for (std::int64_t d : shape) {
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n)) return std::nullopt;
  }
  if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
  return n;
}

// Depth of bracket nesting outside strings. A safetensors header nests at most
// 3 deep (root, entry, shape); checking first keeps a hostile "[[[[..." header
// from costing gigabytes of JSON nodes.
std::size_t max_nesting(std::string_view text) {
  std::size_t depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if ((c == '}' || c == ']') && depth > 0) --depth;
  }
  return max_depth;
}

struct ParsedHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::uint64_t data_offset = 0;  // 8 + header length
};

json parse_header_json(std::string_view text, const std::string& source) {
  if (max_nesting(text) > 3) {
    invalid(source, "header nests JSON deeper than a safetensors header can (more than 3 levels)");
  }
  // Duplicate top-level keys would silently replace one tensor by another.
  std::string duplicate;
  std::set<std::string, std::less<>> keys;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    invalid(source, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!root.is_object()) {
    invalid(source, std::string("header is not a JSON object (got ") + root.type_name() + ")");
  }
  if (!duplicate.empty()) invalid(source, "header names '" + duplicate + "' twice");
  return root;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& source) {
  if (!value.is_object()) {
    invalid(source, std::string("__metadata__ must be an object of string to string, got ") +
                        value.type_name());
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      invalid(source, "__metadata__ key '" + key + "' must map to a string, got " +
                          v.type_name() + " " + brief(v));
    }
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

const json& require_field(const json& entry, const char* field, const std::string& source,
                          const std::string& name) {
  auto it = entry.find(field);
  if (it == entry.end()) invalid_tensor(source, name, std::string("missing field '") + field + "'");
  return *it;
}

TensorInfo parse_entry(const std::string& name, const json& entry, std::uint64_t buffer_size,
                       const std::string& source) {
  if (!entry.is_object()) {
    invalid_tensor(source, name, std::string("entry must be a JSON object, got ") + entry.type_name());
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = require_field(entry, "dtype", source, name);
  if (!dtype.is_string()) {
    invalid_tensor(source, name, std::string("field 'dtype' must be a string, got ") + brief(dtype));
  }
  const auto& dname = dtype.get_ref<const std::string&>();
  auto known = std::find_if(kDTypes.begin(), kDTypes.end(), [&](const auto& e) { return e.name == dname; });
  if (known == kDTypes.end()) {
    invalid_tensor(source, name, "unknown dtype '" + dname + "' (fedge reads " + known_dtype_list() + ")");
  }
  info.dtype = known->dtype;

  const json& shape = require_field(entry, "shape", source, name);
  if (!shape.is_array()) {
    invalid_tensor(source, name, "field 'shape' must be an array of non-negative integers, got " + brief(shape));
  }
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const json& d = shape[i];
    const bool ok = d.is_number_unsigned() ||
                    (d.is_number_integer() && d.get<std::int64_t>() >= 0);
    if (!ok || d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      invalid_tensor(source, name, "shape " + brief(shape) + ": dimension " + std::to_string(i) +
                                       " is " + brief(d) + "; dimensions must be non-negative integers");
    }
    info.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
  }

  const json& offsets = require_field(entry, "data_offsets", source, name);
  const auto is_offset = [](const json& v) {
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0);
  };
  if (!offsets.is_array() || offsets.size() != 2 || !is_offset(offsets[0]) || !is_offset(offsets[1])) {
    invalid_tensor(source, name,
                   "field 'data_offsets' must be an array of two non-negative integers [begin, end], got " +
                       brief(offsets));
  }
  info.begin = offsets[0].get<std::uint64_t>();
  info.end = offsets[1].get<std::uint64_t>();
  const std::string range = range_string(info.begin, info.end);
  if (info.begin > info.end) {
    invalid_tensor(source, name, "data_offsets " + range + ": begin is after end");
  }
  if (info.end > buffer_size) {
    invalid_tensor(source, name, "data_offsets " + range + " end beyond the data buffer of " +
                                     std::to_string(buffer_size) + " bytes (file truncated?)");
  }

  const auto numel = checked_numel(info.shape);
  std::uint64_t need = 0;
  if (!numel || __builtin_mul_overflow(*numel, dtype_size(info.dtype), &need)) {
    invalid_tensor(source, name, "shape " + format_shape(info.shape) + " overflows: too many elements");
  }
  if (info.nbytes() != need) {
    invalid_tensor(source, name, "data_offsets " + range + " give " + std::to_string(info.nbytes()) +
                                     " bytes but shape " + format_shape(info.shape) + " of " +
                                     std::string(dname) + " needs " + std::to_string(need));
  }
  return info;
}

// Tensors sorted by offset must tile the buffer exactly: no overlap, no gap,
// nothing left over (the reference implementation rejects all three).
void check_coverage(std::vector<TensorInfo>& tensors, std::uint64_t buffer_size, const std::string& source) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  const auto range = [](const TensorInfo& t) { return range_string(t.begin, t.end); };
  for (const auto& t : tensors) {
    if (t.begin < covered) {
      invalid_tensor(source, t.name, "data_offsets " + range(t) + " overlap tensor '" + prev->name +
                                         "' at " + range(*prev));
    }
    if (t.begin > covered) {
      invalid_tensor(source, t.name, "data_offsets " + range(t) + " leave a gap: bytes [" +
                                         std::to_string(covered) + ", " + std::to_string(t.begin) +
                                         ") of the data buffer belong to no tensor");
    }
    covered = t.end;
    prev = &t;
  }
  if (covered != buffer_size) {
    invalid(source, "data buffer has " + std::to_string(buffer_size) + " bytes but the tensors cover only " +
                        std::to_string(covered) + " (trailing bytes belong to no tensor)");
  }
}

ParsedHeader parse_file(std::span<const std::byte> file, const std::string& source) {
  if (file.size() < 8) {
    invalid(source, "file is " + std::to_string(file.size()) +
                        " bytes, shorter than the 8-byte header length; not a safetensors file (truncated?)");
  }
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);  // little-endian host (checked in float_convert.cpp)
  if (n < 2) {
    invalid(source, "header length " + std::to_string(n) + " is too small (the smallest header is '{}')");
  }
  if (n > kMaxSafetensorsHeaderBytes) {
    invalid(source, "header length " + std::to_string(n) + " exceeds the limit of " +
                        std::to_string(kMaxSafetensorsHeaderBytes) + " bytes (corrupt or not a safetensors file)");
  }
  if (n > file.size() - 8) {
    invalid(source, "header length " + std::to_string(n) + " runs past the end of the " +
                        std::to_string(file.size()) + "-byte file (truncated?)");
  }
  const std::string_view text(reinterpret_cast<const char*>(file.data() + 8), n);
  const json root = parse_header_json(text, source);

  ParsedHeader out;
  out.data_offset = 8 + n;
  const std::uint64_t buffer_size = file.size() - out.data_offset;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      out.metadata = parse_metadata(value, source);
    } else {
      out.tensors.push_back(parse_entry(key, value, buffer_size, source));
    }
  }
  check_coverage(out.tensors, buffer_size, source);
  return out;
}


}  // namespace

// ---------------------------------------------------------------- dtypes

std::string format_shape(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::size_t dtype_size(DType dtype) { return dtype_entry(dtype).size; }
std::string_view dtype_name(DType dtype) { return dtype_entry(dtype).name; }
bool is_floating(DType dtype) { return dtype_entry(dtype).floating; }

DType parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  throw Error(ErrorKind::kInvalidInput,
              "unknown dtype '" + std::string(name) + "' (fedge reads " + known_dtype_list() + ")");
}

std::int64_t TensorInfo::numel() const {
  // Exact even for [2^32, 2^32, 0], which a validated file may contain.
  for (auto d : shape) {
    if (d < 0) throw Error(ErrorKind::kInvalidInput, "tensor '" + name + "' has a negative dimension");
  }
  const auto n = checked_numel(shape);
  if (!n) throw Error(ErrorKind::kInvalidInput, "tensor '" + name + "': element count overflows");
  return static_cast<std::int64_t>(*n);
}

// ---------------------------------------------------------------- reading

struct SafetensorsFile::Impl {
  std::string source;
  std::vector<std::byte> owned;  // from_bytes
  MappedFile mapped;             // open(): the whole file, read-only
  const std::byte* buffer = nullptr;  // the data buffer after the header
  std::uint64_t buffer_size = 0;
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::size_t, std::less<>> index;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() = default;

  void load(std::span<const std::byte> file) {
    ParsedHeader parsed = parse_file(file, source);
    buffer = file.data() + parsed.data_offset;
    buffer_size = file.size() - parsed.data_offset;
    tensors = std::move(parsed.tensors);
    metadata = std::move(parsed.metadata);
    for (std::size_t i = 0; i < tensors.size(); ++i) index.emplace(tensors[i].name, i);
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>();
  impl->source = path.string();
  impl->mapped = MappedFile::open(path, "safetensors file");
  impl->load(impl->mapped.bytes());
  return SafetensorsFile(std::move(impl));
}

SafetensorsFile SafetensorsFile::from_bytes(std::vector<std::byte> bytes, std::string source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::move(source_name);
  impl->owned = std::move(bytes);
  impl->load(impl->owned);
  return SafetensorsFile(std::move(impl));
}

const std::string& SafetensorsFile::source_name() const { return impl_->source; }
const std::vector<TensorInfo>& SafetensorsFile::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = impl_->index.find(name);
  return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw Error(ErrorKind::kNotFound,
              impl_->source + ": no tensor named '" + std::string(name) + "' (the file has " +
                  std::to_string(impl_->tensors.size()) + " tensors)");
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& tensor) const {
  // A TensorInfo from another file could point anywhere; check it is ours.
  if (tensor.begin > tensor.end || tensor.end > impl_->buffer_size) {
    throw Error(ErrorKind::kInvalidInput, impl_->source + ": tensor '" + tensor.name +
                                              "' lies outside this file's data buffer");
  }
  return {impl_->buffer + tensor.begin, tensor.end - tensor.begin};
}

std::vector<float> SafetensorsFile::to_f32(const TensorInfo& tensor) const {
  std::vector<float> out(static_cast<std::size_t>(tensor.nbytes() / dtype_size(tensor.dtype)));
  to_f32(tensor, out);
  return out;
}

void SafetensorsFile::to_f32(const TensorInfo& tensor, std::span<float> out) const {
  const auto src = bytes(tensor);
  const std::size_t n = src.size() / dtype_size(tensor.dtype);
  if (out.size() != n) {
    throw Error(ErrorKind::kInvalidInput, impl_->source + ": tensor '" + tensor.name + "' has " +
                                              std::to_string(n) + " elements but the output holds " +
                                              std::to_string(out.size()));
  }
  switch (tensor.dtype) {
    case DType::kF32: if (n) std::memcpy(out.data(), src.data(), n * 4); return;
    case DType::kF16: detail::f16_to_f32_bulk(src.data(), out.data(), n); return;
    case DType::kBF16: detail::bf16_to_f32_bulk(src.data(), out.data(), n); return;
    case DType::kF64: detail::f64_to_f32_bulk(src.data(), out.data(), n); return;
    default:
      throw Error(ErrorKind::kInvalidInput,
                  impl_->source + ": tensor '" + tensor.name + "' has dtype " +
                      std::string(dtype_name(tensor.dtype)) +
                      "; only F64, F32, F16 and BF16 tensors convert to f32");
  }
}

// ---------------------------------------------------------------- writing

namespace {

// The padded header and the tensors in data order: larger dtypes first, then
// by name, as the reference writer does, so that every tensor starts at a
// multiple of its element size (readers may map it in place).
struct WritePlan {
  std::string header;  // JSON padded with spaces; 8 + size is a multiple of 8
  std::vector<const TensorView*> order;
};

WritePlan plan_write(const std::vector<TensorView>& tensors,
                     const std::map<std::string, std::string>& metadata) {
  std::map<std::string_view, const TensorView*> by_name;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__") {
      throw Error(ErrorKind::kInvalidInput, "safetensors: '__metadata__' is reserved and cannot name a tensor");
    }
    if (!by_name.emplace(t.name, &t).second) {
      throw Error(ErrorKind::kInvalidInput, "safetensors: tensor name '" + t.name + "' given twice");
    }
    for (auto d : t.shape) {
      if (d < 0) {
        throw Error(ErrorKind::kInvalidInput, "safetensors: tensor '" + t.name + "': shape " +
                                                  format_shape(t.shape) + " has a negative dimension");
      }
    }
    const auto numel = checked_numel(t.shape);
    std::uint64_t need = 0;
    if (!numel || __builtin_mul_overflow(*numel, dtype_size(t.dtype), &need)) {
      throw Error(ErrorKind::kInvalidInput, "safetensors: tensor '" + t.name + "': shape " +
                                                format_shape(t.shape) + " overflows");
    }
    if (t.data.size() != need) {
      throw Error(ErrorKind::kInvalidInput,
                  "safetensors: tensor '" + t.name + "': data has " + std::to_string(t.data.size()) +
                      " bytes but shape " + format_shape(t.shape) + " of " + std::string(dtype_name(t.dtype)) +
                      " needs " + std::to_string(need));
    }
  }
  json root = json::object();  // std::map ordering: header keys sorted by name
  WritePlan plan;
  for (const auto& [name, t] : by_name) plan.order.push_back(t);
  std::stable_sort(plan.order.begin(), plan.order.end(), [](const TensorView* a, const TensorView* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  std::uint64_t offset = 0;
  for (const TensorView* t : plan.order) {
    root[t->name] = {{"dtype", dtype_name(t->dtype)},
                               {"shape", t->shape},
                               {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  if (!metadata.empty()) root["__metadata__"] = metadata;
  try {
    plan.header = root.dump();
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kInvalidInput,
                std::string("safetensors: a tensor name or metadata string is not valid UTF-8 (") + e.what() + ")");
  }
  plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
  return plan;
}


}  // namespace

std::vector<std::byte> serialize_safetensors(const std::vector<TensorView>& tensors,
                                             const std::map<std::string, std::string>& metadata) {
  const WritePlan plan = plan_write(tensors, metadata);
  std::size_t total = 8 + plan.header.size();
  for (const auto* t : plan.order) total += t->data.size();
  std::vector<std::byte> out(total);
  const std::uint64_t n = plan.header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, plan.header.data(), plan.header.size());
  std::size_t pos = 8 + plan.header.size();
  for (const auto* t : plan.order) {
    if (!t->data.empty()) std::memcpy(out.data() + pos, t->data.data(), t->data.size());
    pos += t->data.size();
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const WritePlan plan = plan_write(tensors, metadata);  // validate before touching the disk
  const std::uint64_t n = plan.header.size();
  std::vector<std::span<const std::byte>> pieces{std::as_bytes(std::span(&n, 1)), std::as_bytes(std::span(plan.header))};
  for (const auto* t : plan.order) pieces.push_back(t->data);
  write_file_atomically(path, pieces);
}

}  // namespace fedge
