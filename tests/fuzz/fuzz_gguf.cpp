// libFuzzer target for the GGUF reader. Built and run by scripts/fuzz.sh
// (docs/FUZZING.md).
// Every input must either parse (and then every tensor's bytes must be
// readable, and the file must write and read back to the same tensors) or
// throw fedge::Error; anything else (crash, other exception, sanitizer report)
// is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(data[i]);
  try {
    const auto file = fedge::GgufFile::from_bytes(std::move(bytes), "fuzz");
    std::vector<fedge::GgufTensorView> views;
    for (const auto& t : file.tensors()) views.push_back({t.name, t.dims, t.type, file.bytes(t)});
    std::vector<std::pair<std::string, fedge::GgufValue>> metadata = file.metadata();
    const auto again = fedge::GgufFile::from_bytes(fedge::gguf_bytes(metadata, views), "fuzz again");
    if (again.tensors().size() != file.tensors().size()) std::abort();
    for (const auto& t : file.tensors()) {
      const auto a = file.bytes(t), b = again.bytes(again.at(t.name));
      if (a.size() != b.size() || !std::equal(a.begin(), a.end(), b.begin())) std::abort();
    }
  } catch (const fedge::Error&) {
    // refused with a clear error: fine
  }
  return 0;
}
