// libFuzzer target for the safetensors reader. Built and run by scripts/fuzz.sh
// (docs/FUZZING.md).
// Every input must either parse (and then every tensor must be readable and
// convertible) or throw fedge::Error; anything else (crash, other exception,
// sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fedge/common/error.h"
#include "fedge/common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(data[i]);
  try {
    const auto file = fedge::SafetensorsFile::from_bytes(std::move(bytes), "fuzz");
    std::size_t total = 0;
    for (const auto& t : file.tensors()) {
      const auto raw = file.bytes(t);
      total += raw.size();
      if (fedge::is_floating(t.dtype) && t.numel() < (1 << 20)) (void)file.to_f32(t);
    }
    (void)total;
    // What parsed must serialise and parse again to the same tensors.
    std::vector<fedge::TensorView> views;
    for (const auto& t : file.tensors()) views.push_back({t.name, t.dtype, t.shape, file.bytes(t)});
    const auto again = fedge::SafetensorsFile::from_bytes(fedge::serialize_safetensors(views, file.metadata()), "again");
    if (again.tensors().size() != file.tensors().size() || again.metadata() != file.metadata()) __builtin_trap();
  } catch (const fedge::Error&) {
    // Rejected with a typed error: fine.
  }
  return 0;
}
