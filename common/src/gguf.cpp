#include "fedge/common/gguf.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "fedge/common/error.h"
#include "fedge/common/file_io.h"

namespace fedge {

std::string_view ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kBF16: return "BF16";
  }
  return "?";
}

std::uint64_t ggml_block_size(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0: case GgmlType::kQ5_0: case GgmlType::kQ8_0: return 32;
    case GgmlType::kQ4_K: case GgmlType::kQ6_K: return 256;  // QK_K
    default: return 1;
  }
}

std::uint64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 4;
    case GgmlType::kF16: case GgmlType::kBF16: return 2;
    case GgmlType::kQ4_0: return 18;
    case GgmlType::kQ8_0: return 34;
    case GgmlType::kQ5_0: return 22;
    case GgmlType::kQ4_K: return 144;
    case GgmlType::kQ6_K: return 210;
  }
  return 0;
}

GgufType gguf_type_of(const GgufValue& value) {
  static constexpr GgufType kByIndex[] = {GgufType::kU8,  GgufType::kI8,     GgufType::kU16,   GgufType::kI16,
                                          GgufType::kU32, GgufType::kI32,    GgufType::kF32,   GgufType::kBool,
                                          GgufType::kString, GgufType::kArray, GgufType::kU64, GgufType::kI64,
                                          GgufType::kF64};
  return kByIndex[value.index()];
}

std::uint64_t GgufTensorInfo::numel() const {
  std::uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

namespace {

constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr std::uint32_t kDefaultAlignment = 32;

bool known_ggml_type(std::uint32_t t) {
  return t == 0 || t == 1 || t == 2 || t == 6 || t == 8 || t == 12 || t == 14 || t == 30;
}

// Bytes of a tensor, or an error naming it: dims non-zero... (zero dims are
// allowed: an empty tensor), the row a whole number of blocks, no overflow.
std::uint64_t tensor_bytes(const std::vector<std::uint64_t>& dims, GgmlType type, const std::string& where) {
  const std::uint64_t block = ggml_block_size(type);
  if (!dims.empty() && dims[0] % block != 0)
    throw Error(ErrorKind::kInvalidInput, where + ": a row of " + std::to_string(dims[0]) + " " +
                                              std::string(ggml_type_name(type)) + " values is not a whole number of " +
                                              std::to_string(block) + "-value blocks");
  std::uint64_t blocks = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const std::uint64_t d = i == 0 ? dims[0] / block : dims[i];
    if (d != 0 && blocks > UINT64_MAX / d)
      throw Error(ErrorKind::kInvalidInput, where + ": the element count overflows 64 bits");
    blocks *= d;
  }
  if (blocks > UINT64_MAX / ggml_block_bytes(type))
    throw Error(ErrorKind::kInvalidInput, where + ": the byte count overflows 64 bits");
  return blocks * ggml_block_bytes(type);
}

// ---------------------------------------------------------------- reading

class Reader {
 public:
  Reader(std::span<const std::byte> file, const std::string& source) : file_(file), source_(source) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(ErrorKind::kInvalidInput,
                source_ + ": " + field + " (at byte " + std::to_string(pos_) + "): " + what);
  }
  std::uint64_t remaining() const { return file_.size() - pos_; }
  std::uint64_t pos() const { return pos_; }

  template <class T>
  T scalar(const std::string& field) {
    if (remaining() < sizeof(T))
      fail(field, "the file ends after " + std::to_string(file_.size()) + " bytes, inside this field");
    T v;
    std::memcpy(&v, file_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const std::string& field) {
    const auto n = scalar<std::uint64_t>(field + " length");
    if (n > kGgufMaxStringBytes)
      fail(field, std::to_string(n) + " bytes of text, limit " + std::to_string(kGgufMaxStringBytes));
    if (n > remaining()) fail(field, "a " + std::to_string(n) + "-byte string runs past the end of the file");
    std::string s(reinterpret_cast<const char*>(file_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  GgufValue value(GgufType type, const std::string& field, std::uint32_t depth) {
    switch (type) {
      case GgufType::kU8: return scalar<std::uint8_t>(field);
      case GgufType::kI8: return scalar<std::int8_t>(field);
      case GgufType::kU16: return scalar<std::uint16_t>(field);
      case GgufType::kI16: return scalar<std::int16_t>(field);
      case GgufType::kU32: return scalar<std::uint32_t>(field);
      case GgufType::kI32: return scalar<std::int32_t>(field);
      case GgufType::kF32: return scalar<float>(field);
      case GgufType::kU64: return scalar<std::uint64_t>(field);
      case GgufType::kI64: return scalar<std::int64_t>(field);
      case GgufType::kF64: return scalar<double>(field);
      case GgufType::kBool: {
        const auto b = scalar<std::uint8_t>(field);
        if (b > 1) fail(field, "a bool must be 0 or 1, got " + std::to_string(b));
        return b == 1;
      }
      case GgufType::kString: return string(field);
      case GgufType::kArray: return array(field, depth + 1);
    }
    fail(field, "unknown value type " + std::to_string(static_cast<std::uint32_t>(type)));
  }

  GgufType type(const std::string& field) {
    const auto t = scalar<std::uint32_t>(field);
    if (t > static_cast<std::uint32_t>(GgufType::kF64)) fail(field, "unknown value type " + std::to_string(t));
    return static_cast<GgufType>(t);
  }

 private:
  std::shared_ptr<const GgufArray> array(const std::string& field, std::uint32_t depth) {
    if (depth > kGgufMaxArrayDepth) fail(field, "arrays nested deeper than " + std::to_string(kGgufMaxArrayDepth));
    auto out = std::make_shared<GgufArray>();
    out->element_type = type(field + " element type");
    const auto n = scalar<std::uint64_t>(field + " count");
    // Every element takes at least one byte: a count past the file's end is a lie.
    if (n > remaining()) fail(field, std::to_string(n) + " elements cannot fit in the " + std::to_string(remaining()) + " bytes left");
    if (n > kGgufMaxArrayElements - elements_)
      fail(field, "more than " + std::to_string(kGgufMaxArrayElements) + " array elements in the file's metadata");
    elements_ += n;
    out->values.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i)
      out->values.push_back(value(out->element_type, field + "[" + std::to_string(i) + "]", depth));
    return out;
  }

  std::span<const std::byte> file_;
  const std::string& source_;
  std::uint64_t pos_ = 0;
  std::uint64_t elements_ = 0;  // array elements read so far
};

}  // namespace

struct GgufFile::Impl {
  std::string source;
  std::vector<std::byte> owned;
  MappedFile mapped;
  std::uint32_t version = 0;
  std::uint32_t alignment = kDefaultAlignment;
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::map<std::string, std::size_t, std::less<>> metadata_index;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, std::size_t, std::less<>> tensor_index;
  std::span<const std::byte> data;  // the data section

  void load(std::span<const std::byte> file) {
    Reader r(file, source);
    if (r.scalar<std::uint32_t>("magic") != kMagic) r.fail("magic", "not a GGUF file (it must start with \"GGUF\")");
    version = r.scalar<std::uint32_t>("version");
    if (version != 2 && version != 3)
      r.fail("version", "version " + std::to_string(version) + " is not supported (fedge reads GGUF 2 and 3)");
    const auto tensor_count = r.scalar<std::uint64_t>("tensor count");
    const auto metadata_count = r.scalar<std::uint64_t>("metadata count");
    if (tensor_count > kGgufMaxTensors) r.fail("tensor count", std::to_string(tensor_count) + " tensors, limit " + std::to_string(kGgufMaxTensors));
    if (metadata_count > kGgufMaxMetadata)
      r.fail("metadata count", std::to_string(metadata_count) + " entries, limit " + std::to_string(kGgufMaxMetadata));
    for (std::uint64_t i = 0; i < metadata_count; ++i) read_metadata(r, i);
    for (std::uint64_t i = 0; i < tensor_count; ++i) read_tensor_info(r, i);
    // The data section starts at the next multiple of the alignment.
    const std::uint64_t start = (r.pos() + alignment - 1) / alignment * alignment;
    if (start > file.size() && tensor_count > 0) r.fail("data section", "the file ends before the tensor data");
    data = start <= file.size() ? file.subspan(start) : std::span<const std::byte>{};
    check_tensor_ranges(r);
  }

  void read_metadata(Reader& r, std::uint64_t i) {
    const std::string entry = "metadata entry " + std::to_string(i);
    std::string key = r.string(entry + " key");
    if (key.empty()) r.fail(entry + " key", "an empty key");
    const std::string field = "metadata '" + key + "'";
    if (metadata_index.count(key)) r.fail(field, "the key appears twice");
    GgufValue value = r.value(r.type(field + " type"), field, 0);
    if (key == "general.alignment") {
      const auto* a = std::get_if<std::uint32_t>(&value);
      if (!a) r.fail(field, "must be a u32");
      if (*a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20))
        r.fail(field, std::to_string(*a) + " is not a power of two up to 2^20");
      alignment = *a;
    }
    metadata_index.emplace(key, metadata.size());
    metadata.emplace_back(std::move(key), std::move(value));
  }

  void read_tensor_info(Reader& r, std::uint64_t i) {
    GgufTensorInfo t;
    t.name = r.string("tensor " + std::to_string(i) + " name");
    const std::string field = "tensor '" + t.name + "'";
    if (t.name.empty()) r.fail(field, "an empty name");
    if (tensor_index.count(t.name)) r.fail(field, "the name appears twice");
    const auto n_dims = r.scalar<std::uint32_t>(field + " dimension count");
    if (n_dims > kGgufMaxDims) r.fail(field, std::to_string(n_dims) + " dimensions, at most " + std::to_string(kGgufMaxDims));
    for (std::uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(r.scalar<std::uint64_t>(field + " dimension " + std::to_string(d)));
    const auto type = r.scalar<std::uint32_t>(field + " type");
    if (!known_ggml_type(type))
      r.fail(field + " type", "ggml type " + std::to_string(type) + " is not one fedge reads (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K)");
    t.type = static_cast<GgmlType>(type);
    t.offset = r.scalar<std::uint64_t>(field + " offset");
    if (t.offset % alignment != 0)
      r.fail(field + " offset", std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment));
    t.bytes = tensor_bytes(t.dims, t.type, source + ": " + field);
    tensor_index.emplace(t.name, tensors.size());
    tensors.push_back(std::move(t));
  }

  // Every tensor inside the data section, none overlapping another.
  void check_tensor_ranges(Reader& r) const {
    std::vector<const GgufTensorInfo*> by_offset;
    for (const auto& t : tensors) {
      if (t.offset > data.size() || t.bytes > data.size() - t.offset)
        r.fail("tensor '" + t.name + "'", "its " + std::to_string(t.bytes) + " bytes at offset " + std::to_string(t.offset) +
                                              " run past the end of the file (data section of " + std::to_string(data.size()) + " bytes)");
      by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i)
      if (by_offset[i - 1]->offset + by_offset[i - 1]->bytes > by_offset[i]->offset)
        r.fail("tensor '" + by_offset[i]->name + "'", "its data overlaps tensor '" + by_offset[i - 1]->name + "'");
  }
};

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

GgufFile GgufFile::open(const std::filesystem::path& path) {
  auto impl = std::make_unique<Impl>();
  impl->source = path.string();
  impl->mapped = MappedFile::open(path, "GGUF file");
  impl->load(impl->mapped.bytes());
  return GgufFile(std::move(impl));
}

GgufFile GgufFile::from_bytes(std::vector<std::byte> bytes, std::string source_name) {
  auto impl = std::make_unique<Impl>();
  impl->source = std::move(source_name);
  impl->owned = std::move(bytes);
  impl->load(impl->owned);
  return GgufFile(std::move(impl));
}

const std::string& GgufFile::source_name() const { return impl_->source; }
std::uint32_t GgufFile::version() const { return impl_->version; }
std::uint32_t GgufFile::alignment() const { return impl_->alignment; }
const std::vector<std::pair<std::string, GgufValue>>& GgufFile::metadata() const { return impl_->metadata; }
const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufValue* GgufFile::find_metadata(std::string_view key) const {
  auto it = impl_->metadata_index.find(key);
  return it == impl_->metadata_index.end() ? nullptr : &impl_->metadata[it->second].second;
}

namespace {
const GgufValue& require(const GgufFile& f, std::string_view key) {
  if (const GgufValue* v = f.find_metadata(key)) return *v;
  throw Error(ErrorKind::kNotFound, f.source_name() + ": no metadata key '" + std::string(key) + "'");
}
}  // namespace

std::string GgufFile::metadata_string(std::string_view key) const {
  if (const auto* s = std::get_if<std::string>(&require(*this, key))) return *s;
  throw Error(ErrorKind::kInvalidInput, impl_->source + ": metadata '" + std::string(key) + "' is not a string");
}

std::uint64_t GgufFile::metadata_uint(std::string_view key) const {
  return std::visit(
      [&](const auto& v) -> std::uint64_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_signed_v<T>) {
            if (v < 0) throw Error(ErrorKind::kInvalidInput, impl_->source + ": metadata '" + std::string(key) + "' is negative");
          }
          return static_cast<std::uint64_t>(v);
        } else {
          throw Error(ErrorKind::kInvalidInput, impl_->source + ": metadata '" + std::string(key) + "' is not an integer");
        }
      },
      require(*this, key));
}

const GgufTensorInfo* GgufFile::find(std::string_view name) const {
  auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const GgufTensorInfo& GgufFile::at(std::string_view name) const {
  if (const auto* t = find(name)) return *t;
  throw Error(ErrorKind::kNotFound, impl_->source + ": no tensor named '" + std::string(name) + "' (the file has " +
                                        std::to_string(impl_->tensors.size()) + " tensors)");
}

std::span<const std::byte> GgufFile::bytes(const GgufTensorInfo& t) const { return impl_->data.subspan(t.offset, t.bytes); }

// ---------------------------------------------------------------- writing

namespace {

class Writer {
 public:
  template <class T>
  void scalar(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out_.insert(out_.end(), p, p + sizeof(T));
  }
  void string(const std::string& s) {
    scalar<std::uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out_.insert(out_.end(), p, p + s.size());
  }
  void value(const GgufValue& v) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::string>) {
            string(x);
          } else if constexpr (std::is_same_v<T, bool>) {
            scalar<std::uint8_t>(x ? 1 : 0);
          } else if constexpr (std::is_same_v<T, std::shared_ptr<const GgufArray>>) {
            scalar<std::uint32_t>(static_cast<std::uint32_t>(x->element_type));
            scalar<std::uint64_t>(x->values.size());
            for (const auto& e : x->values) {
              if (gguf_type_of(e) != x->element_type)
                throw Error(ErrorKind::kInvalidInput, "GGUF array: an element's type differs from the array's");
              value(e);
            }
          } else {
            scalar<T>(x);
          }
        },
        v);
  }
  void pad_to(std::uint64_t alignment) {
    while (out_.size() % alignment) out_.push_back(std::byte{0});
  }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  std::vector<std::byte> out_;
};

struct Layout {
  std::vector<std::byte> header;           // through the padding before the data section
  std::vector<std::uint64_t> offsets;      // per tensor, into the data section
  std::uint32_t alignment = kDefaultAlignment;
};

Layout plan(const std::vector<std::pair<std::string, GgufValue>>& metadata, const std::vector<GgufTensorView>& tensors) {
  Layout l;
  std::set<std::string> keys, names;
  for (const auto& [key, value] : metadata) {
    if (!keys.insert(key).second) throw Error(ErrorKind::kInvalidInput, "GGUF metadata key '" + key + "' appears twice");
    if (key == "general.alignment") {
      const auto* a = std::get_if<std::uint32_t>(&value);
      if (!a || *a == 0 || (*a & (*a - 1)) != 0)
        throw Error(ErrorKind::kInvalidInput, "GGUF general.alignment must be a u32 power of two");
      l.alignment = *a;
    }
  }
  Writer w;
  w.scalar<std::uint32_t>(kMagic);
  w.scalar<std::uint32_t>(3);
  w.scalar<std::uint64_t>(tensors.size());
  w.scalar<std::uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    w.string(key);
    w.scalar<std::uint32_t>(static_cast<std::uint32_t>(gguf_type_of(value)));
    w.value(value);
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string where = "GGUF tensor '" + t.name + "'";
    if (!names.insert(t.name).second) throw Error(ErrorKind::kInvalidInput, where + " appears twice");
    if (t.dims.size() > kGgufMaxDims) throw Error(ErrorKind::kInvalidInput, where + " has more than 4 dimensions");
    const std::uint64_t bytes = tensor_bytes(t.dims, t.type, where);
    if (bytes != t.data.size())
      throw Error(ErrorKind::kInvalidInput, where + ": " + std::to_string(t.data.size()) + " bytes given, its dims and type need " +
                                                std::to_string(bytes));
    w.string(t.name);
    w.scalar<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size()));
    for (auto d : t.dims) w.scalar<std::uint64_t>(d);
    w.scalar<std::uint32_t>(static_cast<std::uint32_t>(t.type));
    w.scalar<std::uint64_t>(offset);
    l.offsets.push_back(offset);
    offset = (offset + bytes + l.alignment - 1) / l.alignment * l.alignment;
  }
  w.pad_to(l.alignment);
  l.header = std::move(w.bytes());
  return l;
}

}  // namespace

std::vector<std::byte> gguf_bytes(const std::vector<std::pair<std::string, GgufValue>>& metadata,
                                  const std::vector<GgufTensorView>& tensors) {
  Layout l = plan(metadata, tensors);
  std::vector<std::byte> out = std::move(l.header);
  const std::size_t base = out.size();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    out.resize(base + l.offsets[i], std::byte{0});
    out.insert(out.end(), tensors[i].data.begin(), tensors[i].data.end());
  }
  return out;
}

void write_gguf(const std::filesystem::path& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                const std::vector<GgufTensorView>& tensors) {
  const Layout l = plan(metadata, tensors);  // validate before touching the disk
  static const std::vector<std::byte> zeros(1u << 20, std::byte{0});
  std::vector<std::span<const std::byte>> pieces{l.header};
  std::uint64_t at = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    pieces.push_back(std::span(zeros).first(l.offsets[i] - at));  // padding < alignment <= 2^20
    pieces.push_back(tensors[i].data);
    at = l.offsets[i] + tensors[i].data.size();
  }
  write_file_atomically(path, pieces);
}

}  // namespace fedge
